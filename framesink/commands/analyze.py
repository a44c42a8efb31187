"""`framesink analyze MODULE:FUNCTION`: run your analyzer on every frame as it is stored, or on a
stored recording (--replay), locally or against a deployed stack (docs/analyzers.md).

Your function takes a frame and returns a dict (written beside the frame: `framesink
results`) or None::

    def analyze(frame):            # frame.participant_name, .type, .relative_ms, .width, ...
        img = frame.image()        # Pillow, decoded once; frame.png() is the PNG's bytes
        return {"mean": sum(img.convert("L").getdata()) / (img.width * img.height)}

MODULE is imported from the current directory (or your PYTHONPATH); the module's name is the
analyzer's name (its results' prefix) unless --name says otherwise.

Live: the command subscribes the analyzer to the stack's frame bus with a queue of its own
(an EventBridge rule, a queue that only that rule may send to, encrypted, and a dead-letter
queue after --tries receives), reads it with --workers threads, and removes the
subscription when it stops (--keep leaves it, so frames stored meanwhile wait for the next
run). A function that raises gets its frame back after a back-off; after --tries, the frame
waits in the dead-letter queue.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from framesink_core.analyze.kit import AnalyzerError, Context, Runner, analyzer_name, load
from framesink_core.analyze.worker import AnalyzerPool
from framesink_core.read.feed import FrameRef, frames_pattern
from framesink_core.shared import schema

from .. import target
from ..cli import CliError
from ..subscription import Subscription, frame_bus
from ..output import printable

def register(sub) -> None:
    p = sub.add_parser("analyze", help="run your analyze(frame) function on frames as they are stored",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="MODULE:FUNCTION", help="your analyzer, e.g. faces:analyze")
    p.add_argument("--name", help="the analyzer's name, its results' prefix (default: the module's name)")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="frames analyzed at once (default 4)")
    p.add_argument("--novel-only", action="store_true",
                   help="only frames the novelty function flagged novel (its \"Frame Scored\" events)")
    p.add_argument("--latest-only", action="store_true",
                   help="for a model slower than the frames: each participant's newest frame only, older waiting "
                   "ones dropped")
    p.add_argument("--replay", metavar="RECORDING", help="run on a stored recording's frames instead, then stop")
    p.add_argument("--recording", metavar="R", help="live: only this recording's frames")
    p.add_argument("--type", choices=list(schema.FRAME_TYPES), help="only this type of frame")
    p.add_argument("--tries", type=int, default=5, metavar="N",
                   help="runs of a frame whose function raises before it goes to the dead-letter queue (default 5)")
    p.add_argument("--keep", action="store_true", help="leave the subscription when stopping")
    p.add_argument("--json", action="store_true", help="one JSON object per frame, and a JSON summary")
    p.add_argument("--quiet", action="store_true", help="no line per frame, only the summary")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS", help="stop after this long without a frame")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from framesink_core.read.query import check_id

    if args.workers < 1 or args.tries < 1:
        raise CliError("--workers and --tries must be at least 1")
    for value, what in ((args.replay, "recording"), (args.recording, "recording")):
        if value is not None:
            check_id(value, what)
    if args.replay and args.latest_only:
        raise CliError("--latest-only drops frames waiting behind newer ones; a replay has none waiting (leave it out)")
    try:
        name, fn = load(args.spec, search_path=Path.cwd())
        name = analyzer_name(args.name) if args.name else name
    except AnalyzerError as exc:
        raise CliError(str(exc)) from None
    where = target.resolve(args)
    ctx = Context(where.bucket, where.table, where.client("s3"), where.client("dynamodb"), where.frame_expiry_days())
    runner = Runner(name, fn, ctx)
    out = Printer(args, name)
    pool = AnalyzerPool(runner, workers=args.workers, latest_only=args.latest_only, on_outcome=out.frame)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: pool.stopping.set())

    if args.replay:
        index = where.index()
        frames = index.iter_frames(args.replay, frame_type=args.type, novel=args.novel_only)
        refs = (FrameRef.from_key(where.bucket, f["s3_key"], f.get("bytes"), None, f) for f in frames)
        print(f"framesink: analyzer {name} on recording {args.replay}'s stored frames", file=sys.stderr)
        stats = pool.run_frames(r for r in refs if r is not None)
        out.summary(stats, None, replay=True)
        return 0

    bus = frame_bus(where, "or use --replay")
    pattern = frames_pattern(recording_id=args.recording, frame_type=args.type, novel_only=args.novel_only)
    subscription = Subscription(where, bus, name, [pattern], args.tries)
    print(f"framesink: analyzer {name} subscribed to {'novel' if args.novel_only else 'every'} "
          f"{args.type + ' ' if args.type else ''}frame{' of recording ' + args.recording if args.recording else ''} "
          f"({args.workers} worker{'s' if args.workers != 1 else ''}{', latest only' if args.latest_only else ''}); "
          f"Ctrl-C stops", file=sys.stderr)
    try:
        stats = pool.run_queue(subscription.sqs, subscription.url, idle_exit=args.idle_exit,
                               max_frames=args.max_frames)
        out.summary(stats, subscription.dead_letters())
    finally:
        if args.keep:
            print(f"framesink: kept the subscription (rule and queue {subscription.name})", file=sys.stderr)
        else:
            subscription.remove()
    return 0


class Printer:
    def __init__(self, args: argparse.Namespace, name: str):
        self.args, self.name = args, name
        self._lock = threading.Lock()  # lines come from every worker thread: one at a time

    def frame(self, ref: FrameRef, outcome, lag_ms: float | None) -> None:
        if self.args.quiet:
            return
        if self.args.json:
            line = json.dumps({"analyzer": self.name, **ref.frame_record(), "status": outcome.status,
                               "reason": outcome.reason, "result": outcome.result,
                               "lag_ms": None if lag_ms is None else round(lag_ms, 1),
                               "function_ms": round(outcome.ms, 1)}, ensure_ascii=False, default=str)
        else:
            now = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            lag = f"{lag_ms / 1000:.2f} s" if lag_ms is not None else "?"
            what = (json.dumps(outcome.result, ensure_ascii=False)[:120] if outcome.status == "result"
                    else outcome.status if outcome.status == "nothing"
                    else f"{outcome.status}: {outcome.reason} {outcome.detail or ''}".strip())
            line = (f"{now}  {ref.recording_id} {ref.participant_id:>6} {ref.frame_type:<11} "
                    f"{ref.relative_ms / 1000:>9.3f} s  lag {lag:>8}  {printable(what)}")
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def summary(self, stats, dead_letters: int | None, replay: bool = False) -> None:
        summary = {"analyzer": self.name, **stats.summary()}
        if dead_letters is not None:
            summary["dead_letters"] = dead_letters
        if self.args.json:
            print(json.dumps({"summary": summary}), flush=True)
            return
        lag = None if replay else stats.summary()["lag_ms"]  # a replayed frame was stored long ago
        print(f"framesink: {self.name}: {stats.results} result{'s' if stats.results != 1 else ''}, "
              f"{stats.nothing} without one"
              + (f", skipped {dict(stats.skipped)}" if stats.skipped else "")
              + (f", {stats.failed} failed run{'s' if stats.failed != 1 else ''} (tried again)" if stats.failed else "")
              + (f", {stats.superseded} superseded (--latest-only)" if stats.superseded else "")
              + (f", {dead_letters} in the dead-letter queue" if dead_letters else "")
              + (f"; stored -> analyzed p50 {lag['p50']:.0f} ms, p99 {lag['p99']:.0f} ms" if lag else ""),
              file=sys.stderr, flush=True)
