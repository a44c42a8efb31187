"""`framesink watch`: follow a recording's frames as they are stored, like `tail -f`.

One line per frame: when it was seen, participant, type, its time in the meeting, and its
lag (stored -> seen). --out DIR saves each PNG (DIR/<participant>/<type>/<relms10>.png);
--exec CMD runs CMD with the PNG's path as its last argument and the frame's JSON record
on stdin (--out or a temporary folder holds the file).

Where the frames come from (--source, default auto):
- queue: the frame queue (-c frameQueue=true's FrameQueueUrl output, or the local
  stack's): every stored frame's S3 event, as soon as EventBridge delivers it. watch is then
  that queue's consumer: it deletes the events of the frames it shows, and leaves the others
  (other recordings, participants, types) to come back after the queue's visibility timeout.
  Run one watch per queue, or use --source index.
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
INDEX_WINDOW_MS = 5000


def register(sub) -> None:
    p = sub.add_parser("watch", help="follow new frames as they are stored, with their lag",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--participant", metavar="P", help="only this participant's frames")
    p.add_argument("--type", choices=list(schema.FRAME_TYPES), help="only this type")
    p.add_argument("--out", type=Path, metavar="DIR", help="save each frame's PNG under DIR")
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                   help="run CMD <png path> per frame, the frame's JSON record on its stdin")
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
        self.stopping = threading.Event()
        # --exec needs the PNG on disk: --out's folder, or a temporary one.
        self.scratch = tempfile.TemporaryDirectory(prefix="framesink-watch-") if args.exec_cmd and not args.out else None
        self.folder = args.out or (Path(self.scratch.name) if self.scratch else None)

    def wants(self, ref: FrameRef) -> bool:
        return ref.matches(self.args.recording, self.args.participant, self.args.type)

    def show(self, ref: FrameRef, stored_at_ms: int | None, record: dict | None = None) -> None:
        """Print (and save, and exec) one frame."""
        now_ms = int(time.time() * 1000)
        lag_ms = now_ms - stored_at_ms if stored_at_ms else None
        record = {**(record or {}), "recording_id": ref.recording_id, "participant_id": ref.participant_id,
                  "type": ref.frame_type, "relative_ms": ref.relative_ms, "s3_key": ref.key, "stored_at": stored_at_ms,
                  "seen_at": now_ms, "lag_ms": lag_ms}
        path = None
        if self.folder is not None:
            path = self.folder / ref.participant_id / ref.frame_type / f"{schema.relative_ms_text(ref.relative_ms)}.png"
            body = self.s3.get_object(Bucket=self.bucket, Key=ref.key)["Body"].read()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            record["path"] = str(path)
        if self.args.json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            seen = datetime.fromtimestamp(now_ms / 1000, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            lag = f"{lag_ms / 1000:.2f} s" if lag_ms is not None else "?"
            name = printable(str(record.get("participant_name") or ""))
            print(f"{seen}  {ref.participant_id:>6} {name[:20]:<20} {ref.frame_type:<11} "
                  f"{ref.relative_ms / 1000:>10.3f} s  lag {lag:>8}  {ref.key}", flush=True)
        if self.args.exec_cmd and path is not None:
            result = subprocess.run([*shlex.split(self.args.exec_cmd), str(path)], input=json.dumps(record).encode())
            if result.returncode != 0:
                print(f"framesink: warning: {self.args.exec_cmd!r} exited {result.returncode} on {path}", file=sys.stderr)
        self.seen += 1
        if self.args.max_frames and self.seen >= self.args.max_frames:
            self.stopping.set()

    def skip_gone(self, ref: FrameRef) -> None:
        """A frame deleted after its event was sent (framesink delete, expiry): one line, and
        the frames behind it go on."""
        self.skipped += 1
        print(f"framesink: skipped {ref.key}: it no longer exists (deleted after it was stored)", file=sys.stderr,
              flush=True)

    # --- sources -------------------------------------------------------------------------

    def from_queue(self, queue_url: str) -> None:
        sqs = self.where.client("sqs")
        last = time.monotonic()
        while not self.stopping.is_set():
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           VisibilityTimeout=30).get("Messages", [])
            for message in messages:
                try:
                    ref = FrameRef.from_event(json.loads(message["Body"]))
                except ValueError:
                    ref = None
                if ref is None or ref.bucket != self.bucket or not self.wants(ref):
                    continue  # another consumer's: it comes back after the visibility timeout
                if not self.stopping.is_set():
                    record = ref.frame_record()  # the event carries the index item's fields
                    try:
                        self.show(ref, record.get("stored_at"), record)
                    except ClientError as exc:  # --out: the object went between the event and the read
                        if not object_missing(exc):
                            raise
                        self.skip_gone(ref)
                    last = time.monotonic()
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if self.args.idle_exit and time.monotonic() - last >= self.args.idle_exit:
                return

    def from_index(self) -> None:
        index = self.where.index()
        shown: dict[str, int] = {}  # key -> relative ms, of the frames already shown
        since, last = 0, time.monotonic()
        while not self.stopping.is_set():
            for frame in index.iter_frames(self.args.recording, participant_id=self.args.participant,
                                           frame_type=self.args.type, since=since):
                if frame["s3_key"] in shown or self.stopping.is_set():
                    continue
                shown[frame["s3_key"]] = frame["relative_ms"]
                ref = FrameRef.from_key(self.bucket, frame["s3_key"])
                try:
                    self.show(ref, frame.get("stored_at"), frame)
                except ClientError as exc:  # --out: the object went between the index and the read
                    if not object_missing(exc):
                        raise
                    self.skip_gone(ref)
                last = time.monotonic()
            if shown:
                since = max(0, max(shown.values()) - INDEX_WINDOW_MS)
                shown = {k: ms for k, ms in shown.items() if ms >= since}
            if self.args.idle_exit and time.monotonic() - last >= self.args.idle_exit:
                return
            self.stopping.wait(1.0)


def run(args: argparse.Namespace) -> int:
    from framesink_core.read.query import check_id

    check_id(args.recording, "recording")
    where = target.resolve(args)
    queue_url = None
    if args.source in ("auto", "queue"):
        queue_url = where.state.get("frame_queue_url") if where.local else _stack_queue(where)
        if args.source == "queue" and not queue_url:
            raise CliError("no frame queue: " + ("start `framesink local --frame-queue`" if where.local
                                                 else "deploy with -c frameQueue=true") + ", or use --source index")
    watch = Watch(args, where)
    # Ctrl-C (and SIGTERM) end it cleanly, after the frame being shown.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: watch.stopping.set())
    print(f"framesink: watching recording {args.recording} through the "
          f"{'frame queue' if queue_url else 'index (one Query a second)'}; Ctrl-C stops", file=sys.stderr)
    try:
        watch.from_queue(queue_url) if queue_url else watch.from_index()
    finally:
        if watch.scratch is not None:
            watch.scratch.cleanup()
    print(f"framesink: {watch.seen} frame{'s' if watch.seen != 1 else ''} seen"
          + (f", {watch.skipped} skipped (deleted)" if watch.skipped else ""), file=sys.stderr)
    return 0


def _stack_queue(where: target.Target) -> str | None:
    try:
        return where.stack_outputs().get(OUTPUT_FRAME_QUEUE)
    except CliError:
        return None
