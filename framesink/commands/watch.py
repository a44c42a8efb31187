"""`framesink watch`: follow a recording's frames (or every recording's: --all) as they are
stored, like `tail -f`.

One line per frame: when it was seen, participant, type, its time in the meeting, and its
lag (stored -> seen). --json prints the frame's record instead, the same fields whatever the
source (those of `framesink frames --json`, plus seen_at and lag_ms). --out DIR saves each
PNG (DIR/<recording>/<participant>/<type>/<relms10>.png with --all, else without the
recording); --exec CMD runs CMD with the PNG's path as its last argument and the frame's JSON
record on stdin (--out or a temporary folder holds the file), up to --exec-workers at once.

A command that fails (exit status not 0) is tried again: from the queue its event is left
there and comes back after a short back-off, until the queue's own redrive moves it to the
dead-letter queue (5 receives, as deployed and as `framesink local` makes it); from the index
watch tries it --exec-tries times itself. Each failure is a warning line on stderr; the
summary counts them.

Where the frames come from (--source, default auto):
- queue: the frame queue (-c frameQueue=true's FrameQueueUrl output, or the local
  stack's): every frame event the ingress published, as soon as EventBridge delivers it.
  watch is then that queue's consumer: it deletes the events of the frames it handled, and
  leaves the others (other recordings, participants, types) to come back after the queue's
  visibility timeout. Run one watch per queue, or use --source index.
- index: one Query per second of the recording's index from the last frame seen (with a
  5 s window back, so a frame stored a little out of order is not missed).
auto takes the queue when there is one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import ClientError

from framesink_core.read.feed import FrameRef
from framesink_core.shared import schema
from framesink_core.shared.objects import object_missing

from .. import target
from ..cli import CliError
from ..output import printable

OUTPUT_FRAME_QUEUE = "FrameQueueUrl"
RETRY_SECONDS = 2  # a failed command's frame comes back this long after (then doubling)
INDEX_WINDOW_MS = 5000


def register(sub) -> None:
    p = sub.add_parser("watch", help="follow new frames as they are stored, with their lag",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--recording", metavar="R", help="recording id")
    which.add_argument("--all", action="store_true", help="every recording (needs the frame queue)")
    p.add_argument("--participant", metavar="P", help="only this participant's frames")
    p.add_argument("--type", choices=list(schema.FRAME_TYPES), help="only this type")
    p.add_argument("--out", type=Path, metavar="DIR", help="save each frame's PNG under DIR")
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                   help="run CMD <png path> per frame, the frame's JSON record on its stdin")
    p.add_argument("--exec-workers", type=int, default=4, metavar="N",
                   help="commands running at once; no more frames are taken while N run (default 4)")
    p.add_argument("--exec-tries", type=int, default=3, metavar="N",
                   help="with --source index: tries per frame before giving up on it (default 3; from the queue "
                   "the queue's redrive decides)")
    p.add_argument("--retry-seconds", type=int, default=RETRY_SECONDS, metavar="S",
                   help=f"a failed command's frame is tried again after S seconds, doubling each time "
                   f"(default {RETRY_SECONDS})")
    p.add_argument("--source", choices=["auto", "queue", "index"], default="auto",
                   help="the frame queue or the index (default: the queue if there is one)")
    p.add_argument("--json", action="store_true", help="one JSON object per frame (with lag_ms) instead of a line")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS", help="stop after this long without a new frame")
    target.add_arguments(p)
    p.set_defaults(func=run)


class Watch:
    def __init__(self, args: argparse.Namespace, where: target.Target):
        self.args = args
        self.where = where
        self.s3 = where.client("s3")
        self.bucket = where.bucket
        self.seen = 0
        self.skipped = 0
        self.failed = 0  # command runs that failed (each is tried again)
        self.gave_up = 0  # frames whose command failed --exec-tries times (index source)
        self._lock = threading.Lock()  # output lines and counters, from the worker threads
        self._slots = threading.BoundedSemaphore(max(1, args.exec_workers if args.exec_cmd else 1))
        self._pool = ThreadPoolExecutor(max(1, args.exec_workers if args.exec_cmd else 1),
                                        thread_name_prefix="watch-exec")
        self.stopping = threading.Event()
        # --exec needs the PNG on disk: --out's folder, or a temporary one.
        self.scratch = tempfile.TemporaryDirectory(prefix="framesink-watch-") if args.exec_cmd and not args.out else None
        self.folder = args.out or (Path(self.scratch.name) if self.scratch else None)

    def wants(self, ref: FrameRef) -> bool:
        return ref.matches(None if self.args.all else self.args.recording, self.args.participant, self.args.type)

    def handle(self, ref: FrameRef, record: dict, done) -> None:
        """Take a slot (blocks while --exec-workers commands run: backpressure), then show,
        save and exec the frame on a worker; ``done(ok)`` is called with the outcome."""
        self._slots.acquire()

        def work() -> None:
            ok = False
            try:
                ok = self.show(ref, record)
            except ClientError as exc:  # --out/--exec: the object went after the event or the index
                if not object_missing(exc):
                    self._warn(f"cannot read {ref.key}: {exc}")
                else:
                    self.skip_gone(ref)
                    ok = True  # nothing to retry: it is gone
            except Exception as exc:  # noqa: BLE001 - one frame's trouble, not the watch's
                self._warn(f"{ref.key}: {type(exc).__name__}: {exc}")
            finally:
                self._slots.release()
            done(ok)

        self._pool.submit(work)

    def finish(self) -> None:
        self._pool.shutdown(wait=True)

    def show(self, ref: FrameRef, record: dict) -> bool:
        """Print (and save, and exec) one frame; False when the command failed."""
        now_ms = int(time.time() * 1000)
        stored_at_ms = record.get("stored_at")
        lag_ms = now_ms - stored_at_ms if stored_at_ms else None
        record = {**record, "seen_at": now_ms, "lag_ms": lag_ms}
        path = None
        if self.folder is not None:
            folder = self.folder / ref.recording_id if self.args.all else self.folder
            path = folder / ref.participant_id / ref.frame_type / f"{schema.relative_ms_text(ref.relative_ms)}.png"
            body = self.s3.get_object(Bucket=self.bucket, Key=ref.key)["Body"].read()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            record["path"] = str(path)
        ok = True
        if self.args.exec_cmd and path is not None:
            result = subprocess.run([*shlex.split(self.args.exec_cmd), str(path)], input=json.dumps(record).encode())
            ok = result.returncode == 0
            if not ok:
                with self._lock:
                    self.failed += 1
                self._warn(f"{self.args.exec_cmd!r} exited {result.returncode} on {path}; it will be tried again")
        with self._lock:
            if self.args.json:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                seen = datetime.fromtimestamp(now_ms / 1000, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
                lag = f"{lag_ms / 1000:.2f} s" if lag_ms is not None else "?"
                name = printable(str(record.get("participant_name") or ""))
                rec = f"{ref.recording_id} " if self.args.all else ""
                print(f"{seen}  {rec}{ref.participant_id:>6} {name[:20]:<20} {ref.frame_type:<11} "
                      f"{ref.relative_ms / 1000:>10.3f} s  lag {lag:>8}  {ref.key}", flush=True)
            if ok:
                self.seen += 1
                if self.args.max_frames and self.seen >= self.args.max_frames:
                    self.stopping.set()
        return ok

    def _warn(self, text: str) -> None:
        with self._lock:
            print(f"framesink: warning: {text}", file=sys.stderr, flush=True)

    def skip_gone(self, ref: FrameRef) -> None:
        """A frame deleted after its event was sent (framesink delete, expiry): one line, and
        the frames behind it go on."""
        with self._lock:
            self.skipped += 1
            print(f"framesink: skipped {ref.key}: it no longer exists (deleted after it was stored)",
                  file=sys.stderr, flush=True)

    # --- sources -------------------------------------------------------------------------

    def from_queue(self, queue_url: str) -> None:
        sqs = self.where.client("sqs")
        last = time.monotonic()

        def settle(message: dict):
            def done(ok: bool) -> None:
                if ok:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                    return
                # Left on the queue: back after a back-off that doubles per receive, until the
                # queue's redrive moves it to the dead-letter queue.
                receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=min(300, self.args.retry_seconds * 2 ** (receives - 1)))
            return done

        while not self.stopping.is_set():
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           VisibilityTimeout=60, AttributeNames=["ApproximateReceiveCount"]
                                           ).get("Messages", [])
            for message in messages:
                try:
                    ref = FrameRef.from_event(json.loads(message["Body"]))
                except ValueError:
                    ref = None
                if ref is None or ref.bucket != self.bucket or not self.wants(ref) or self.stopping.is_set():
                    continue  # another consumer's (or we are stopping): it comes back after the timeout
                self.handle(ref, ref.frame_record(), settle(message))  # the event carries the record
                last = time.monotonic()
            if self.args.idle_exit and time.monotonic() - last >= self.args.idle_exit:
                return

    def from_index(self) -> None:
        index = self.where.index()
        shown: dict[str, int] = {}  # key -> relative ms, of the frames already taken
        since, last = 0, time.monotonic()
        tries = max(1, self.args.exec_tries)

        def retrying(ref: FrameRef, record: dict, attempt: int):
            def done(ok: bool) -> None:
                if ok:
                    return
                if attempt >= tries:
                    with self._lock:
                        self.gave_up += 1
                    self._warn(f"gave up on {ref.key} after {tries} tries")
                    return
                time.sleep(min(30, self.args.retry_seconds * 2 ** (attempt - 1)))
                if not self.stopping.is_set():
                    self.handle(ref, record, retrying(ref, record, attempt + 1))
            return done

        while not self.stopping.is_set():
            for frame in index.iter_frames(self.args.recording, participant_id=self.args.participant,
                                           frame_type=self.args.type, since=since):
                if frame["s3_key"] in shown or self.stopping.is_set():
                    continue
                shown[frame["s3_key"]] = frame["relative_ms"]
                ref = FrameRef.from_key(self.bucket, frame["s3_key"])
                self.handle(ref, frame, retrying(ref, frame, 1))
                last = time.monotonic()
            if shown:
                since = max(0, max(shown.values()) - INDEX_WINDOW_MS)
                shown = {k: ms for k, ms in shown.items() if ms >= since}
            if self.args.idle_exit and time.monotonic() - last >= self.args.idle_exit:
                return
            self.stopping.wait(1.0)


def run(args: argparse.Namespace) -> int:
    from framesink_core.read.query import check_id

    if not args.all:
        check_id(args.recording, "recording")
    if args.exec_workers < 1 or args.exec_tries < 1 or args.retry_seconds < 0:
        raise CliError("--exec-workers and --exec-tries must be at least 1, --retry-seconds at least 0")
    where = target.resolve(args)
    queue_url = None
    if args.source in ("auto", "queue") or args.all:
        queue_url = where.state.get("frame_queue_url") if where.local else _stack_queue(where)
        if (args.source == "queue" or args.all) and not queue_url:
            raise CliError("no frame queue: " + ("start `framesink local --frame-queue`" if where.local
                                                 else "deploy with -c frameQueue=true")
                           + (" (--all follows the queue: the index is read per recording)" if args.all
                              else ", or use --source index"))
    watch = Watch(args, where)
    # Ctrl-C (and SIGTERM) end it cleanly, after the frame being shown.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: watch.stopping.set())
    what = "every recording" if args.all else f"recording {args.recording}"
    print(f"framesink: watching {what} through the "
          f"{'frame queue' if queue_url else 'index (one Query a second)'}; Ctrl-C stops", file=sys.stderr)
    try:
        watch.from_queue(queue_url) if queue_url else watch.from_index()
    finally:
        watch.finish()  # the commands still running end first
        if watch.scratch is not None:
            watch.scratch.cleanup()
    print(f"framesink: {watch.seen} frame{'s' if watch.seen != 1 else ''} seen"
          + (f", {watch.skipped} skipped (deleted)" if watch.skipped else "")
          + (f", {watch.failed} failed command run{'s' if watch.failed != 1 else ''} (tried again)"
             if watch.failed else "")
          + (f", {watch.gave_up} given up" if watch.gave_up else ""), file=sys.stderr)
    return 0


def _stack_queue(where: target.Target) -> str | None:
    try:
        return where.stack_outputs().get(OUTPUT_FRAME_QUEUE)
    except CliError:
        return None
