"""`framesink local`: an in-process moto server plus an API Gateway WebSocket emulator that
feeds the real Lambda handlers (lambdas/framesink_handlers) on one machine.

What is emulated, and how (DESIGN.md "API Gateway WebSocket limits"):
- routes: ``$connect`` runs before the upgrade completes and a non-2xx result refuses the
  handshake with that HTTP status; every text message is one ``$default`` invocation;
  ``$disconnect`` runs once the connection is gone, with its close code and reason.
- event shapes: the fields API Gateway's Lambda proxy integration sends (see ``_context``).
- limits: 32 KB per websocket frame and 128 KB per message, both closing with 1009. This is
  websockets' own ``max_size=(message, fragment)`` check, which runs per frame while parsing,
  so no frame-level code is hand-written here. Binary messages close with 1003. Idle timeout
  and maximum connection age close with 1001 ("Going away"), as API Gateway does.
- no permessage-deflate (API Gateway does not negotiate it) and no server pings.

Differences, on purpose: a connection's messages are handled one at a time, in order (API
Gateway may run them concurrently); handlers share one process, so Powertools' logger keys
can mix between concurrent connections (logs only; storage is unaffected).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import json
import logging
import os
import secrets
import string
import threading
import time
import urllib.request
import uuid
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import boto3
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from framesink_core.access.auth import mint_token
from framesink_core.shared.observability import flush_metrics
from framesink_core.shared.settings import DEFAULT_MAX_FRAME_BYTES, Settings

from .local_aws import provision
from .target import DEFAULT_STATE_FILE

# No "framesink" in the name: Powertools filters any such logger out of the root handlers.
log = logging.getLogger("local_stack")

# API Gateway WebSocket quotas (hard limits).
APIGW_MAX_FRAME_BYTES = 32 * 1024
APIGW_MAX_MESSAGE_BYTES = 128 * 1024
APIGW_IDLE_TIMEOUT = 10 * 60.0
APIGW_MAX_AGE = 2 * 60 * 60.0
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003

DEFAULT_PORT = 3456
DEFAULT_STAGE = "live"
DEFAULT_REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@dataclass
class LocalConfig:
    port: int = DEFAULT_PORT  # 0 = any free port
    ingress: str = "apigw"  # "apigw": this emulator; "direct": the container receiver (framesink_receiver)
    token: str | None = None  # None = mint a random one
    stage: str = DEFAULT_STAGE
    region: str = DEFAULT_REGION
    bucket: str = "framesink-local"
    table: str = "framesink-local"
    # Secrets live in the process-wide moto backend: in-process stacks (tests) need unique names.
    token_secret_name: str = "framesink/connection-token"
    verification_secret: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = APIGW_IDLE_TIMEOUT
    max_age: float = APIGW_MAX_AGE
    state_file: Path | None = DEFAULT_STATE_FILE
    handler_log_level: str = "WARNING"
    # moto's state is process-wide: an in-process stack (demo, tests) wipes it when it stops so
    # the next one starts clean. `framesink local` keeps it: its process exit ends it anyway.
    reset_on_stop: bool = False
    workers: int = 8  # concurrent handler invocations (Lambda concurrency, in threads)
    # Recall's webhook signing secret for the local webhook route (None = generate one; it is
    # written to the state file, so `framesink simulate` can sign status events with it).
    webhook_secret: str | None = None
    webhook_port: int = 0  # the webhook route's port (0 = any free port)
    moto_port: int = 0  # moto's port, the AWS endpoint (0 = any free port)
    export_quiet_seconds: int = 600  # bot.call_ended -> export, when no bot.done comes
    # The frame queue `framesink watch` reads (the deploy's -c frameQueue=true); off as there:
    # without a reader, moto's queue slows every store as it fills (framesink/local_aws.py).
    frame_queue: bool = False

    @classmethod
    def isolated(cls, name: str, **changes) -> "LocalConfig":
        """An in-process stack (tests, benchmarks) beside others in one process: any free port,
        bucket, table and secrets of its own (moto's state is process-wide), no state file, and
        moto wiped when it stops."""
        unique = f"{name}-{uuid.uuid4().hex[:8]}"
        return cls(**{"port": 0, "state_file": None, "bucket": unique, "table": unique,
                      "token_secret_name": unique.replace("-", "/", 1), "reset_on_stop": True, **changes})


@dataclass
class Stats:
    """What the emulator saw. ``outcomes`` counts $default results by the ingest status."""

    accepted: int = 0
    refused: Counter = field(default_factory=Counter)  # HTTP status -> handshakes
    received: int = 0  # messages handed to $default
    outcomes: Counter = field(default_factory=Counter)  # stored/duplicate/rejected/ignored/failed
    handler_errors: int = 0
    closes: Counter = field(default_factory=Counter)  # close code -> connections

    def as_dict(self) -> dict:
        return {
            "connections": {"accepted": self.accepted, "refused": _keyed(self.refused)},
            "received": self.received,
            "outcomes": dict(self.outcomes),
            "handler_errors": self.handler_errors,
            "closes": _keyed(self.closes),
        }


def _keyed(counter: Counter) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counter.items())}


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512
    log_group_name: str = ""
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{DEFAULT_REGION}:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000  # API Gateway's integration timeout


def _apigw_id() -> str:
    """An id shaped like API Gateway's connection/request ids, e.g. ``L0SM9cOFvHcCIhw=``."""
    return base64.b64encode(os.urandom(11)).decode()


@dataclass
class _Connection:
    connection_id: str
    connected_at_ms: int
    source_ip: str
    user_agent: str | None
    domain_name: str
    opened: float  # loop time
    last_activity: float
    busy: bool = False
    messages: int = 0


class ApiGatewayEmulator:
    """A websockets server on 127.0.0.1 that behaves like an API Gateway WebSocket stage."""

    def __init__(self, *, port: int = 0, stage: str = DEFAULT_STAGE, idle_timeout: float = APIGW_IDLE_TIMEOUT,
                 max_age: float = APIGW_MAX_AGE, workers: int = 8, handlers=None):
        self.port = port
        self.stage = stage
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.api_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        self.stats = Stats()
        self._handlers = handlers or _real_handlers()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lambda")
        self._connections: dict[ServerConnection, _Connection] = {}
        self._server = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/{self.stage}"

    async def start(self) -> None:
        self._server = await serve(
            self._serve_connection,
            "127.0.0.1",
            self.port,
            process_response=self._on_handshake,
            max_size=(APIGW_MAX_MESSAGE_BYTES, APIGW_MAX_FRAME_BYTES),
            compression=None,
            ping_interval=None,
            logger=logging.getLogger("local_stack.websockets"),
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, close open connections (1001), finish every in-flight handler call."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    async def wait_idle(self) -> None:
        """Return once no connection is open and no handler call is running."""
        await self._idle.wait()

    # --- invocation ------------------------------------------------------------------------

    async def _invoke(self, route: str, event: dict):
        fn = self._handlers[route]
        context = LambdaContext(function_name=f"framesink-{route.lstrip('$')}")

        def call():
            try:
                return fn(event, context)
            finally:
                # With metrics disabled Powertools keeps the batch, then prints it anyway once
                # a metric holds 100 values; the core's flush drops it (or writes it if enabled).
                flush_metrics()

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _context(self, conn: _Connection, route: str, event_type: str) -> dict:
        now_ms = int(time.time() * 1000)
        return {
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": _apigw_id(),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now_ms / 1000)),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": conn.connected_at_ms,
            "requestTimeEpoch": now_ms,
            "identity": {"sourceIp": conn.source_ip, **({"userAgent": conn.user_agent} if conn.user_agent else {})},
            "requestId": _apigw_id(),
            "domainName": conn.domain_name,
            "connectionId": conn.connection_id,
            "apiId": self.api_id,
        }

    # --- $connect ----------------------------------------------------------------------------

    async def _on_handshake(self, ws: ServerConnection, request: Request, response: Response) -> Response | None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            return None  # not a valid upgrade: websockets already answered it, as API Gateway would
        url = urlsplit(request.path)
        if url.path.rstrip("/") != "/" + self.stage:
            return self._refuse(ws, http.HTTPStatus.FORBIDDEN, '{"message":"Forbidden"}')
        host, _, _ = (request.headers.get("Host") or "127.0.0.1").partition(":")
        source_ip = ws.remote_address[0] if ws.remote_address else "127.0.0.1"
        now = asyncio.get_running_loop().time()
        conn = _Connection(
            connection_id=_apigw_id(),
            connected_at_ms=int(time.time() * 1000),
            source_ip=source_ip,
            user_agent=request.headers.get("User-Agent"),
            domain_name=host,
            opened=now,
            last_activity=now,
        )
        event = {
            "requestContext": self._context(conn, "$connect", "CONNECT"),
            "isBase64Encoded": False,
            **_connect_headers(request.headers, source_ip),
            **_query(url.query),
        }
        try:
            result = await self._invoke("$connect", event)
        except Exception:
            log.exception("$connect handler failed")
            self.stats.handler_errors += 1
            return self._refuse(ws, http.HTTPStatus.INTERNAL_SERVER_ERROR, '{"message": "Internal server error"}')
        status = int(result.get("statusCode", 200)) if isinstance(result, dict) else 200
        if not self._server.is_serving():
            status = http.HTTPStatus.SERVICE_UNAVAILABLE  # stopping: no handler would see this connection
        if not 200 <= status < 300:
            body = result.get("body") if isinstance(result, dict) else None
            return self._refuse(ws, status, str(body or "Forbidden"))
        self.stats.accepted += 1
        log.info("connected %s from %s", conn.connection_id, source_ip)
        self._connections[ws] = conn
        self._idle.clear()
        return None

    def _refuse(self, ws: ServerConnection, status: int, body: str) -> Response:
        self.stats.refused[int(status)] += 1
        log.info("refused a handshake: HTTP %d %s", status, body)
        return ws.respond(status, body + "\n")

    # --- $default and $disconnect --------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        conn = self._connections[ws]
        watchdog = asyncio.create_task(self._watchdog(ws, conn))
        try:
            while True:
                try:
                    message = await ws.recv()  # messages already received are returned after a close
                except ConnectionClosed:
                    break
                conn.last_activity = asyncio.get_running_loop().time()
                if isinstance(message, bytes):
                    # API Gateway drops the connection here: nothing after it is delivered.
                    await ws.close(UNSUPPORTED_DATA, "Binary frames are not supported")
                    break
                await self._message(ws, conn, message)
        finally:
            watchdog.cancel()
            await ws.wait_closed()
            code, reason = _close_of(ws)
            self.stats.closes[code] += 1
            log.info("disconnected %s: close %d%s (%d messages)", conn.connection_id, code,
                     f" {reason}" if reason else "", conn.messages)
            event = {
                "requestContext": {**self._context(conn, "$disconnect", "DISCONNECT"),
                                   "disconnectStatusCode": code, "disconnectReason": reason},
                "headers": {"Host": conn.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""},
                "multiValueHeaders": {"Host": [conn.domain_name], "x-api-key": [""], "X-Forwarded-For": [""],
                                      "x-restapi": [""]},
                "isBase64Encoded": False,
            }
            try:
                await self._invoke("$disconnect", event)
            except Exception:
                log.exception("$disconnect handler failed")
                self.stats.handler_errors += 1
            del self._connections[ws]
            if not self._connections:
                self._idle.set()

    async def _message(self, ws: ServerConnection, conn: _Connection, body: str) -> None:
        context = {**self._context(conn, "$default", "MESSAGE"), "messageId": _apigw_id()}
        event = {"requestContext": context, "body": body, "isBase64Encoded": False}
        self.stats.received += 1
        conn.messages += 1
        conn.busy = True
        try:
            result = await self._invoke("$default", event)
            self.stats.outcomes[str(result.get("body")) if isinstance(result, dict) else "unknown"] += 1
        except Exception:
            log.exception("$default handler failed")
            self.stats.handler_errors += 1
            # What API Gateway sends the client when an integration fails.
            payload = {"message": "Internal server error", "connectionId": conn.connection_id,
                       "requestId": context["requestId"]}
            try:
                await ws.send(json.dumps(payload))
            except ConnectionClosed:
                pass
        finally:
            conn.busy = False
            conn.last_activity = asyncio.get_running_loop().time()

    async def _watchdog(self, ws: ServerConnection, conn: _Connection) -> None:
        """Close after ``idle_timeout`` without a message (pings do not count) or at ``max_age``."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            idle_at = conn.last_activity + self.idle_timeout
            age_at = conn.opened + self.max_age
            if now >= age_at or (now >= idle_at and not conn.busy):
                await ws.close(GOING_AWAY, "Going away")
                return
            await asyncio.sleep(max(0.01, min(idle_at, age_at) - now))


def _close_of(ws: ServerConnection) -> tuple[int, str]:
    """The close code and reason of the side that closed first (1006 if nobody did)."""
    p = ws.protocol
    frame = p.close_sent if p.close_sent and not p.close_rcvd_then_sent else (p.close_rcvd or p.close_sent)
    return (frame.code, frame.reason) if frame else (1006, "")


def _connect_headers(headers: Headers, source_ip: str) -> dict:
    """``headers`` (last value wins) and ``multiValueHeaders``, with API Gateway's additions."""
    items = [(k, v) for k, v in headers.raw_items() if k.lower() != "x-forwarded-for"]
    items += [("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"),
              ("X-Forwarded-For", source_ip), ("X-Forwarded-Port", "443"), ("X-Forwarded-Proto", "https")]
    single, multi = _last_and_all(items)
    return {"headers": single, "multiValueHeaders": multi}


def _query(query: str) -> dict:
    """API Gateway omits both query keys when the URL has no query string."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        return {}
    single, multi = _last_and_all(pairs)
    return {"queryStringParameters": single, "multiValueQueryStringParameters": multi}


def _last_and_all(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """API Gateway's two views of repeated keys: the last value of each, and all of them."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        single[k] = v
        multi.setdefault(k, []).append(v)
    return single, multi


class QueueWorker:
    """Feeds a Lambda handler the events an SQS queue holds, one at a time, as an event source
    mapping would: a message is deleted once the handler returns, left for a retry if it
    raised. ``processed`` counts the events handled, ``failed`` the ones that raised."""

    def __init__(self, sqs, queue_url: str, handler, function_name: str, wait_seconds: int = 1,
                 sqs_records: bool = False):
        self.sqs, self.queue_url, self.handler = sqs, queue_url, handler
        self.function_name = function_name
        # True: the handler gets what an SQS event source sends ({"Records": [...]}); False:
        # the message body itself (an EventBridge event, as an EventBridge target gets it).
        self.sqs_records = sqs_records
        self.wait_seconds = wait_seconds
        self.processed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=function_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.wait_seconds + 30)

    def idle(self) -> bool:
        """True when the queue holds nothing, visible or in flight."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return not any(int(v) for v in attributes.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                    WaitTimeSeconds=self.wait_seconds).get("Messages", [])
            except Exception:  # moto stopping under us
                if self._stop.is_set():
                    return
                log.exception("%s: cannot read its queue", self.function_name)
                time.sleep(1)
                continue
            for message in messages:
                event = ({"Records": [{"messageId": message["MessageId"], "body": message["Body"],
                                       "eventSource": "aws:sqs"}]} if self.sqs_records else json.loads(message["Body"]))
                try:
                    self.handler(event, LambdaContext(function_name=self.function_name))
                    self.processed += 1
                except Exception:
                    self.failed += 1
                    log.exception("%s failed on an event; it stays queued for a retry", self.function_name)
                    continue
                finally:
                    flush_metrics()
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


def _handler(module: str):
    """A handler of framesink_handlers, imported when the local stack starts."""
    import importlib

    return importlib.import_module(f"framesink_handlers.{module}").handler


class WebhookServer:
    """``POST /recall/events`` on 127.0.0.1, as the stack's webhook HTTP API: each request is one
    API Gateway HTTP API (payload 2.0) event for the real handler, its answer sent back."""

    def __init__(self, handler, port: int = 0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= 10 << 20:  # API Gateway HTTP APIs take at most 10 MB
                    self.send_error(413 if length > 0 else 400)
                    return
                body = self.rfile.read(length)
                if urlsplit(self.path).path != "/recall/events":
                    self.send_error(404)
                    return
                event = {
                    "version": "2.0", "routeKey": "POST /recall/events", "rawPath": "/recall/events",
                    "rawQueryString": "", "headers": {k.lower(): v for k, v in self.headers.items()},
                    "requestContext": {"http": {"method": "POST", "path": "/recall/events",
                                                "sourceIp": self.client_address[0]}, "requestId": _apigw_id(),
                                       "routeKey": "POST /recall/events", "stage": "$default"},
                    "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
                }
                try:
                    answer = outer.handler(event, LambdaContext(function_name="framesink-recall-webhook"))
                except Exception:
                    log.exception("webhook handler failed")
                    answer = {"statusCode": 500, "body": '{"message": "Internal Server Error"}'}
                finally:
                    flush_metrics()
                data = str(answer.get("body", "")).encode()
                self.send_response(int(answer.get("statusCode", 200)))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # the handler logs what matters
                pass

        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/recall/events"
        self._thread = threading.Thread(target=self.server.serve_forever, name="recall-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _real_handlers() -> dict:
    from framesink_handlers import connect, disconnect, ingest

    return {"$connect": connect.handler, "$default": ingest.handler, "$disconnect": disconnect.handler}


class LocalStack:
    """moto (S3, DynamoDB, Secrets Manager) + the emulator, with the handlers' Lambda env set.

    The Lambda env is process-wide (the handlers read it), so one LocalStack runs per process
    at a time; stop() restores the environment it found.
    """

    def __init__(self, config: LocalConfig | None = None):
        self.config = config or LocalConfig()
        self.token = self.config.token or mint_token()
        self.moto = None
        self.emulator: ApiGatewayEmulator | None = None
        self.receiver = None  # the container receiver, when started (ingress "direct")
        self.analyzer: QueueWorker | None = None  # the example slide analyzer's event loop
        self.exporter: QueueWorker | None = None  # the export job's
        self.webhooks: WebhookServer | None = None  # Recall's webhook route
        self.webhook_secret: str | None = None
        self.endpoint_url = ""
        self.state: dict = {}
        self._lambda_env = contextlib.ExitStack()  # the handlers' environment, undone by stop()
        self.loop: asyncio.AbstractEventLoop | None = None  # set by background_stack()

    async def start(self) -> dict:
        from moto.server import ThreadedMotoServer

        cfg = self.config
        # moto's server logs every request through werkzeug; the handlers' logs say what matters.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Metrics are off locally, so Powertools warns on every invocation that none were added.
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.config.moto_port, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        try:
            secret_env = provision(
                **{name: self.client(name) for name in ("s3", "dynamodb", "secretsmanager", "events", "sqs")},
                bucket=cfg.bucket, table=cfg.table, token=self.token,
                token_secret_name=cfg.token_secret_name,
                verification_secret=cfg.verification_secret,
                verification_secret_name=cfg.token_secret_name + "-verification",
                frame_queue=cfg.frame_queue,
            )
            frame_queue_url = secret_env.pop("frame_queue_url")
            analyzer_queue_url = secret_env.pop("analyzer_queue_url")
            sqs, secrets_client = self.client("sqs"), self.client("secretsmanager")
            export_queue_url = sqs.create_queue(QueueName=f"{cfg.bucket}-exports",
                                                Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
            self.webhook_secret = cfg.webhook_secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
            webhook_secret_arn = secrets_client.create_secret(Name=cfg.token_secret_name + "-webhook",
                                                              SecretString=self.webhook_secret)["ARN"]
            settings = Settings(
                bucket=cfg.bucket, table=cfg.table, max_frame_bytes=cfg.max_frame_bytes,
                token_secret_id=secret_env.get("FRAMESINK_TOKEN_SECRET_ID", ""),
                verification_secret_id=secret_env.get("FRAMESINK_VERIFICATION_SECRET_ID", ""),
                webhook_secret_id=webhook_secret_arn, export_queue_url=export_queue_url,
                export_quiet_seconds=cfg.export_quiet_seconds,
            )
            self._lambda_env.enter_context(lambda_environment(
                {**settings.as_env(), **local_lambda_env(self.endpoint_url, cfg.region)}, cfg.handler_log_level))
            # The example analyzer, fed its EventBridge events through a queue (in AWS the rule
            # invokes the Lambda itself).
            self.analyzer = QueueWorker(self.client("sqs"), analyzer_queue_url, _handler("slides"),
                                        "framesink-slide-analyzer")
            self.analyzer.start()
            # The export job, fed by its queue as Lambda's SQS event source feeds it (batch 1).
            self.exporter = QueueWorker(self.client("sqs"), export_queue_url, _handler("export"),
                                        "framesink-export", sqs_records=True)
            self.exporter.start()
            # Recall's webhook route, POST /recall/events, served by the real handler.
            self.webhooks = WebhookServer(_handler("webhooks"), cfg.webhook_port)
            self.webhooks.start()
            if cfg.ingress == "direct":
                ws_url = await self.start_direct(cfg.port)
            else:
                self.emulator = ApiGatewayEmulator(
                    port=cfg.port, stage=cfg.stage, idle_timeout=cfg.idle_timeout, max_age=cfg.max_age,
                    workers=cfg.workers,
                )
                await self.emulator.start()
                ws_url = f"{self.emulator.url}?token={self.token}"
        except BaseException:
            await self.stop(reset=True)  # nothing was served: undo the provisioning
            raise
        self.state = {
            "ws_url": ws_url,
            "endpoint_url": self.endpoint_url,
            "bucket": cfg.bucket,
            "table": cfg.table,
            "token": self.token,
            "region": cfg.region,
            "frame_queue_url": frame_queue_url,
            "export_queue_url": export_queue_url,
            "webhook_url": self.webhooks.url,
            "webhook_secret": self.webhook_secret,
        }
        if cfg.state_file:
            write_state_file(cfg.state_file, self.state)
        return self.state

    async def start_direct(self, port: int = 0) -> str:
        """Start the container receiver (no API Gateway limits) on the same moto; its ws URL."""
        from framesink_receiver import Receiver, ReceiverConfig, receiver_service

        self.receiver = Receiver(receiver_service(), ReceiverConfig(port=port))  # as in the container
        await self.receiver.start()
        return f"{self.receiver.url}?token={self.token}"

    async def wait_idle(self, analyzer: bool = False, exports: bool = False) -> None:
        """Return once every message received so far (by either ingress) has been handled (a
        frame in the receiver's spool, once stored from it), and the participant totals it added are written (they are otherwise written every
        few seconds: framesink_core/ingest/totals.py); with ``analyzer``, once the slide analyzer
        has handled every event queued for it too; with ``exports``, once the export queue
        is empty (delayed messages included)."""
        if self.emulator is not None:
            await self.emulator.wait_idle()
        # The receiver has no idle event; its counters say when its connections are done.
        while self.receiver is not None and (self.receiver.stats.open or self.receiver.stats.held):
            await asyncio.sleep(0.02)
        # Frames the store refused wait in the receiver's spool until it takes them.
        while self.receiver is not None and self.receiver.spool is not None and self.receiver.spool.active:
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.flush_totals)
        while analyzer and self.analyzer is not None and not await loop.run_in_executor(None, self.analyzer.idle):
            await asyncio.sleep(0.1)
        while exports and self.exporter is not None and not await loop.run_in_executor(None, self.exporter.idle):
            await asyncio.sleep(0.1)

    def flush_totals(self) -> None:
        """Write every participant total held in this process (handlers' and receiver's)."""
        from framesink_handlers import _runtime

        if _runtime.service.cache_info().currsize:
            _runtime.service().store.totals.flush_all()
        if self.receiver is not None:
            self.receiver.service.store.totals.flush_all()

    async def stop(self, reset: bool | None = None) -> dict:
        """Stop in order: connections and handler calls first, then moto. Returns the stats
        of the ingress the stack was started with."""
        stats: dict = {}
        try:
            if self.receiver is not None:
                stats = await self.receiver.stop()
            if self.emulator is not None:
                await self.emulator.stop()
                stats = self.emulator.stats.as_dict()
            for part in (self.webhooks, self.analyzer, self.exporter):
                if part is not None:
                    await asyncio.get_running_loop().run_in_executor(None, part.stop)
            if self.moto is not None:
                # What a Lambda container would write on its next invocations.
                await asyncio.get_running_loop().run_in_executor(None, self.flush_totals)
        finally:
            if self.moto is not None:
                if self.config.reset_on_stop if reset is None else reset:
                    self._reset_moto()
                self.moto.stop()
                self.moto = None
            self._lambda_env.close()
        return stats

    async def __aenter__(self) -> "LocalStack":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _reset_moto(self) -> None:
        """moto server's documented reset endpoint: every backend in this process, emptied."""
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError as exc:
            log.warning("could not reset moto: %s", exc)

    def client(self, service: str):
        """A boto3 client for the local moto server (the handlers build their own from the env)."""
        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=self.config.region,
            **{name.lower(): value for name, value in FAKE_CREDENTIALS.items()},
        )

    def index(self):
        """The index's queries (framesink_core.read.query.FrameIndex) on the local table."""
        from framesink_core.read.query import FrameIndex

        return FrameIndex(self.config.table, self.client("dynamodb"))

    @property
    def receiver_url(self) -> str | None:
        """The container receiver's ws URL (with the token), once start_direct() ran."""
        return f"{self.receiver.url}?token={self.token}" if self.receiver is not None else None

    def run(self, coro, timeout: float = 180):
        """Run ``coro`` on the stack's background loop (background_stack) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def background_stack(config: LocalConfig, timeout: float = 180):
    """A started LocalStack served by an event loop on its own thread, for synchronous code
    (tests, benchmarks): ``stack.run(coro)`` runs a coroutine there. Stopped on exit, and
    what ``stop()`` reported is left in ``stack.final_stats``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-stack", daemon=True)
    thread.start()
    stack = LocalStack(config)
    stack.loop = loop
    try:
        stack.run(stack.start(), timeout)  # a failed start stops itself
        try:
            yield stack
        finally:
            stack.final_stats = stack.run(stack.stop(), timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()


def local_lambda_env(endpoint_url: str, region: str) -> dict[str, str]:
    """The AWS part of a Lambda function's environment, pointed at the local moto server."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


@contextlib.contextmanager
def lambda_environment(env: dict[str, str], log_level: str, log_stream=None):
    """The real handlers, called in this process, see ``env`` as a function's environment and
    log at ``log_level`` (to ``log_stream`` if given); all restored on exit. The environment
    is process-wide, so the handlers' cached Service is rebuilt on both sides."""
    from framesink_core.shared.observability import logger
    from framesink_handlers import _runtime

    saved_env = {k: os.environ.get(k) for k in env}
    handler = logger.registered_handler
    saved_level, saved_stream = logger.log_level, getattr(handler, "stream", None)
    os.environ.update(env)
    logger.setLevel(log_level)
    if log_stream is not None and saved_stream is not None:
        handler.setStream(log_stream)
    _runtime.service.cache_clear()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        logger.setLevel(saved_level)
        if log_stream is not None and saved_stream is not None:
            handler.setStream(saved_stream)
        _runtime.service.cache_clear()


def write_state_file(path: Path, state: dict) -> None:
    """Atomically, readable by the owner only: it holds the connection token.

    The temporary file has a random name and is created exclusively without following a
    symlink (O_EXCL | O_NOFOLLOW, mode 600), so a link planted at a predictable name cannot
    redirect the token; the rename then replaces whatever the final name was, a link
    included, never what it points to."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
