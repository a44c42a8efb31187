"""A fake Recall REST API over real HTTP on 127.0.0.1 (port 0), for the create-bot tests.

Without a script it behaves like Recall for what framesink uses: ``POST /api/v1/bot/``
checks ``Authorization: Token <key>``, replays the first response for a repeated
``Idempotency-Key``, and answers 201 with a bot object; ``GET /api/v1/bot/<id>/`` returns
it or 404. ``queue()`` scripts the next responses (status, body, headers, a delay), and
every request is recorded (method, path, headers, parsed body).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

API_KEY = "recall-test-key-not-a-real-one"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: object


@dataclass
class Scripted:
    status: int
    body: object = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


class FakeRecall:
    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.bots: dict[str, dict] = {}
        self._script: deque[Scripted] = deque()
        self._idempotent: dict[str, tuple[int, dict]] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()  # wakes delayed responses when the server stops
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                fake._handle(self)

            def do_POST(self):
                fake._handle(self)

            def log_message(self, *args):  # quiet: pytest output stays readable
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), name="fake-recall",
                                        daemon=True)  # short poll: a quick shutdown

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeRecall":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def queue(self, status: int, body: object = None, headers: dict | None = None, delay: float = 0.0) -> None:
        """Answer the next request with this instead of the default behaviour."""
        self._script.append(Scripted(status, body, headers or {}, delay))

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    # --- the server side ------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(Recorded(h.command, h.path, dict(h.headers.items()), body))
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            if scripted.delay:
                self._release.wait(scripted.delay)
            return self._send(h, scripted.status, scripted.body, scripted.headers)
        status, payload = self._default(h.command, h.path, dict(h.headers.items()), body)
        self._send(h, status, payload)

    def _default(self, method: str, path: str, headers: dict, body: object) -> tuple[int, dict]:
        if headers.get("Authorization") != f"Token {self.api_key}":
            return 401, {"detail": "Invalid token."}
        if method == "POST" and path == "/api/v1/bot/":
            key = headers.get("Idempotency-Key")
            with self._lock:
                if key and key in self._idempotent:
                    return self._idempotent[key]
                bot = {
                    "id": str(uuid.uuid4()),
                    "meeting_url": body.get("meeting_url"),
                    "bot_name": body.get("bot_name", "Meeting Notetaker"),
                    "join_at": body.get("join_at"),
                    "metadata": body.get("metadata", {}),
                    "recording_config": body.get("recording_config"),
                    "status_changes": [],
                    "created_at": datetime.now(timezone.utc).isoformat(),
                }
                self.bots[bot["id"]] = bot
                if key:
                    self._idempotent[key] = (201, bot)
            return 201, bot
        if method == "GET" and path.startswith("/api/v1/bot/"):
            bot = self.bots.get(path.removeprefix("/api/v1/bot/").rstrip("/"))
            return (200, bot) if bot else (404, {"detail": "Not found."})
        return 404, {"detail": "Not found."}

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: object, headers: dict | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass


@pytest.fixture
def fake_recall():
    server = FakeRecall().start()
    try:
        yield server
    finally:
        server.stop()


# --- the create-bot handler's inputs, shared by its unit and CLI tests -----------------------

WS_URL = "wss://abc123.execute-api.us-east-1.amazonaws.com/live"
MEETING = "https://zoom.us/j/1234567890?pwd=secret"
CALLER = "arn:aws:iam::123456789012:user/alice"


@pytest.fixture
def bot_stack(stack, aws, monkeypatch, fake_recall):
    """The provisioned stack plus what create-bot needs: the Recall key secret and URLs."""
    arn = aws["secretsmanager"].create_secret(Name="framesink/recall-api-key", SecretString=API_KEY)["ARN"]
    monkeypatch.setenv("FRAMESINK_RECALL_API_KEY_SECRET_ID", arn)
    monkeypatch.setenv("FRAMESINK_RECALL_BASE_URL", fake_recall.url)
    monkeypatch.setenv("FRAMESINK_WS_URL", WS_URL)
    monkeypatch.setenv("FRAMESINK_RECALL_DEADLINE_SECONDS", "5")
    from framesink_handlers import _runtime

    _runtime.service.cache_clear()
    return stack


def http_event(method: str, path: str, body=None, *, raw_body: str | None = None) -> dict:
    """An API Gateway HTTP API (payload v2.0) event, IAM-authorized, as API Gateway sends it."""
    route = "/bots/{id}" if path.count("/") == 2 else path
    now = time.time()
    event = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "api1.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api1",
            "authorizer": {"iam": {"accessKey": "AKIAEXAMPLE", "accountId": "123456789012",
                                   "callerId": "AIDAEXAMPLE", "principalOrgId": None,
                                   "userArn": CALLER, "userId": "AIDAEXAMPLE"}},
            "domainName": "api1.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "api1",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.9", "userAgent": "framesink-cli"},
            "requestId": uuid.uuid4().hex,
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if route == "/bots/{id}":
        event["pathParameters"] = {"id": path.rsplit("/", 1)[1]}
    if raw_body is not None or body is not None:
        event["body"] = raw_body if raw_body is not None else json.dumps(body)
    return event
