"""One websocket connection as the receiver sees it: what its handshake established, its
state while open, the bound on what a peer may leave unread, and the facts read off it (the
client's address, how it closed)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from framesink_core.access.auth import Principal
from framesink_core.shared.observability import count_with_dimension, logger
from framesink_receiver.config import ABNORMAL


@dataclass(frozen=True)
class Accepted:
    connection_id: str
    principal: Principal
    source_ip: str | None
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class Conn:
    """One open connection's state, for the keepalive and the shutdown."""

    ws: ServerConnection
    connection_id: str
    token_hash: str | None = None  # a bot token's, checked again while the connection is open
    waiting_for_slot: bool = False
    in_flight: int = 0
    # S3 key -> the outcome of the frame in flight for it: a second message for the same key
    # waits for the first, so within a connection the first *sent* is the first written.
    keys: dict = field(default_factory=dict)


# What this side may owe a peer that does not read: pongs to its pings (websockets answers each
# at once) and our own frames. A peer that sends pings and never reads would grow the write
# buffer by what it sends; past this it is closed (aborted: a close frame would not be read).
MAX_WRITE_DEBT = 1024 * 1024


class BoundedConnection(ServerConnection):
    """A ServerConnection that aborts a peer owing more than MAX_WRITE_DEBT of unread bytes."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.get_write_buffer_size() > MAX_WRITE_DEBT:
            logger.warning("peer does not read: connection aborted", extra={
                "reason": "write_debt", "owed_bytes": transport.get_write_buffer_size(),
                "remote": str(self.remote_address)})
            count_with_dimension("ConnectionAborted", "reason", "write_debt")
            transport.abort()


def close_of(ws: ServerConnection) -> tuple[int, str]:
    """The close code and reason of the side that closed first (1006 if neither did).

    ``ws.close_code`` is the code received, which is absent when this side closed a
    connection (1009 message too big, 1001 going away) and the peer never answered.
    """
    p = ws.protocol
    frame = p.close_sent if p.close_sent and not p.close_rcvd_then_sent else (p.close_rcvd or p.close_sent)
    return (frame.code, frame.reason) if frame else (ABNORMAL, "")


def client_ip(ws: ServerConnection, request: Request, trust_cloudfront: bool = False) -> str | None:
    # Behind CloudFront (its VPC origin the only way in), CloudFront states the viewer's
    # address and port ("198.51.100.7:4711", or "[2001:db8::1]:4711").
    viewer = request.headers.get("CloudFront-Viewer-Address") if trust_cloudfront else None
    if viewer:
        return viewer.rpartition(":")[0].strip("[]")[:64] or None
    # Behind the ALB the peer is the load balancer. The ALB appends the address it saw to
    # X-Forwarded-For, so the last entry is the one a client cannot forge (only the ALB's
    # security group can reach the task).
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",")[-1].strip() or None
    return ws.remote_address[0] if ws.remote_address else None
