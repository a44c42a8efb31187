"""The container receiver: one websocket server (ECS Fargate behind an ALB) over the core.

No message-size limit but the configured maximum frame (API Gateway's 32 KB frame limit is
what it exists to avoid). Per connection it does what the three Lambda handlers do:
- handshake (``process_request``, before the upgrade): ``GET /healthz`` is answered here for
  the load balancer; otherwise ``service.authenticator`` checks the token (and Recall's
  signature if configured) and a refusal is the AuthError's HTTP status (401/403); once the
  upgrade is valid, ``service.connections.opened`` records the connection ($connect);
- each message ($default): ``service.ingestor.accept`` on the event loop, in message order
  (parse and checks; a rejection is final there), then ``ingestor.begin_store`` in a thread
  pool for the S3 write (boto3 blocks); the thread is free once S3 answers, and the frame's
  outcome arrives when its batched index item is durable. A second message for a key still in
  flight on the connection waits for the first, so the first sent is the first written;
- close: ``service.connections.closed`` with the close code ($disconnect).

Spool: a frame whose S3 or index write still fails after the retries goes to a bounded spool on
the task's disk (framesink_core/ingest/spool.py) and is stored from there, in order, once the store
answers; while the spool holds frames, new ones join its back. A full spool closes every
connection with 1013 and refuses handshakes (503) until it has room. SpoolDepth (frames on
disk) is a metric with an alarm.

Stores: the S3 object per frame, index items batched (index_batch.py: up to 25 per
BatchWriteItem, a frame waits at most 50 ms), participant totals written per participant
every few seconds from a timer (totals.py). A frame is reported stored once its object and
its index item are both durable.

Backpressure: at most ``max_in_flight`` messages are in the store at once (all connections
together), and at most ``max_in_flight_per_connection`` of one connection, so one noisy or
hostile bot cannot take every slot from the others. A connection whose message waits for a
slot does not read its next one, so websockets' small receive queue fills, it stops reading
the socket and TCP pushes back on the sender. Memory is bounded by (max_in_flight +
connections) messages plus each connection's ``max_queue`` frames, however slow S3 or
DynamoDB gets.

Keepalive: a ping every ``ping_interval`` (20 s) keeps CloudFront (10 min idle) and the ALB
(120 s idle) from closing a quiet connection. A missing pong closes the connection with 1011
only while the receiver is keeping up: when this side is behind (the connection's messages
wait for store slots, so its socket is not being read), the pong is queued behind unread
frames and the deadline moves, so backpressure never looks like a dead peer.

Shutdown (SIGTERM, as ECS sends it): health turns 503, new handshakes get 503, and every
connection gets a close frame (1001, going away) at once, so Recall reconnects to another
task. Until the peer answers the close (at most ``close_timeout``), what it had already sent
is still read, without waiting for store slots (it is bounded by what was in flight), so a
close handshake never stalls behind the store. Every message read is then stored (or counted
failed), queued index items are written, participant totals flushed, metrics flushed, and one
JSON summary line printed, all within ``shutdown_grace`` seconds (90; ECS's stopTimeout is set
to 120 in infra/container_ingress.py). The last tenth of the grace (at most 10 s) is the
spool's: what is still queued for the store goes to disk, then the spool is drained while the
store answers; ``spool.left`` in the summary is what stayed on disk (stored by the next
receiver on that disk; on Fargate the disk goes with the task). ``unfinished`` counts messages
read and neither stored, spooled nor rejected when the grace ran out.

Deregistration: behind an ALB, ECS deregisters a task (the target group stops health-checking
it) and waits the deregistration delay before SIGTERM; the ALB then cuts open connections.
With ``deregistration_watch`` set, a receiver that has been health-checked and then hears no
health check for that many seconds closes its connections with 1001 itself, so Recall moves to
a healthy task before the ALB's cut.

Run it with ``framesink receive`` or ``python -m framesink_receiver`` (the container's CMD,
which imports nothing but this module, the core, websockets, boto3 and Powertools).
"""

from __future__ import annotations

import asyncio
import http
import logging
import uuid
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from framesink_core.access.auth import AuthError
from framesink_core.ingest.events import Frame
from framesink_core.ingest.ingestor import FAILED, SPOOLED, Outcome
from framesink_core.ingest.spool import Spool
from framesink_core.service import Service
from framesink_core.shared.observability import count, count_with_dimension, flush_metrics, logger
from framesink_receiver.config import (
    GOING_AWAY,
    HEALTH_PATH,
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    SPOOL_DRAIN_BATCH,
    SPOOL_RETRY_SECONDS,
    TRY_AGAIN_LATER,
    ReceiverConfig,
    default_spool_dir,
    max_message_bytes,
)
from framesink_receiver.connection import Accepted, BoundedConnection, Conn, client_ip, close_of

# glibc's heap (return_large_buffers_to_the_os): larger buffers are mapped and unmapped when
# freed; the heap's free pages go back to the OS this often.
MMAP_THRESHOLD = 2 * 1024 * 1024
HEAP_TRIM_SECONDS = 1.0


@dataclass
class Stats:
    """What the receiver saw. Every received message has exactly one outcome once idle."""

    accepted: int = 0
    refused: Counter = field(default_factory=Counter)  # HTTP status -> handshakes
    received: int = 0
    received_bytes: int = 0
    outcomes: Counter = field(default_factory=Counter)  # stored/duplicate/rejected/ignored/failed
    closes: Counter = field(default_factory=Counter)  # close code -> connections
    unfinished: int = 0  # messages read and not stored or rejected when the shutdown grace ran out
    open: int = 0
    in_flight: int = 0  # messages in the store pool now
    held: int = 0  # messages read from a socket and not finished (waiting for a slot or in store)
    held_bytes: int = 0
    peak_in_flight: int = 0
    peak_held: int = 0
    peak_held_bytes: int = 0
    peak_open: int = 0
    spool_drained: int = 0  # spooled frames that left the spool: stored, duplicates, or refused for good
    spool_left: int = 0  # frames still in the spool when the receiver stopped

    def as_dict(self) -> dict:
        return {
            "spool": {"drained": self.spool_drained, "left": self.spool_left},
            "connections": {"accepted": self.accepted, "refused": _keyed(self.refused)},
            "received": self.received,
            "received_bytes": self.received_bytes,
            "outcomes": dict(self.outcomes),
            "closes": _keyed(self.closes),
            "unfinished": self.unfinished,
            "peak": {"in_flight": self.peak_in_flight, "held": self.peak_held,
                     "held_bytes": self.peak_held_bytes, "open": self.peak_open},
        }


def _keyed(counter: Counter) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counter.items())}


class Receiver:
    """The websocket server. ``start()``, then ``drain()`` / ``stop()``; ``stats`` counts."""

    def __init__(self, service: Service, config: ReceiverConfig | None = None):
        self.service = service
        self.config = config or ReceiverConfig()
        self.stats = Stats()
        self.max_message_bytes = max_message_bytes(service.settings.max_frame_bytes)
        self.draining = False
        self.stopping = False
        # Frames go to their own pool, sized to the in-flight limit plus what a shutdown reads
        # past it; handshakes, connection records and totals to a small one, so a saturated
        # store never blocks a handshake.
        self._store_pool = ThreadPoolExecutor(self.config.max_in_flight, thread_name_prefix="store")
        self._control_pool = ThreadPoolExecutor(4, thread_name_prefix="control")
        self._slots: asyncio.Semaphore | None = None
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, Accepted] = weakref.WeakKeyDictionary()
        self._conns: dict[ServerConnection, Conn] = {}
        self._server: Server | None = None
        self._health_server: Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self._last_health_check: float | None = None
        self._deregistered = False
        self.port = self.config.port
        self.health_port = self.config.health_port
        self.spool: Spool | None = None
        self._spool_closed = False  # connections were closed because the spool is full
        self._pool_closed = False  # the shutdown's grace ran out: the store pool takes no more
        self._drain_pool: ThreadPoolExecutor | None = None
        # This process's name on its lease: a restarted receiver is a new one, and the old
        # one's records are swept once its lease runs out.
        self.receiver_id = uuid.uuid4().hex

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/"

    async def start(self) -> None:
        # every receiver, also `framesink local`'s (process-wide, idempotent)
        self._trim_heap = return_large_buffers_to_the_os()
        self._slots = asyncio.Semaphore(self.config.max_in_flight)
        if self.config.spool_max_bytes > 0:
            self.spool = Spool(self.config.spool_dir or default_spool_dir(self.service.settings),
                               self.config.spool_max_bytes)
            self.service.ingestor.spool = self.spool
            self._drain_pool = ThreadPoolExecutor(SPOOL_DRAIN_BATCH, thread_name_prefix="spool")
        ws_logger = logging.getLogger("framesink.receiver.websockets")
        # websockets logs every non-101 answer (each ALB health check) at INFO.
        ws_logger.setLevel(logging.WARNING)
        self._server = await serve(
            self._serve_connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=self.max_message_bytes,
            max_queue=self.config.max_queue,
            ping_interval=None,  # our own keepalive (_keepalive): it knows when we are behind
            close_timeout=self.config.close_timeout,
            logger=ws_logger,
            # No permessage-deflate: a 5 KB message may inflate to the 5.6 MB message bound, so
            # 40 connections held 1.67 GB; without it a message costs what crossed the wire
            # (TCP pushes back on the rest). Base64 PNG saves ~25 % compressed, and bytes into
            # AWS are free. A client that offers it is answered without it (RFC 7692 sec. 5);
            # API Gateway does not negotiate it either.
            compression=None,
            create_connection=BoundedConnection,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.health_port is not None:
            # A second listener that only answers /healthz (never upgrades), for a health
            # check kept off the traffic port.
            self._health_server = await serve(
                _never_called, self.config.host, self.config.health_port,
                process_request=lambda ws, request: self._health(ws, request.path), logger=ws_logger,
            )
            self.health_port = self._health_server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._flush_metrics_periodically()),
                       asyncio.create_task(self._flush_totals_periodically())]
        if self._trim_heap is not None:
            self._tasks.append(asyncio.create_task(self._trim_heap_periodically()))
        if self.config.deregistration_watch:
            self._tasks.append(asyncio.create_task(self._watch_deregistration()))
        if self.config.token_recheck:
            self._tasks.append(asyncio.create_task(self._recheck_tokens_periodically()))
        if self.spool is not None:
            self._tasks.append(asyncio.create_task(self._drain_spool_continuously()))
        if self.config.lease_interval:
            self._tasks.append(asyncio.create_task(self._keep_lease()))
        logger.info("receiver listening", extra={"port": self.port, "health_port": self.health_port,
                                                  "max_message_bytes": self.max_message_bytes,
                                                  "max_in_flight": self.config.max_in_flight})

    def drain(self) -> None:
        """Health answers 503 and new handshakes are refused (503); open connections go on."""
        if not self.draining:
            self.draining = True
            logger.info("receiver draining", extra={"open_connections": self.stats.open})

    async def stop(self) -> dict:
        """Drain, close every connection with 1001, store every message already read, write
        queued index items and participant totals, flush metrics, all within
        ``shutdown_grace``. Returns the stats (also what the SIGTERM path prints)."""
        self.drain()
        if self._stopped:
            return self.stats.as_dict()
        self._stopped = True
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace
        # With a spool, the end of the grace is kept for it: what is still queued for the store
        # goes to disk, and what the spool holds gets a last chance to be stored.
        reserve = min(10.0, self.config.shutdown_grace / 10) if self.spool is not None else 0.0
        for server in (self._server, self._health_server):
            if server is not None:
                server.close(close_connections=True, code=GOING_AWAY, reason="server shutting down")
        timed_out = False
        for server in (self._server, self._health_server):
            if server is not None:
                try:
                    # Returns once every connection handler has returned (its stores done).
                    await asyncio.wait_for(server.wait_closed(), max(0.0, deadline - reserve - loop.time()))
                except TimeoutError:
                    timed_out = True
        for task in self._tasks:
            task.cancel()
        if timed_out:
            # Peers still sending after the close frame (a flood) are cut: nothing more is read.
            for conn in list(self._conns.values()):
                if conn.ws.transport is not None:
                    conn.ws.transport.abort()
            # Frames queued and not started: spooled by their cancel callback (or failed without a
            # spool); the ones in a store call finish or fail on their own.
            held = self.stats.held
            self._pool_closed = True
            await loop.run_in_executor(None, lambda: self._store_pool.shutdown(wait=False, cancel_futures=True))
            # The cancelled frames' outcomes settle at once; a store call already running ends
            # stored or spooled (its failure path spools): give those the rest of the reserve.
            await asyncio.sleep(0)
            while self.stats.held and loop.time() < deadline - reserve / 2:
                await asyncio.sleep(0.02)
            self.stats.unfinished = self.stats.held
            logger.error("shutdown grace ran out", extra={"reason": "shutdown_timeout", "held": held,
                                                           "unfinished": self.stats.unfinished,
                                                           "spooled": self.stats.outcomes[SPOOLED]})
        # The spool's last chance while the store is still open (a drained frame needs the index
        # writer), then queued index writes, participant totals and the frame events of all of it.
        if self.spool is not None:
            await self._drain_spool_until(deadline - min(2.0, reserve / 4))  # a moment left to close
        await loop.run_in_executor(None, self.service.store.close)
        await loop.run_in_executor(None, self.service.store.outlet.close)
        if self.config.lease_interval and not timed_out:  # every close is recorded: nothing to sweep
            try:
                await loop.run_in_executor(None, self.service.connections.end_lease, self.receiver_id)
            except Exception:  # it runs out instead; the sweep finds every record closed
                logger.exception("lease not ended", extra={"reason": "lease_failed"})
        for pool in (self._store_pool, self._control_pool, self._drain_pool):
            if pool is not None:
                await loop.run_in_executor(None, lambda: pool.shutdown(wait=not timed_out, cancel_futures=timed_out))
        if timed_out:
            await asyncio.sleep(0)
            self.stats.unfinished = self.stats.held  # what is still in a store call at the exit
        if self.spool is not None:
            # Again, now that the pools are shut: a store call that was still running when the
            # drain above counted may have spooled its frame since (seen: 23 of 2,580 under load).
            self.stats.spool_left = self.spool.depth
        flush_metrics()
        summary = self.stats.as_dict()
        logger.info("receiver stopped", extra={"stats": summary})
        return summary

    # --- handshake -----------------------------------------------------------------------------

    def _health(self, ws: ServerConnection, path: str) -> Response:
        if urlsplit(path).path != HEALTH_PATH:
            return ws.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        self._last_health_check = asyncio.get_running_loop().time()
        if self.draining:
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        return ws.respond(http.HTTPStatus.OK, "ok\n")

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == HEALTH_PATH:
            return self._health(ws, request.path)
        count("ConnectionAttempt")
        source_ip = client_ip(ws, request, self.config.trust_cloudfront)
        if self.draining:
            return self._refuse(ws, http.HTTPStatus.SERVICE_UNAVAILABLE, "draining",
                                "this task is shutting down; reconnect", source_ip)
        if self._spool_closed:
            return self._refuse(ws, http.HTTPStatus.SERVICE_UNAVAILABLE, "storage_unavailable",
                                "S3 or DynamoDB is not answering and the spool is full; reconnect later", source_ip)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = dict(request.headers.raw_items())
        loop = asyncio.get_running_loop()
        try:
            principal = await loop.run_in_executor(
                self._control_pool, self.service.authenticator.authenticate, query, headers
            )
        except AuthError as exc:
            return self._refuse(ws, exc.status, exc.reason, exc.detail, source_ip)
        except Exception as exc:  # Secrets Manager or DynamoDB unreachable: refuse, Recall retries
            logger.exception("handshake check failed", extra={"reason": "auth_unavailable"})
            return self._refuse(ws, http.HTTPStatus.INTERNAL_SERVER_ERROR, "auth_unavailable",
                                type(exc).__name__, source_ip)
        if principal.token_hash and self._connections_of(principal.token_hash) >= self.config.max_connections_per_token:
            return self._refuse(ws, http.HTTPStatus.TOO_MANY_REQUESTS, "too_many_connections",
                                f"this bot token already holds {self.config.max_connections_per_token} connections "
                                "on this task", source_ip)
        self._accepted[ws] = Accepted(uuid.uuid4().hex, principal, source_ip)
        return None

    def _connections_of(self, token_hash: str) -> int:
        """Open connections of a bot token on this task, and handshakes of it being accepted."""
        return (sum(conn.token_hash == token_hash for conn in self._conns.values())
                + sum(a.principal.token_hash == token_hash for a in list(self._accepted.values())))

    async def _process_response(self, ws: ServerConnection, request: Request, response: Response) -> Response | None:
        """Record an authenticated connection once websockets has validated the upgrade (a
        plain GET with a good token gets websockets' 426 and leaves no record)."""
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            self._accepted.pop(ws, None)
            return None
        accepted = self._accepted[ws]
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._control_pool,
                lambda: self.service.connections.opened(
                    accepted.connection_id, bot_id=accepted.principal.bot_id, method=accepted.principal.method,
                    source_ip=accepted.source_ip, connected_at_ms=accepted.at_ms,
                ),
            )
        except Exception as exc:  # DynamoDB unreachable: refuse, as $connect would; Recall retries
            logger.exception("connection not recorded", extra={"reason": "record_failed",
                                                                 "connection_id": accepted.connection_id})
            self._accepted.pop(ws, None)
            return self._refuse(ws, http.HTTPStatus.INTERNAL_SERVER_ERROR, "record_failed",
                                type(exc).__name__, accepted.source_ip)
        return None

    def _refuse(self, ws: ServerConnection, status: int, reason: str, detail: str, source_ip: str | None) -> Response:
        logger.warning("connection refused", extra={"reason": reason, "detail": detail, "status": int(status),
                                                     "source_ip": source_ip})
        count_with_dimension("ConnectionRefused", "reason", reason)
        self.stats.refused[int(status)] += 1
        return ws.respond(status, reason + "\n")

    # --- messages ----------------------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        accepted = self._accepted.pop(ws)
        cid, bot_id = accepted.connection_id, accepted.principal.bot_id
        conn = self._conns[ws] = Conn(ws, cid, accepted.principal.token_hash)
        stats = self.stats
        stats.accepted += 1
        stats.open += 1
        stats.peak_open = max(stats.peak_open, stats.open)
        count("ConnectionAccepted")
        logger.info("connection accepted", extra={"connection_id": cid, "bot_id": bot_id,
                                                  "auth": accepted.principal.method,
                                                  "signed": accepted.principal.signed})
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future] = set()
        mine = asyncio.Semaphore(self.config.max_in_flight_per_connection)
        keepalive = asyncio.create_task(self._keepalive(conn)) if self.config.ping_interval else None
        messages = 0
        try:
            while True:
                try:
                    # After a close, messages already buffered are still returned first.
                    message = await ws.recv()
                except ConnectionClosed:
                    break
                size = len(message)
                messages += 1
                stats.received += 1
                stats.received_bytes += size
                stats.held += 1
                stats.held_bytes += size
                stats.peak_held = max(stats.peak_held, stats.held)
                stats.peak_held_bytes = max(stats.peak_held_bytes, stats.held_bytes)
                # Parsed here, in message order (the S3 write is the store thread's): a
                # rejection or an ignored event is final now and takes no slot.
                logger.thread_safe_append_keys(connection_id=cid)
                try:
                    frame = self.service.ingestor.accept(message)
                except Exception:
                    frame = Outcome(_internal_error(), "internal_error")
                finally:
                    logger.thread_safe_clear_keys()
                if isinstance(frame, Outcome):
                    stats.outcomes[frame.status] += 1
                    stats.held -= 1
                    stats.held_bytes -= size
                    continue
                del message  # the frame holds the PNG; the text can go
                earlier = conn.keys.get(frame.s3_key)
                if earlier is not None:  # the same key in flight (a redelivery, or hostile)
                    await asyncio.wait({earlier})
                slotted = not self.stopping
                if slotted:
                    # Backpressure: no next recv() until the store has room for this message.
                    conn.waiting_for_slot = True
                    await mine.acquire()
                    await self._slots.acquire()
                    conn.waiting_for_slot = False
                    if self.stopping:  # stop() began while we waited: the slot is spare now
                        self._slots.release()
                        mine.release()
                        slotted = False
                # While stopping, what the peer had in flight is read without slots, so the
                # close handshake completes; the pool queues it (bounded by what was in flight).
                stats.in_flight += 1
                conn.in_flight += 1
                stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                # Resolved (from another thread) once the frame's index item is durable; the
                # store thread itself is free once the S3 write returns.
                future = loop.create_future()
                pending.add(future)
                conn.keys[frame.s3_key] = future
                future.add_done_callback(
                    lambda f, size=size, slotted=slotted, key=frame.s3_key:
                    self._done(f, size, pending, conn, mine if slotted else None, key))
                if self._pool_closed:  # read after the grace ran out: straight to the spool
                    self._unstarted(future, frame, cid, bot_id)
                    continue
                work = self._store_pool.submit(self._ingest, frame, cid, bot_id, future)
                # Dropped unstarted by a shutdown whose grace ran out: spooled, or not stored.
                work.add_done_callback(lambda w, f=future, frame=frame:
                                       w.cancelled() and self._unstarted(f, frame, cid, bot_id))
                del frame  # the store thread holds the only reference now
        finally:
            conn.waiting_for_slot = False
            if keepalive is not None:
                keepalive.cancel()
            if pending:
                await asyncio.wait(pending)
            del self._conns[ws]
            if messages and not self._stopped:  # the bot left (often a meeting's end): write its counts now
                loop.run_in_executor(self._control_pool, self._flush_totals, True)  # (stop() flushes them all)
            code, reason = close_of(ws)
            stats.closes[code] += 1
            stats.open -= 1
            self._record_close(accepted, code, reason)
            count("ConnectionClosed")
            count_with_dimension("ConnectionClosed", "code", str(code))  # 1009 and 1011 alarm
            logger.info("connection closed", extra={"connection_id": cid, "close_code": code,
                                                    "close_reason": reason, "messages": messages})

    def _record_close(self, accepted: Accepted, code: int, reason: str) -> None:
        """The connection's whole record (a put) with its close, batched with the index items
        (25 per BatchWriteItem, at most 50 ms later): 2,000 connections closing at once were
        2,000 UpdateItems through the control pool, most still unrecorded 5 s later."""
        principal = accepted.principal
        item = self.service.connections.record(
            accepted.connection_id, bot_id=principal.bot_id, method=principal.method, source_ip=accepted.source_ip,
            connected_at_ms=accepted.at_ms, status_code=code, reason=reason)
        cid = accepted.connection_id

        def recorded(future) -> None:
            if future.exception() is not None:
                logger.error("connection close not recorded", extra={
                    "reason": "record_failed", "connection_id": cid, "detail": str(future.exception())[:200]})

        try:
            self.service.store.index_writer.submit(item).add_done_callback(recorded)
        except Exception as exc:  # the writer is closed (a shutdown past its grace)
            logger.error("connection close not recorded", extra={"reason": "record_failed", "connection_id": cid,
                                                                  "detail": str(exc)[:200]})

    def _ingest(self, frame: Frame, connection_id: str, bot_id: str | None, outcome: asyncio.Future) -> None:
        """One frame, in a store thread: the S3 write here; ``outcome`` gets the status once
        the index item is durable. Never raises."""
        logger.thread_safe_append_keys(connection_id=connection_id)
        try:
            stored = self.service.ingestor.begin_store(frame, connection_id=connection_id, bot_id=bot_id)
        except Exception:
            stored = None
            self._resolve(outcome, _internal_error())
        finally:
            logger.thread_safe_clear_keys()
        if stored is not None:
            stored.add_done_callback(lambda f: self._resolve(outcome, f.result().status if f.exception() is None
                                                             else _internal_error(f.exception())))

    def _unstarted(self, outcome: asyncio.Future, frame: Frame, connection_id: str, bot_id: str | None) -> None:
        """A frame the shutdown's grace left unstarted: to the spool if there is room."""
        stored = self.spool is not None and self.spool.put(frame, bot_id=bot_id, connection_id=connection_id,
                                                           reason="shutdown")
        self._resolve(outcome, SPOOLED if stored else FAILED)

    @staticmethod
    def _resolve(outcome: asyncio.Future, status: str) -> None:
        def settle() -> None:
            if not outcome.done():
                outcome.set_result(status)

        try:
            outcome.get_loop().call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            pass

    def _done(self, future: asyncio.Future, size: int, pending: set, conn: Conn,
              mine: asyncio.Semaphore | None, key: str) -> None:
        pending.discard(future)
        if conn.keys.get(key) is future:
            del conn.keys[key]
        stats = self.stats
        failed = future.cancelled() or future.exception() is not None
        status = FAILED if failed else future.result()
        stats.outcomes[status] += 1
        if status == FAILED and self.spool is not None and self.spool.full and not self._spool_closed:
            self._close_all_for_full_spool()
        stats.in_flight -= 1
        conn.in_flight -= 1
        stats.held -= 1
        stats.held_bytes -= size
        if mine is not None:
            mine.release()
            self._slots.release()

    def _close_all_for_full_spool(self) -> None:
        """The store is down and the spool is full: frames now are lost. Close every connection
        (1013, try again later) and refuse handshakes (503) until the spool has room, so the
        outage shows in Recall's reconnects instead of passing in silence."""
        self._spool_closed = True
        logger.error("spool full: closing connections until the store answers", extra={
            "reason": "spool_full", "open_connections": len(self._conns), "spool_frames": self.spool.depth,
            "spool_bytes": self.spool.bytes, "spool_max_bytes": self.spool.max_bytes})
        count("SpoolFullCloses", len(self._conns))
        for conn in list(self._conns.values()):
            asyncio.create_task(conn.ws.close(TRY_AGAIN_LATER, "storage unavailable; try again later"))

    async def _drain_spool_continuously(self) -> None:
        """Store what the spool holds, oldest first, as soon as the store takes it again."""
        spool = self.spool
        backoff = SPOOL_RETRY_SECONDS[0]
        drained_since_empty = 0
        while True:
            if not spool.active:
                if drained_since_empty:
                    logger.info("spool drained", extra={"frames": drained_since_empty})
                    drained_since_empty = 0
                if self._spool_closed and not spool.full:
                    self._spool_closed = False
                backoff = SPOOL_RETRY_SECONDS[0]
                await asyncio.sleep(0.2)
                continue
            try:
                left, failing = await self._drain_step()
            except Exception:  # never stop the drain: log, back off, look again
                logger.exception("spool drain failed", extra={"reason": "spool_drain_failed"})
                left, failing = 0, 1
            drained_since_empty += left
            if self._spool_closed and not spool.full:
                self._spool_closed = False  # room again: handshakes are accepted
            if failing and not left:  # the store still refuses: probe again later
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, SPOOL_RETRY_SECONDS[1])
            else:
                backoff = SPOOL_RETRY_SECONDS[0]

    async def _drain_step(self) -> tuple[int, int]:
        """One batch of the spool's oldest frames to the store (Ingestor.drain_spool), counted."""
        left, failing = await asyncio.get_running_loop().run_in_executor(
            None, self.service.ingestor.drain_spool, self._drain_pool, SPOOL_DRAIN_BATCH)
        self.stats.spool_drained += left
        return left, failing

    async def _drain_spool_until(self, deadline: float) -> None:
        """At shutdown: drain while the store takes frames and the grace lasts; report the rest."""
        loop = asyncio.get_running_loop()
        spool = self.spool
        while spool.active and loop.time() < deadline:
            left, failing = await self._drain_step()
            if failing and not left:
                await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
        self.stats.spool_left = spool.depth
        if self.stats.spool_left:
            logger.error("frames left in the spool at exit", extra={
                "reason": "spool_left", "frames": self.stats.spool_left, "bytes": spool.bytes,
                "spool_dir": str(spool.directory),
                "detail": "stored by the next receiver started on this disk; lost if the disk goes with the task"})
            count("SpoolLeftAtExit", self.stats.spool_left)

    def _behind(self, conn: Conn) -> bool:
        """True when this side, not the peer, is why a pong may be late: the connection's
        next message waits for a store slot, so its socket is not being read."""
        return conn.waiting_for_slot or self._slots.locked()

    async def _keepalive(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        ws = conn.ws
        try:
            while True:
                await asyncio.sleep(self.config.ping_interval)
                try:
                    pong = await ws.ping()
                except ConnectionClosed:
                    return
                deadline = loop.time() + self.config.ping_timeout
                while not pong.done():
                    await asyncio.wait([pong], timeout=min(1.0, self.config.ping_timeout))
                    if self._behind(conn):
                        deadline = loop.time() + self.config.ping_timeout
                    elif loop.time() >= deadline and not pong.done():
                        logger.warning("keepalive ping timeout", extra={
                            "reason": "ping_timeout", "connection_id": conn.connection_id})
                        await ws.close(INTERNAL_ERROR, "keepalive ping timeout")
                        return
        except asyncio.CancelledError:
            pass

    async def _flush_metrics_periodically(self) -> None:
        # EMF lines are written when a Lambda invocation ends; a container has no such end.
        while True:
            await asyncio.sleep(self.config.metrics_interval)
            count("OpenConnections", self.stats.open)
            if self.spool is not None:
                count("SpoolDepth", self.spool.depth)  # the alarm's gauge: frames waiting on disk
            flush_metrics()

    def _flush_totals(self, everything: bool = False) -> None:
        """Participant totals that are due (or all of them); never raises: the timer goes on."""
        totals = self.service.store.totals
        try:
            self.service.store.audio.flush_due()  # streams gone quiet (audio.py)
            totals.flush_all() if everything else totals.flush_due()
        except Exception:  # logged by totals.py per participant
            logger.exception("participant totals flush failed", extra={"reason": "totals_flush_failed"})

    async def _flush_totals_periodically(self) -> None:
        """Participant totals that are due, also when no frame arrives to flush them."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.totals_tick)
            await loop.run_in_executor(self._control_pool, self._flush_totals)

    async def _trim_heap_periodically(self) -> None:
        """The heap's free pages back to the OS (return_large_buffers_to_the_os), every
        second, off the event loop; a few ms of CPU when a flood has just been freed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEAP_TRIM_SECONDS)
            await loop.run_in_executor(self._control_pool, self._trim_heap)

    async def _recheck_tokens_periodically(self) -> None:
        """Close the connections whose bot token was revoked or expired since their handshake
        (1008, "token revoked or expired"): a revoke means new handshakes are refused *and*
        what is open stops within ``token_recheck``. The shared static token is not rechecked:
        rotating it moves new handshakes only (docs/security.md, "Operating it")."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.token_recheck)
            hashes = {conn.token_hash for conn in self._conns.values() if conn.token_hash}
            for token_hash in hashes:
                try:
                    live = await loop.run_in_executor(self._control_pool, self.service.tokens.lookup_hash, token_hash)
                except Exception:  # DynamoDB unavailable: keep the connections, look again next time
                    logger.exception("token recheck failed", extra={"reason": "token_recheck_failed"})
                    continue
                if live:
                    continue
                closing = [conn for conn in self._conns.values() if conn.token_hash == token_hash]
                logger.warning("closing connections of a revoked or expired token",
                               extra={"reason": "token_revoked", "connections": len(closing),
                                      "connection_ids": [c.connection_id for c in closing][:20]})
                count("TokenRevokedCloses", len(closing))
                for conn in closing:
                    conn.token_hash = None  # closed once
                    asyncio.create_task(conn.ws.close(POLICY_VIOLATION, "token revoked or expired"))

    async def _keep_lease(self) -> None:
        """Renew this receiver's lease (its open connections) every ``lease_interval`` and within
        a second of a change; sweep the leases of receivers that stopped renewing (a crashed
        task, whose connection records would otherwise never get an end)."""
        loop = asyncio.get_running_loop()
        interval = self.config.lease_interval
        connections = self.service.connections
        renewed_at, leased, swept_at = None, None, None
        while True:
            now = loop.time()
            open_ids = frozenset(conn.connection_id for conn in self._conns.values())
            if renewed_at is None or open_ids != leased or now - renewed_at >= interval:
                try:
                    await loop.run_in_executor(self._control_pool, lambda ids=open_ids: connections.renew_lease(
                        self.receiver_id, list(ids), interval_s=interval))
                    renewed_at, leased = now, open_ids
                except Exception as exc:  # DynamoDB unavailable: try again next tick (no traceback each second)
                    logger.warning("lease not renewed", extra={"reason": "lease_failed", "detail": str(exc)[:200]})
            if swept_at is None or now - swept_at >= interval:
                swept_at = now
                try:
                    swept = await loop.run_in_executor(
                        self._control_pool, lambda: connections.sweep_lost(own_id=self.receiver_id))
                    if swept["closed"]:
                        logger.warning("closed the records of a lost receiver's connections",
                                       extra={"reason": "receiver_lost", **swept})
                        count("LostConnectionsClosed", swept["closed"])
                except Exception as exc:
                    logger.warning("lease sweep failed", extra={"reason": "lease_failed", "detail": str(exc)[:200]})
            await asyncio.sleep(min(1.0, interval))

    async def _watch_deregistration(self) -> None:
        """Close connections with 1001 when the load balancer stops health-checking us."""
        loop = asyncio.get_running_loop()
        watch = self.config.deregistration_watch
        while True:
            await asyncio.sleep(min(1.0, watch / 4))
            seen = self._last_health_check
            if seen is None or self.stopping:
                continue
            if loop.time() - seen < watch:
                self._deregistered = False
                continue
            if not self._deregistered and self._conns:
                self._deregistered = True
                logger.warning("health checks stopped: closing connections so the bots reconnect elsewhere",
                               extra={"reason": "deregistered", "open_connections": len(self._conns),
                                      "seconds_since_health_check": round(loop.time() - seen, 1)})
                count("DeregistrationCloses", len(self._conns))
                for conn in list(self._conns.values()):
                    asyncio.create_task(conn.ws.close(GOING_AWAY, "target deregistered"))


async def _never_called(ws: ServerConnection) -> None:  # the health listener never upgrades
    await ws.close()


def _internal_error(exc: BaseException | None = None) -> str:
    """The core turns bad input and store failures into outcomes; this is a bug or an
    unexpected library error, and the frame is counted as not stored."""
    if exc is None:
        logger.exception("frame not stored", extra={"reason": "internal_error"})
    else:
        logger.error("frame not stored", extra={"reason": "internal_error"}, exc_info=exc)
    count_with_dimension("FrameStoreFailed", "reason", "internal_error")
    return FAILED


def return_large_buffers_to_the_os():
    """Messages of megabytes come and go: with glibc's default, its mmap threshold rises after
    the first large free, so later messages come from the heap and a flood's peak stays
    resident (40 connections of 5.4 MB messages: 62 MB idle, 684 MB a minute after). A fixed
    threshold (what MALLOC_MMAP_THRESHOLD_ sets) maps each larger buffer and unmaps it when
    freed: 80 MB after the same flood. Fixed at 2 MiB, not lower: a frame's buffers (the
    message, its base64 text, the PNG: 0.25-1.7 MB for 480x360 to 1280x720) then come from the
    heap and are reused, where at 128 KB each was a fresh mapping whose pages the kernel
    faulted in and zeroed, then unmapped: 0.71-0.81x the receiver's CPU per 480x360 frame
    (docs/performance.md). What the heap holds free after a flood (its buffers below 2 MiB:
    213 MiB resident where 84 was idle) goes back through the returned ``malloc_trim``, which
    the receiver calls every second. Returns None off glibc (nothing done)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)
