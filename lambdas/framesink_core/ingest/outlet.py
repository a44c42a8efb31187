"""Frame events: once a frame is durable (its object and its index item), the ingress that
stored it says so on EventBridge, so consumers hear of it within a second instead of waiting
for S3's event notification ("typically in seconds but can sometimes take a minute or
longer", S3 User Guide, EventBridge notifications). docs/live-feed.md has the event, its rule
patterns (read/feed.py builds them) and each hop's latency.

Only frames this call made durable produce an event: a new frame, or a redelivery whose first
writer died between S3 and the index (its item is written now, so it is new to consumers).
Rejected, duplicate and conflicting frames produce none. The event carries everything a
consumer needs without another read but the pixels (PutEvents takes at most 256 KB): the
object's bucket and key, the ids, times, size and who sent it.

Two publishers, one event:
- ``BatchingOutlet`` (the container receiver): a thread sends up to 10 entries per PutEvents
  (its limit) as soon as 10 wait or the oldest has waited ``max_wait`` (20 ms), so an event
  leaves at most 20 ms plus one call after its frame is durable, and a busy receiver makes
  one call per ten frames.
- ``DirectOutlet`` (a Lambda function): one PutEvents per frame, before the invocation ends.

Entries EventBridge refuses (``FailedEntryCount``: throttling, an internal error) are sent
again with backoff; an event still refused after ``max_attempts`` is logged (reason
``event_publish_failed``) and counted (``FrameEventFailed``, alarmed). The frame itself stays
stored and indexed: `framesink watch --source index` and the index's queries still find it.
"""

from __future__ import annotations

import random
import threading
import time

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from framesink_core.ingest.stored_frame import StoredFrame
from framesink_core.shared.objects import describe_client_error
from framesink_core.shared.observability import count, count_with_dimension, logger

SOURCE = "framesink"
FRAME_STORED = "Frame Stored"
# The novelty function's event for the same frame: its "Frame Stored" detail plus novel,
# change_score and novel_reason (analyze/novelty.py); subscribe to it for novel frames only.
FRAME_SCORED = "Frame Scored"
# The meeting's context on the same bus, once durable: a participant event or a final
# utterance (its index item's fields, ingest/context_events.py), and each audio object
# (ingest/audio.py). Frame rules match "Frame Stored" only, so these reach only the rules
# that ask for them (docs/live-feed.md).
MEETING_EVENT = "Meeting Event"
AUDIO_STORED = "Audio Stored"
MAX_ENTRIES = 10  # PutEvents' limit per request
DEFAULT_MAX_WAIT = 0.02
DEFAULT_MAX_ATTEMPTS = 4


def frame_event(record: StoredFrame, bucket: str) -> dict:
    """The event's ``detail``: the frame as its index item has it, and where its bytes are."""
    return {
        "bucket": bucket,
        "key": record.key,
        "recording_id": record.recording_id,
        "participant_id": record.participant_id,
        "participant_name": record.participant_name,
        "is_host": record.is_host,
        "platform": record.platform,
        "type": record.frame_type,
        "relative_ms": record.relative_ms,
        "absolute": record.absolute,
        "width": record.width,
        "height": record.height,
        "bytes": record.size,
        "stored_at": record.stored_at,
        "bot_id": record.bot_id,
        "connection_id": record.connection_id,
    }


def entry(bus: str, detail: dict, detail_type: str = FRAME_STORED) -> dict:
    return {"Source": SOURCE, "DetailType": detail_type, "Detail": orjson.dumps(detail).decode(),
            "EventBusName": bus}


class Outlet:
    """No event bus configured: nothing is published."""

    def publish(self, detail: dict, detail_type: str = FRAME_STORED) -> None:
        pass

    def idle(self) -> bool:
        """True when every event published so far has been sent (or given up on)."""
        return True

    def close(self) -> None:
        pass


class DirectOutlet(Outlet):
    """One PutEvents per frame, in the caller's thread (a Lambda invocation)."""

    def __init__(self, events, bus: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS, sleep=time.sleep):
        self.events, self.bus, self.max_attempts, self._sleep = events, bus, max_attempts, sleep

    def publish(self, detail: dict, detail_type: str = FRAME_STORED) -> None:
        send(self.events, [entry(self.bus, detail, detail_type)], self.max_attempts, self._sleep)


class BatchingOutlet(Outlet):
    """Up to 10 events per PutEvents, each waiting at most ``max_wait`` (the receiver)."""

    def __init__(self, events, bus: str, *, max_wait: float = DEFAULT_MAX_WAIT,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, sleep=time.sleep):
        self.events, self.bus, self.max_wait, self.max_attempts, self._sleep = events, bus, max_wait, max_attempts, sleep
        self._cond = threading.Condition()
        self._queue: list[tuple[float, dict]] = []
        self._closing = False
        self._sending = 0
        self.requests = 0  # PutEvents calls made (tests, benchmarks)
        self._thread = threading.Thread(target=self._run, name="frame-events", daemon=True)
        self._thread.start()

    def publish(self, detail: dict, detail_type: str = FRAME_STORED) -> None:
        item = (time.monotonic(), entry(self.bus, detail, detail_type))
        with self._cond:
            if self._closing:  # a frame stored during the last moments of a shutdown
                logger.error("frame event not published", extra={
                    "reason": "event_publish_failed", "s3_key": detail.get("key"), "detail": "the outlet is closed"})
                count_with_dimension("FrameEventFailed", "reason", "closed")
                return
            self._queue.append(item)
            if len(self._queue) == 1 or len(self._queue) >= MAX_ENTRIES:
                self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._sending

    def close(self) -> None:
        """Send what is queued, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _next_batch(self) -> list[dict] | None:
        with self._cond:
            while True:
                if self._queue:
                    wait = self._queue[0][0] + self.max_wait - time.monotonic()
                    if len(self._queue) >= MAX_ENTRIES or wait <= 0 or self._closing:
                        batch, self._queue = self._queue[:MAX_ENTRIES], self._queue[MAX_ENTRIES:]
                        self._sending += 1
                        return [e for _, e in batch]
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self.requests += 1
            try:
                send(self.events, batch, self.max_attempts, self._sleep)
            except Exception:  # never stop publishing: a bug here must not end the feed
                logger.exception("frame events not published", extra={"reason": "internal_error",
                                                                        "events": len(batch)})
                for _ in batch:
                    count_with_dimension("FrameEventFailed", "reason", "internal_error")
            finally:
                with self._cond:
                    self._sending -= 1


def send(events, entries: list[dict], max_attempts: int, sleep=time.sleep) -> None:
    """PutEvents, sending again what EventBridge refused; what it still refuses is logged."""
    reason = "unknown"
    for attempt in range(max_attempts):
        try:
            answer = events.put_events(Entries=entries)
        except (ClientError, BotoCoreError) as exc:  # after botocore's own retries
            reason = describe_client_error(exc)
        else:
            results = answer.get("Entries") or []
            if not answer.get("FailedEntryCount"):
                count("FrameEventPublished", len(entries))
                return
            failed = [(e, r) for e, r in zip(entries, results) if r.get("ErrorCode")]
            count("FrameEventPublished", len(entries) - len(failed))
            reason = failed[0][1].get("ErrorCode") if failed else "unknown"
            entries = [e for e, _ in failed]
        if attempt + 1 < max_attempts:
            sleep(min(1.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
    for e in entries:
        logger.error("frame event not published", extra={
            "reason": "event_publish_failed", "detail": str(reason)[:200],
            "s3_key": orjson.loads(e["Detail"]).get("key")})
        count_with_dimension("FrameEventFailed", "reason", "rejected")
