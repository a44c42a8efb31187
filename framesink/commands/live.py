"""`framesink live --recording R`: a page on this machine showing every participant's newest
frame of each type as it is stored, with names, each frame's lag (stored -> shown) and the
slides found (novel screenshare frames), locally (--local) or for a deployed stack.

Frames arrive by push, not by polling the index: the command subscribes to the stack's frame
bus like `framesink analyze` (rules for the recording's "Frame Stored" events and its novel
"Frame Scored" ones, into a queue of its own, removed when it stops), reads that queue with
the analyzer kit's worker keeping only each stream's newest frame (--latest-only), and pushes
each to the page as a Server-Sent Event. Every receiver task publishes on the same bus, so
the page shows the frames of all of them. The index is read once, at start, for what was
already stored.

The page is served on 127.0.0.1 only, behind a random token in its URL (printed; --open opens
it in your browser); a request naming another host is refused (DNS rebinding). The PNGs come
through the command from S3: the page never holds AWS credentials or presigned URLs.
"""

from __future__ import annotations

import argparse
import html
import json
import queue
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.exceptions import ClientError

from framesink_core.analyze.kit import Context, Runner
from framesink_core.analyze.worker import AnalyzerPool
from framesink_core.read.feed import frames_pattern
from framesink_core.shared import schema
from framesink_core.shared.objects import object_missing

from .. import target
from ..cli import CliError
from ..subscription import Subscription, frame_bus

HEARTBEAT_SECONDS = 15  # an SSE comment line keeps proxies and the browser from idling out
MAX_CLIENTS = 16
CLIENT_BACKLOG = 256  # events held for a slow page before it is dropped


def register(sub) -> None:
    p = sub.add_parser("live", help="a local page showing each participant's newest frame as it is stored",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--port", type=int, default=0, help="the page's port on 127.0.0.1 (default: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in your browser")
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    target.add_arguments(p)
    p.set_defaults(func=run)


class Client(queue.Queue):
    """One open page's events; ``dropped`` when it fell CLIENT_BACKLOG events behind."""

    dropped = False


class Hub:
    """What the page shows, and the pages listening: each gets every event after a snapshot."""

    def __init__(self, recording_id: str):
        self.recording_id = recording_id
        self.tiles: dict[str, dict] = {}  # "<pid>/<type>" -> the newest frame shown
        self.slides: list[dict] = []
        self._clients: list[queue.Queue] = []
        self._lock = threading.Lock()

    def publish(self, kind: str, data: dict) -> None:
        with self._lock:
            if kind == "frame":
                tile = f"{data['participant_id']}/{data['type']}"
                if data["relative_ms"] < self.tiles.get(tile, {}).get("relative_ms", -1):
                    return  # an older frame than the one shown (events are not ordered)
                self.tiles[tile] = data
            elif kind == "slide":
                if any(s["s3_key"] == data["s3_key"] for s in self.slides):
                    return
                self.slides = sorted([*self.slides, data], key=lambda s: (s["relative_ms"], s["participant_id"]))
            for client in list(self._clients):
                try:
                    client.put_nowait((kind, data))
                except queue.Full:  # a page that stopped reading: drop it (its EventSource reconnects
                    self._clients.remove(client)  # and starts from a snapshot), the others go on
                    client.dropped = True

    def subscribe(self) -> "Client | None":
        with self._lock:
            if len(self._clients) >= MAX_CLIENTS:
                return None
            client = Client(CLIENT_BACKLOG)
            for data in self.tiles.values():
                client.put_nowait(("frame", data))
            for data in self.slides:
                client.put_nowait(("slide", data))
            self._clients.append(client)
            return client

    def unsubscribe(self, client: "Client") -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                try:
                    client.put_nowait((None, None))
                except queue.Full:
                    pass


def frame_view(record: dict, token: str, lag_ms: float | None) -> dict:
    """What the page gets for a frame: no bucket, no AWS URL, the PNG through this command."""
    return {"participant_id": record["participant_id"], "participant_name": record.get("participant_name") or "",
            "type": record["type"], "relative_ms": record["relative_ms"], "width": record.get("width"),
            "height": record.get("height"), "lag_ms": None if lag_ms is None else round(lag_ms),
            "stored_at": record.get("stored_at"), "s3_key": record["s3_key"],
            "src": f"/frame/{record['s3_key']}?t={token}"}


class LivePage:
    def __init__(self, hub: Hub, s3, bucket: str, token: str, port: int = 0):
        self.hub, self.s3, self.bucket, self.token = hub, s3, bucket, token
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlsplit(self.path)
                if self.headers.get("Host") not in outer.hosts:  # DNS rebinding: only our own names
                    return self._send(421, b"wrong host\n", "text/plain")
                if parse_qs(url.query).get("t", [""])[0] != outer.token:
                    return self._send(403, b"this page needs the URL framesink live printed\n", "text/plain")
                if url.path == "/":
                    return self._send(200, PAGE.replace("{{RECORDING}}", html.escape(hub.recording_id))
                                      .replace("{{TOKEN}}", outer.token).encode(), "text/html; charset=utf-8")
                if url.path == "/events":
                    return self._events()
                if url.path.startswith("/frame/"):
                    return self._frame(unquote(url.path[len("/frame/"):]))
                return self._send(404, b"not found\n", "text/plain")

            def _frame(self, key: str):
                match = schema.FRAME_KEY_PATTERN.fullmatch(key)
                if not match or match["recording_id"] != hub.recording_id:  # only this recording's frames
                    return self._send(404, b"not a frame of this recording\n", "text/plain")
                try:
                    body = outer.s3.get_object(Bucket=outer.bucket, Key=key)["Body"].read()
                except ClientError as exc:
                    if object_missing(exc):
                        return self._send(404, b"deleted\n", "text/plain")
                    return self._send(502, b"S3 refused the read\n", "text/plain")
                self._send(200, body, "image/png", cache="private, max-age=3600")  # a key's bytes never change

            def _events(self):
                client = hub.subscribe()
                if client is None:
                    return self._send(503, b"too many pages open\n", "text/plain")
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.close_connection = True
                    while not client.dropped:
                        try:
                            kind, data = client.get(timeout=HEARTBEAT_SECONDS)
                        except queue.Empty:
                            self.wfile.write(b": heartbeat\n\n")
                            self.wfile.flush()
                            continue
                        if kind is None:
                            return
                        self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                        self.wfile.flush()
                except OSError:  # the page went away
                    return
                finally:
                    hub.unsubscribe(client)

            def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", cache)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; "
                                 "script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.url = f"http://127.0.0.1:{self.port}/?t={token}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="live-page", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.hub.close()
        self.server.shutdown()
        self.server.server_close()


class Live:
    """The recording's frames into the hub: a snapshot from the index, then the subscription."""

    def __init__(self, where: target.Target, recording_id: str, token: str):
        self.where, self.recording_id, self.token = where, recording_id, token
        self.hub = Hub(recording_id)
        self.shown = 0

    def snapshot(self) -> None:
        index = self.where.index()
        for participant in index.participants(self.recording_id):
            for frame_type in participant.get("types") or schema.FRAME_TYPES:
                frame = index.latest_frame(self.recording_id, participant["participant_id"], frame_type)
                if frame is not None:
                    self.hub.publish("frame", frame_view(frame, self.token, None))
        for frame in index.iter_frames(self.recording_id, frame_type="screenshare", novel=True):
            self.hub.publish("slide", frame_view(frame, self.token, None))

    def on_frame(self, frame) -> None:
        """The kit function: each frame event to the page (nothing is read or written)."""
        record = frame.record()
        lag = time.time() * 1000 - frame.stored_at if frame.stored_at else None
        if frame.novel is None:  # "Frame Stored"
            self.shown += 1
            self.hub.publish("frame", frame_view(record, self.token, lag))
        elif frame.novel and frame.type == "screenshare" and (frame.detail or {}).get("novel_reason") != "heartbeat":
            self.hub.publish("slide", frame_view(record, self.token, lag))
        return None


def run(args: argparse.Namespace) -> int:
    from framesink_core.read.query import check_id

    check_id(args.recording, "recording")
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0-65535")
    where = target.resolve(args)
    bus = frame_bus(where)
    token = secrets.token_urlsafe(18)
    live = Live(where, args.recording, token)
    s3 = where.client("s3")
    try:
        page = LivePage(live.hub, s3, where.bucket, token, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    patterns = [frames_pattern(recording_id=args.recording),
                frames_pattern(recording_id=args.recording, frame_type="screenshare", novel_only=True)]
    subscription = Subscription(where, bus, f"live-{secrets.token_hex(3)}", patterns, tries=2)
    ctx = Context(where.bucket, where.table, s3, where.client("dynamodb"), 0)
    pool = AnalyzerPool(Runner("live", live.on_frame, ctx, store_results=False), workers=2, latest_only=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: pool.stopping.set())
    if args.seconds:
        timer = threading.Timer(args.seconds, pool.stopping.set)
        timer.daemon = True  # Ctrl-C before it fires must not wait for it
        timer.start()
    try:
        live.snapshot()
        page.start()
        print(f"framesink: live view of recording {args.recording}: {page.url}", flush=True)
        print("framesink: frames are pushed as they are stored; Ctrl-C stops", file=sys.stderr, flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(page.url)
        pool.run_queue(subscription.sqs, subscription.url, visibility_seconds=30)
    finally:
        page.stop()
        subscription.remove()
    print(f"framesink: live view stopped; {live.shown} frames shown", file=sys.stderr)
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>framesink live: {{RECORDING}}</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1em; background: #111; color: #eee; }
 h1 { font-size: 1.2em; } #status { color: #9c9; }
 #tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
 .tile { background: #222; padding: 6px; border-radius: 6px; }
 .tile img { width: 100%; display: block; background: #000; }
 .meta { display: flex; justify-content: space-between; margin-top: 4px; }
 #slides { display: flex; gap: 8px; overflow-x: auto; } #slides img { height: 90px; }
</style></head>
<body>
<h1>framesink live: recording <span id="recording">{{RECORDING}}</span></h1>
<p id="status">connecting...</p>
<div id="tiles"></div>
<h2>Slides found (<span id="slide-count">0</span>)</h2>
<div id="slides"></div>
<script>
"use strict";
const token = "{{TOKEN}}";
const tiles = document.getElementById("tiles");
const status = document.getElementById("status");
let frames = 0;
function text(el, value) { el.textContent = value; return el; }
function tile(f) {
  const id = "tile-" + f.participant_id + "-" + f.type;
  let el = document.getElementById(id);
  if (!el) {
    el = document.createElement("div"); el.className = "tile"; el.id = id;
    el.dataset.participant = f.participant_id; el.dataset.type = f.type;
    el.append(document.createElement("img"));
    const meta = document.createElement("div"); meta.className = "meta";
    for (const cls of ["name", "time", "lag"]) { const s = document.createElement("span"); s.className = cls; meta.append(s); }
    el.append(meta);
    const all = [...tiles.children, el].sort((a, b) => (a.id < b.id ? -1 : 1));
    tiles.replaceChildren(...all);
  }
  return el;
}
const source = new EventSource("/events?t=" + encodeURIComponent(token));
source.addEventListener("open", () => text(status, "live: frames are pushed as they are stored"));
source.addEventListener("error", () => text(status, "disconnected: retrying..."));
source.addEventListener("frame", (e) => {
  const f = JSON.parse(e.data);
  const el = tile(f);
  if (Number(el.dataset.ms || -1) > f.relative_ms) return;
  el.dataset.ms = f.relative_ms;
  el.querySelector("img").src = f.src;
  el.querySelector("img").alt = f.participant_name + " " + f.type;
  text(el.querySelector(".name"), (f.participant_name || f.participant_id) + " (" + f.type + ")");
  text(el.querySelector(".time"), (f.relative_ms / 1000).toFixed(1) + " s");
  text(el.querySelector(".lag"), f.lag_ms === null ? "" : "lag " + f.lag_ms + " ms");
  frames += 1; document.body.dataset.frames = frames;
});
source.addEventListener("slide", (e) => {
  const f = JSON.parse(e.data);
  const img = document.createElement("img");
  img.src = f.src; img.title = (f.participant_name || f.participant_id) + " at " + (f.relative_ms / 1000).toFixed(1) + " s";
  img.dataset.ms = f.relative_ms;
  const slides = document.getElementById("slides");
  slides.replaceChildren(...[...slides.children, img].sort((a, b) => a.dataset.ms - b.dataset.ms));
  text(document.getElementById("slide-count"), slides.children.length);
});
</script>
</body></html>
"""
