"""Where a kit analyzer runs outside Lambda: a pool of workers reading the analyzer's own SQS
queue (`framesink analyze`, and the container service the ``analyzers`` setting deploys), or
a stored recording replayed through it (``--replay``).

- Bounded concurrency: ``workers`` threads run the function; the reader takes no more
  messages than the workers can start on (backpressure: frames wait in the queue, not here).
- Retries: a frame whose function raised goes back to the queue after a back-off that
  doubles with each receive; the queue's redrive (maxReceiveCount) then moves it to its
  dead-letter queue. Skipped frames (deleted, undecodable, a result too large) are done.
- ``latest_only``: the reader keeps reading while the workers are busy and holds only each
  stream's (participant, type) newest frame; an older one still waiting is dropped
  (deleted from the queue, counted ``superseded``), and so is one older than the stream's
  last analyzed frame. A model slower than the frame rate then analyzes the present, not a
  backlog that grows.

Hand-written rather than a library's: what it needs is SQS's own semantics (visibility,
receive count, redrive), ~150 lines over boto3; Powertools' batch processor handles the
Lambda SQS event shape, not a long-running reader.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from framesink_core.analyze.kit import Outcome, Runner
from framesink_core.read.feed import FrameRef
from framesink_core.shared.observability import logger

MAX_BACKOFF_SECONDS = 300


@dataclass
class Stats:
    results: int = 0
    nothing: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> frames
    failed: int = 0  # function runs that raised (each frame tried again)
    superseded: int = 0  # --latest-only: older frames of a stream dropped unanalyzed
    lags_ms: list[float] = field(default_factory=list)  # durable (stored_at) -> function called
    function_ms: list[float] = field(default_factory=list)

    @property
    def analyzed(self) -> int:
        return self.results + self.nothing

    def summary(self) -> dict:
        return {"results": self.results, "nothing": self.nothing, "skipped": dict(self.skipped),
                "failed_runs": self.failed, "superseded": self.superseded,
                "lag_ms": percentiles(self.lags_ms), "function_ms": percentiles(self.function_ms)}


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 1), "n": len(ordered)}


@dataclass
class _Job:
    ref: FrameRef
    message: dict | None  # None: a replayed frame
    stream: tuple
    attempt: int = 1


class AnalyzerPool:
    """Runs ``runner`` on frames with ``workers`` threads; ``on_outcome(ref, outcome, lag_ms)``
    is called (from a worker) after each frame."""

    def __init__(self, runner: Runner, *, workers: int = 4, latest_only: bool = False,
                 on_outcome: Callable[[FrameRef, Outcome, float | None], None] | None = None,
                 retry_seconds: float = 2.0):
        self.runner = runner
        self.workers = max(1, workers)
        self.latest_only = latest_only
        self.on_outcome = on_outcome
        self.retry_seconds = retry_seconds
        self.stats = Stats()
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._fifo: deque[_Job] = deque()
        self._latest: OrderedDict[tuple, _Job] = OrderedDict()  # latest_only: stream -> its newest waiting frame
        self._done_ms: dict[tuple, int] = {}  # latest_only: stream -> the newest relative_ms taken
        self._busy = 0
        self._last_activity = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._settle: Callable[[_Job, bool], None] = lambda job, ok: None

    # --- the pool ---------------------------------------------------------------------------

    def _start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"analyzer-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _join(self) -> None:
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join()

    def waiting(self) -> int:
        with self._lock:
            return len(self._fifo) + len(self._latest)

    def _put(self, job: _Job) -> None:
        dropped = None
        with self._lock:
            if self.latest_only:
                if job.ref.relative_ms <= self._done_ms.get(job.stream, -1):
                    dropped = job  # older than what the stream already had analyzed
                else:
                    older = self._latest.pop(job.stream, None)
                    if older is not None and older.ref.relative_ms > job.ref.relative_ms:
                        older, job = job, older
                    dropped = older
                    self._latest[job.stream] = job
            else:
                self._fifo.append(job)
            if dropped is not None:
                self.stats.superseded += 1
            self._lock.notify()
        if dropped is not None:  # its deletion from the queue, outside the lock the workers take jobs under
            self._settle(dropped, True)

    def _take(self) -> _Job | None:
        with self._lock:
            while not self._fifo and not self._latest:
                if self.stopping.is_set():
                    return None
                self._lock.wait(0.2)
            if self._fifo:
                job = self._fifo.popleft()
            else:
                _, job = self._latest.popitem(last=False)  # the stream waiting longest
                self._done_ms[job.stream] = max(job.ref.relative_ms, self._done_ms.get(job.stream, -1))
            self._busy += 1
            return job

    def _work(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            ok = True
            try:
                stored_at = (job.ref.record or {}).get("stored_at")
                lag = time.time() * 1000 - stored_at if isinstance(stored_at, (int, float)) else None
                try:
                    outcome = self.runner.run(job.ref)
                except Exception as exc:  # noqa: BLE001 - the function's (or AWS's) trouble: retried
                    ok = False
                    with self._lock:
                        self.stats.failed += 1
                    logger.warning("analyzer failed on a frame; it will be tried again",
                                   extra={"analyzer": self.runner.name, "key": job.ref.key, "attempt": job.attempt,
                                          "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                    outcome = Outcome("failed", reason="error", detail=f"{type(exc).__name__}: {str(exc)[:300]}")
                else:
                    self.runner.report(outcome)
                    with self._lock:
                        if outcome.status == "result":
                            self.stats.results += 1
                        elif outcome.status == "nothing":
                            self.stats.nothing += 1
                        else:
                            self.stats.skipped[outcome.reason or "unknown"] += 1
                        if lag is not None:
                            self.stats.lags_ms.append(lag)
                        self.stats.function_ms.append(outcome.ms)
                if self.on_outcome is not None:
                    self.on_outcome(job.ref, outcome, lag)
                self._settle(job, ok)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._last_activity = time.monotonic()
                    self._lock.notify_all()

    def _idle(self) -> bool:
        with self._lock:
            return not self._fifo and not self._latest and not self._busy

    # --- sources ----------------------------------------------------------------------------

    def run_queue(self, sqs, queue_url: str, *, visibility_seconds: int = 120, idle_exit: float | None = None,
                  max_frames: int | None = None) -> Stats:
        """Read the queue until ``stopping`` is set (or ``idle_exit`` seconds without a frame,
        or ``max_frames`` analyzed)."""

        def settle(job: _Job, ok: bool) -> None:
            if ok:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=job.message["ReceiptHandle"])
                return
            receives = int(job.message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=job.message["ReceiptHandle"],
                VisibilityTimeout=int(min(MAX_BACKOFF_SECONDS, self.retry_seconds * 2 ** (receives - 1))))

        self._settle = settle
        self._start()
        try:
            while not self.stopping.is_set():
                if max_frames and self.stats.analyzed + sum(self.stats.skipped.values()) >= max_frames:
                    break
                with self._lock:
                    room = 10 if self.latest_only else self.workers - self._busy - len(self._fifo)
                    if room <= 0:  # backpressure: every worker busy, nothing more taken from the queue
                        self._lock.wait(0.2)
                        continue
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=min(10, room),
                                               WaitTimeSeconds=1, VisibilityTimeout=visibility_seconds,
                                               AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
                for message in messages:
                    ref = _ref_of(message.get("Body"))
                    if ref is None or ref.bucket != self.runner.ctx.bucket:  # not a frame event: nothing to retry, say so and drop it
                        self.runner.report(Outcome("skipped", reason="not_a_frame", detail="not a frame event"))
                        with self._lock:
                            self.stats.skipped["not_a_frame"] += 1
                        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                        continue
                    self._put(_Job(ref, message, _stream(ref)))
                if messages:
                    with self._lock:
                        self._last_activity = time.monotonic()
                if idle_exit and self._idle() and time.monotonic() - self._last_activity >= idle_exit:
                    break
        finally:
            self.stopping.set()
            self._join()
        return self.stats

    def run_frames(self, refs, *, tries: int = 3) -> Stats:
        """Feed frames (an iterable of FrameRef: a replayed recording) through the function,
        ``tries`` times each at most; returns once every one is done."""

        def settle(job: _Job, ok: bool) -> None:
            if not ok and job.attempt < tries and not self.stopping.is_set():
                time.sleep(min(MAX_BACKOFF_SECONDS, self.retry_seconds * 2 ** (job.attempt - 1)))
                self._put(_Job(job.ref, None, job.stream, job.attempt + 1))

        self._settle = settle
        self._start()
        try:
            for ref in refs:
                if self.stopping.is_set():
                    break
                with self._lock:  # backpressure: the index is read as fast as the workers go
                    while len(self._fifo) >= self.workers and not self.stopping.is_set():
                        self._lock.wait(0.2)
                self._put(_Job(ref, None, _stream(ref)))
            while not self._idle() and not self.stopping.is_set():
                time.sleep(0.05)
        finally:
            self.stopping.set()
            self._join()
        return self.stats


def _stream(ref: FrameRef) -> tuple:
    """What --latest-only keeps one frame of: a participant's frames of one type, and apart
    from them the same stream's "Frame Scored" events (a subscriber of both keeps each)."""
    return ref.recording_id, ref.participant_id, ref.frame_type, (ref.record or {}).get("novel") is not None


def _ref_of(body) -> FrameRef | None:
    try:
        return FrameRef.from_event(json.loads(body))
    except (TypeError, ValueError):
        return None


def main() -> int:
    """The container analyzer (infra/analyzers.py): ``FRAMESINK_ANALYZER`` (module:function),
    ``FRAMESINK_ANALYZER_NAME``, ``FRAMESINK_ANALYZER_QUEUE_URL``, ``FRAMESINK_ANALYZER_WORKERS``,
    ``FRAMESINK_ANALYZER_LATEST_ONLY`` and the core's settings (bucket, table) from the task's
    environment. SIGTERM (ECS stopping the task) lets the frames being analyzed finish; the
    ones not yet taken stay in the queue for another task."""
    import os
    import signal

    import boto3

    from framesink_core.analyze.kit import Context, load
    from framesink_core.shared.items import BOTO_CONFIG
    from framesink_core.shared.observability import flush_metrics
    from framesink_core.shared.settings import Settings

    name, fn = load(os.environ["FRAMESINK_ANALYZER"])
    s = Settings.from_env()
    ctx = Context(s.bucket, s.table, boto3.client("s3", config=BOTO_CONFIG), boto3.client("dynamodb", config=BOTO_CONFIG),
                  s.frame_expiry_days, settings=s)
    runner = Runner(os.environ.get("FRAMESINK_ANALYZER_NAME") or name, fn, ctx)
    pool = AnalyzerPool(runner, workers=int(os.environ.get("FRAMESINK_ANALYZER_WORKERS", "4")),
                        latest_only=os.environ.get("FRAMESINK_ANALYZER_LATEST_ONLY", "").lower() == "true")
    signal.signal(signal.SIGTERM, lambda *_: pool.stopping.set())

    def flush_every_minute() -> None:  # metrics are EMF lines on stdout, as in the receiver
        while not pool.stopping.wait(60):
            flush_metrics()

    threading.Thread(target=flush_every_minute, name="metrics", daemon=True).start()
    logger.info("analyzer started", extra={"analyzer": runner.name, "workers": pool.workers,
                                           "latest_only": pool.latest_only})
    stats = pool.run_queue(boto3.client("sqs", config=BOTO_CONFIG), os.environ["FRAMESINK_ANALYZER_QUEUE_URL"])
    flush_metrics()
    logger.info("analyzer stopped", extra={"analyzer": runner.name, **stats.summary()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
