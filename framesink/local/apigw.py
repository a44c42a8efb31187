"""An API Gateway WebSocket stage on 127.0.0.1 that feeds the real Lambda handlers
(lambdas/framesink_handlers), for `framesink local --ingress apigw`.

What is emulated, and how (docs/ingest.md, "API Gateway limits, and choosing an ingress"):
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
import http
import json
import logging
import secrets
import string
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from framesink.local.functions import LambdaContext, apigw_id
from framesink_core.shared.observability import flush_metrics

# No "framesink" in the name: Powertools filters any such logger out of the root handlers.
log = logging.getLogger("local_stack")

# API Gateway WebSocket quotas (hard limits).
APIGW_MAX_FRAME_BYTES = 32 * 1024
APIGW_MAX_MESSAGE_BYTES = 128 * 1024
APIGW_IDLE_TIMEOUT = 10 * 60.0
APIGW_MAX_AGE = 2 * 60 * 60.0
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003

DEFAULT_STAGE = "live"


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


def _real_handlers() -> dict:
    from framesink_handlers import connect, disconnect, ingest

    return {"$connect": connect.handler, "$default": ingest.handler, "$disconnect": disconnect.handler}


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
            "extendedRequestId": apigw_id(),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now_ms / 1000)),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": conn.connected_at_ms,
            "requestTimeEpoch": now_ms,
            "identity": {"sourceIp": conn.source_ip, **({"userAgent": conn.user_agent} if conn.user_agent else {})},
            "requestId": apigw_id(),
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
            connection_id=apigw_id(),
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
        context = {**self._context(conn, "$default", "MESSAGE"), "messageId": apigw_id()}
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
