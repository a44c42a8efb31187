"""The receiver's settings: its defaults, the environment the container sets, and the
``framesink receive`` / ``python -m framesink_receiver`` flags that override them."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from framesink_core.ingest.spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from framesink_core.shared.settings import Settings

HEALTH_PATH = "/healthz"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_IN_FLIGHT = 32
# One Recall connection carries every participant of a meeting (up to 16 streams at 2 fps):
# 8 in flight is 32 frames/s at 250 ms per store, and leaves 3/4 of the slots to others.
DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION = 8
DEFAULT_MAX_QUEUE = 4  # frames websockets buffers per connection before it stops reading
DEFAULT_METRICS_INTERVAL = 60.0
DEFAULT_TOTALS_TICK = 1.0  # how often the timer looks for participant totals that are due
DEFAULT_SHUTDOWN_GRACE = 90.0  # fits ECS stopTimeout (120 s) with room for the close handshakes
# How often the bot tokens of open connections are checked again: a revoked or expired one
# is closed with 1008 within this (one GetItem per distinct token per interval).
DEFAULT_TOKEN_RECHECK = 60.0
# How often the receiver renews its lease (the connections it holds open) and sweeps the
# leases of receivers that stopped renewing theirs (access/connections.py): a crashed task's
# connection records are closed within 4 intervals while any receiver runs.
DEFAULT_LEASE_INTERVAL = 60.0
# Connections one bot token may hold open on a task: Recall opens one per realtime endpoint
# and, reconnecting, briefly a second; past this a leaked token is a lever on the task.
DEFAULT_MAX_CONNECTIONS_PER_TOKEN = 10
POLICY_VIOLATION = 1008
# The JSON around the base64 buffer (ids, names, timestamps, metadata echoed from Create Bot).
ENVELOPE_SLACK_BYTES = 64 * 1024
NORMAL_CLOSURE, GOING_AWAY, INTERNAL_ERROR, ABNORMAL = 1000, 1001, 1011, 1006

# Environment the container sets (Dockerfile ENV / the task definition); flags override.
HOST_ENV, PORT_ENV, HEALTH_PORT_ENV = "FRAMESINK_RECEIVER_HOST", "FRAMESINK_RECEIVER_PORT", "FRAMESINK_HEALTH_PORT"
MAX_IN_FLIGHT_ENV = "FRAMESINK_MAX_IN_FLIGHT"
DRAIN_GRACE_ENV = "FRAMESINK_DRAIN_GRACE_SECONDS"
METRICS_INTERVAL_ENV = "FRAMESINK_METRICS_INTERVAL_SECONDS"
SHUTDOWN_GRACE_ENV = "FRAMESINK_SHUTDOWN_GRACE_SECONDS"
# Set only where CloudFront is the one way in (its VPC origin): then CloudFront-Viewer-Address
# is the bot's own address. Anywhere else a client could forge it.
TRUST_CLOUDFRONT_ENV = "FRAMESINK_TRUST_CLOUDFRONT_HEADERS"
DEREGISTRATION_WATCH_ENV = "FRAMESINK_DEREGISTRATION_WATCH_SECONDS"
MAX_CONNECTIONS_PER_TOKEN_ENV = "FRAMESINK_MAX_CONNECTIONS_PER_TOKEN"
LEASE_INTERVAL_ENV = "FRAMESINK_LEASE_INTERVAL_SECONDS"
SPOOL_DIR_ENV, SPOOL_MAX_BYTES_ENV = "FRAMESINK_SPOOL_DIR", "FRAMESINK_SPOOL_MAX_BYTES"
TRY_AGAIN_LATER = 1013
# The spool's drain: frames stored at once, and the back-off while the store still fails.
SPOOL_DRAIN_BATCH = 32
SPOOL_RETRY_SECONDS = (1.0, 5.0)  # at most 5 s between the outage and the drain



def max_message_bytes(max_frame_bytes: int) -> int:
    """Largest websocket message accepted: a maximal PNG in base64 plus its JSON envelope.

    Anything larger is closed by websockets with 1009 before it is buffered; anything
    between this and a too-large PNG is rejected by the core with reason frame_too_large.
    """
    return (max_frame_bytes + 2) // 3 * 4 + ENVELOPE_SLACK_BYTES


@dataclass
class ReceiverConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 = any free port
    health_port: int | None = None  # None: /healthz on the websocket port only
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # messages in the store at once (all connections)
    max_in_flight_per_connection: int = DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION
    max_queue: int = DEFAULT_MAX_QUEUE
    metrics_interval: float = DEFAULT_METRICS_INTERVAL
    totals_tick: float = DEFAULT_TOTALS_TICK
    drain_grace: float = 0.0  # seconds between SIGTERM and closing connections (health says 503)
    ping_interval: float | None = 20.0  # keeps idle connections alive through CloudFront and the ALB
    ping_timeout: float = 20.0  # a pong this late closes with 1011, unless this side is behind
    close_timeout: float = 10.0
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    deregistration_watch: float | None = None  # seconds without a health check => close with 1001
    trust_cloudfront: bool = False  # take the bot's address from CloudFront-Viewer-Address
    token_recheck: float | None = DEFAULT_TOKEN_RECHECK  # None: a token is checked at the handshake only
    max_connections_per_token: int = DEFAULT_MAX_CONNECTIONS_PER_TOKEN  # per bot token, on this task
    lease_interval: float | None = DEFAULT_LEASE_INTERVAL  # None: no lease, no sweep
    # Frames the store failed after retries wait here (spool.py); None: a directory per stack
    # under the system's temp dir. spool_max_bytes 0: no spool (a failed frame is lost).
    spool_dir: str | None = None
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    parser.add_argument("--host", default=env.get(HOST_ENV, DEFAULT_HOST),
                        help=f"address to listen on (default ${HOST_ENV} or {DEFAULT_HOST}; the container sets 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(env.get(PORT_ENV, DEFAULT_PORT)),
                        help=f"websocket port, also serving GET {HEALTH_PATH} (0 = any free port; default ${PORT_ENV} or {DEFAULT_PORT})")
    parser.add_argument("--health-port", type=int,
                        default=int(env[HEALTH_PORT_ENV]) if env.get(HEALTH_PORT_ENV) else None,
                        help=f"also answer GET {HEALTH_PATH} on this port (default: the websocket port only)")
    parser.add_argument("--max-in-flight", type=int, default=int(env.get(MAX_IN_FLIGHT_ENV, DEFAULT_MAX_IN_FLIGHT)),
                        help="messages being stored at once; beyond it connections stop being read (backpressure)")
    parser.add_argument("--drain-grace", type=float, default=float(env.get(DRAIN_GRACE_ENV, 0)), metavar="SECONDS",
                        help="after SIGTERM, answer health 503 this long before closing connections "
                        "(for load balancers that do not deregister first; ECS does)")
    parser.add_argument("--metrics-interval", type=float,
                        default=float(env.get(METRICS_INTERVAL_ENV, DEFAULT_METRICS_INTERVAL)), metavar="SECONDS",
                        help="how often batched EMF metrics are written")
    parser.add_argument("--ping-interval", type=float, default=20.0, metavar="SECONDS",
                        help="server keepalive ping interval (0 = no pings; CloudFront closes after 10 min idle)")
    parser.add_argument("--ping-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="close with 1011 when a pong is this late while the receiver is keeping up")
    parser.add_argument("--shutdown-grace", type=float,
                        default=float(env.get(SHUTDOWN_GRACE_ENV, DEFAULT_SHUTDOWN_GRACE)), metavar="SECONDS",
                        help="after SIGTERM, the most time to store what was read before exiting")
    parser.add_argument("--trust-cloudfront", action="store_true",
                        default=env.get(TRUST_CLOUDFRONT_ENV, "").lower() == "true",
                        help="take the bot's address from CloudFront-Viewer-Address (only where CloudFront is "
                        "the one way in)")
    parser.add_argument("--max-connections-per-token", type=int, metavar="N",
                        default=int(env.get(MAX_CONNECTIONS_PER_TOKEN_ENV, DEFAULT_MAX_CONNECTIONS_PER_TOKEN)),
                        help="connections one bot token may hold open on this receiver; past it a handshake gets "
                        f"429 (default ${MAX_CONNECTIONS_PER_TOKEN_ENV} or {DEFAULT_MAX_CONNECTIONS_PER_TOKEN})")
    parser.add_argument("--spool-dir", default=env.get(SPOOL_DIR_ENV) or None, metavar="DIR",
                        help="where frames wait while S3 or DynamoDB is down (default $" + SPOOL_DIR_ENV
                        + " or a directory per stack under the temp dir)")
    parser.add_argument("--spool-max-bytes", type=int, metavar="BYTES",
                        default=int(env.get(SPOOL_MAX_BYTES_ENV, DEFAULT_SPOOL_MAX_BYTES)),
                        help=f"most the spool holds; past it frames are lost and connections closed with 1013 "
                        f"(0 = no spool; default ${SPOOL_MAX_BYTES_ENV} or {DEFAULT_SPOOL_MAX_BYTES})")
    parser.add_argument("--lease-interval", type=float, metavar="SECONDS",
                        default=float(env.get(LEASE_INTERVAL_ENV, DEFAULT_LEASE_INTERVAL)),
                        help="how often this receiver renews its lease on its open connections and closes the "
                        f"records of receivers that stopped (0 = neither; default ${LEASE_INTERVAL_ENV} or "
                        f"{DEFAULT_LEASE_INTERVAL:g})")
    parser.add_argument("--deregistration-watch", type=float, metavar="SECONDS",
                        default=float(env[DEREGISTRATION_WATCH_ENV]) if env.get(DEREGISTRATION_WATCH_ENV) else None,
                        help="behind a load balancer: close connections (1001) after this long without a health check")


def config_from_args(args: argparse.Namespace) -> ReceiverConfig:
    if args.max_in_flight < 1:
        raise ValueError("--max-in-flight must be at least 1")
    if args.max_connections_per_token < 1:
        raise ValueError("--max-connections-per-token must be at least 1")
    if args.lease_interval < 0:
        raise ValueError("--lease-interval must be 0 (no lease) or more")
    if args.spool_max_bytes < 0:
        raise ValueError("--spool-max-bytes must be 0 (no spool) or more")
    return ReceiverConfig(host=args.host, port=args.port, health_port=args.health_port,
                          max_in_flight=args.max_in_flight, drain_grace=args.drain_grace,
                          metrics_interval=args.metrics_interval, shutdown_grace=args.shutdown_grace,
                          deregistration_watch=args.deregistration_watch,
                          ping_interval=args.ping_interval or None, ping_timeout=args.ping_timeout,
                          trust_cloudfront=args.trust_cloudfront,
                          max_connections_per_token=args.max_connections_per_token,
                          spool_dir=args.spool_dir, spool_max_bytes=args.spool_max_bytes,
                          lease_interval=args.lease_interval or None)


def default_spool_dir(settings: Settings) -> str:
    """One spool per stack (bucket and table) under the temp dir: a restarted local receiver
    finds its frames, two stacks never share. The container sets $FRAMESINK_SPOOL_DIR."""
    import tempfile

    name = f"{settings.bucket}-{settings.table}".replace(os.sep, "_")
    return os.path.join(tempfile.gettempdir(), "framesink-spool", name)
