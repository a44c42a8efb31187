"""One websocket message in, one outcome out: the entry point every ingress calls.

Never raises for bad input or a failed store: the caller's connection must stay open.
Each rejection or failure is one structured log line (with ``reason``) and one metric.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

from framesink_core.ingest.audio import AUDIO_EVENTS, parse_audio
from framesink_core.ingest.context_events import CONTEXT_EVENTS, Utterance, parse_context
from framesink_core.ingest.events import Frame, OtherEvent, Rejected, parse_message
from framesink_core.ingest.outlet import MEETING_EVENT
from framesink_core.ingest.png import DEFAULT_MAX_PIXELS
from framesink_core.ingest.spool import SPOOLABLE, Spool
from framesink_core.ingest.storage import FrameConflict, FrameStore, StoreError, resolved
from framesink_core.shared.observability import count, count_with_dimension, logger

STORED, DUPLICATE, IGNORED, REJECTED, FAILED = "stored", "duplicate", "ignored", "rejected", "failed"
# A participant event or a transcript utterance, queued to the index (context_events.py).
RECORDED = "recorded"
# Not stored yet, kept on the receiver's disk and stored when S3 and DynamoDB answer (spool.py).
SPOOLED = "spooled"
# A spooled frame refused this many times while the store took others is failed for good.
POISON_ATTEMPTS = 5


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str | None = None
    key: str | None = None
    frame: Frame | None = None

    @property
    def stored(self) -> bool:
        """True only when the frame is durably in S3 and the index (new or redelivered)."""
        return self.status in (STORED, DUPLICATE)


class Ingestor:
    def __init__(self, store: FrameStore, max_frame_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.store = store
        self.max_frame_bytes = max_frame_bytes
        self.max_pixels = max_pixels
        # The container receiver sets one (spool.py); a Lambda has nowhere to keep a frame.
        self.spool: Spool | None = None
        # recording id -> deleted? (tombstones.DeletedRecordings); None: not checked.
        self.deleted = None

    def parse(self, body: str | bytes) -> Frame | OtherEvent | Outcome:
        """Parse one message; a rejection comes back as an Outcome, already logged and counted."""
        try:
            return parse_message(body, self.max_frame_bytes, self.max_pixels)
        except Rejected as exc:
            return self.reject(exc.reason, exc.detail, message_bytes=len(body), **exc.context)

    @staticmethod
    def reject(reason: str, detail: str, **context) -> Outcome:
        """One log line and one metric for a message that will not be stored."""
        logger.warning("message rejected", extra={"reason": reason, "detail": detail, **context})
        count_with_dimension("MessageRejected", "reason", reason)
        return Outcome(REJECTED, reason)

    def handle(self, body: str | bytes, *, connection_id: str | None = None, bot_id: str | None = None) -> Outcome:
        return self.begin(body, connection_id=connection_id, bot_id=bot_id).result()

    def begin(self, body: str | bytes, *, connection_id: str | None = None, bot_id: str | None = None) -> Future:
        """handle() in two stages (FrameStore.begin_put): parse and the S3 write now, then a
        future of the Outcome, resolved once the index item is durable. The future fails
        only with an unexpected error (a bug), never for bad input or a failed store."""
        accepted = self.accept(body)
        if isinstance(accepted, Outcome):
            return resolved(lambda: accepted)
        return self.begin_store(accepted, connection_id=connection_id, bot_id=bot_id)

    def accept(self, body: str | bytes) -> Frame | Outcome:
        """A message up to the store: the Frame to store, or its final Outcome (rejected or
        ignored, already logged and counted). The receiver calls it in message order."""
        count("MessageReceived")
        parsed = self.parse(body)
        if isinstance(parsed, OtherEvent) and parsed.event in CONTEXT_EVENTS:
            return self.record_context(parsed)
        if isinstance(parsed, OtherEvent) and parsed.event in AUDIO_EVENTS:
            return self.record_audio(parsed)
        if isinstance(parsed, OtherEvent):
            count_with_dimension("EventIgnored", "event", parsed.metric_label)
            return Outcome(IGNORED, parsed.metric_label)
        return parsed

    def record_context(self, parsed: OtherEvent) -> Outcome:
        """A participant event or final utterance to the index: queued (the receiver's batching
        writer; a Lambda's put is done when this returns). A write that fails after the
        writer's retries is one log line and metric; it is not spooled (frames are)."""
        try:
            event = parse_context(parsed.message, parsed.event)
        except Rejected as exc:
            return self.reject(exc.reason, exc.detail, **exc.context)
        ids = {"recording_id": event.recording_id, "participant_id": event.participant_id, "event": parsed.event}
        if self.deleted is not None and self.deleted(event.recording_id):
            return self.reject("recording_deleted", "this recording was deleted (framesink delete); its events are "
                               "not stored", **ids)
        try:
            written = self.store.submit_context(event)
        except StoreError as exc:
            return self._context_failed(exc, ids)

        def settled(future: Future) -> None:
            if future.exception() is not None:
                self._context_failed(future.exception(), ids)
            else:  # durable: say so on the bus (outlet.py)
                self.store.outlet.publish(event.detail(), MEETING_EVENT)

        written.add_done_callback(settled)
        count_with_dimension("ContextRecorded", "kind", "utterance" if isinstance(event, Utterance) else "participant")
        return Outcome(RECORDED, parsed.metric_label)

    def record_audio(self, parsed: OtherEvent) -> Outcome:
        """An audio chunk to the stream's next object (audio.py): buffered in the receiver,
        written now by a Lambda. A write S3 refuses is logged and counted where it fails."""
        try:
            chunk = parse_audio(parsed.message, parsed.event)
        except Rejected as exc:
            return self.reject(exc.reason, exc.detail, **exc.context)
        if self.deleted is not None and self.deleted(chunk.recording_id):
            return self.reject("recording_deleted", "this recording was deleted (framesink delete); its audio is "
                               "not stored", recording_id=chunk.recording_id, participant_id=chunk.participant_id,
                               event=parsed.event)
        written = self.store.audio.add(chunk)  # a failed write is logged and counted by audio.py
        if written is not None and written.done() and written.exception() is not None:
            return Outcome(FAILED, "s3_unavailable")
        count_with_dimension("ContextRecorded", "kind", "audio")
        return Outcome(RECORDED, parsed.metric_label)

    @staticmethod
    def _context_failed(exc: BaseException, ids: dict) -> Outcome:
        from botocore.exceptions import BotoCoreError, ClientError

        reason = (exc.reason if isinstance(exc, StoreError) else "index_unavailable"
                  if isinstance(exc, (ClientError, BotoCoreError)) else "internal_error")
        logger.error("event not stored", extra={"reason": reason, "detail": str(exc)[:300], **ids})
        count_with_dimension("ContextStoreFailed", "reason", reason)
        return Outcome(FAILED, reason)

    def store_frame(self, frame: Frame, *, connection_id: str | None = None, bot_id: str | None = None) -> Outcome:
        return self.begin_store(frame, connection_id=connection_id, bot_id=bot_id).result()

    def begin_store(self, frame: Frame, *, connection_id: str | None = None, bot_id: str | None = None,
                    from_spool: bool = False) -> Future:
        """The store's two stages for a parsed frame. With a spool: while it holds frames, a new
        one joins its back (each stream stays in order); a store failure after retries spools
        the frame (SPOOLED) instead of failing it. ``from_spool``: the spool's own drain, whose
        failures stay FAILED for it to keep the file."""
        ids = {
            "recording_id": frame.recording_id,
            "participant_id": frame.participant_id,
            "frame_type": frame.frame_type,
            "relative_ms": frame.relative_ms,
        }
        if connection_id:
            ids["connection_id"] = connection_id  # the outcome may be logged from another thread
        if from_spool:
            ids["from_spool"] = True
        if self.deleted is not None and self.deleted(frame.recording_id):
            return resolved(lambda: self.reject("recording_deleted", "this recording was deleted (framesink delete); "
                                                "its frames are not stored", **ids))
        spool = None if from_spool else self.spool
        if spool is not None and spool.active:
            return resolved(self._spool, spool, frame, bot_id, connection_id, "spool_backlog", ids)
        started = time.perf_counter()
        try:
            pending = self.store.begin_put(frame, bot_id=bot_id, connection_id=connection_id)
        except (StoreError, FrameConflict) as exc:
            return resolved(self._refused, exc, frame, ids, spool, bot_id, connection_id)
        outcome: Future = Future()

        def finish(stored: Future) -> None:
            try:
                exc = stored.exception()
                outcome.set_result(self._refused(exc, frame, ids, spool, bot_id, connection_id) if exc is not None
                                   else self._stored(stored.result(), frame, ids, started))
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits on it
                outcome.set_exception(error)

        pending.add_done_callback(finish)
        return outcome

    def _refused(self, exc: BaseException, frame: Frame, ids: dict, spool: Spool | None = None,
                 bot_id: str | None = None, connection_id: str | None = None) -> Outcome:
        if isinstance(exc, StoreError) and spool is not None and exc.reason in SPOOLABLE:
            return self._spool(spool, frame, bot_id, connection_id, exc.reason, ids, exc.detail)
        if isinstance(exc, StoreError) and ids.get("from_spool"):  # still down: the file stays, nothing lost
            logger.warning("spooled frame not stored yet", extra={"reason": exc.reason, "detail": exc.detail, **ids})
            return Outcome(FAILED, exc.reason, frame.s3_key, frame)
        if isinstance(exc, StoreError):
            logger.error("frame not stored", extra={"reason": exc.reason, "detail": exc.detail, **ids})
            count_with_dimension("FrameStoreFailed", "reason", exc.reason)
            return Outcome(FAILED, exc.reason, frame.s3_key, frame)
        if isinstance(exc, FrameConflict):
            self.reject(exc.reason, exc.detail, **ids)
            return Outcome(REJECTED, exc.reason, exc.key, frame)
        raise exc  # not a store outcome: a bug, for the caller's internal_error

    @staticmethod
    def _spool(spool: Spool, frame: Frame, bot_id: str | None, connection_id: str | None, reason: str,
               ids: dict, detail: str | None = None) -> Outcome:
        """Keep the frame on disk (SPOOLED), or fail it with ``spool_full`` when it does not fit."""
        if spool.put(frame, bot_id=bot_id, connection_id=connection_id, reason=reason):
            if reason != "spool_backlog":  # the first of an outage: one line per frame that failed
                logger.warning("frame spooled", extra={"reason": reason, "detail": detail, **ids})
            return Outcome(SPOOLED, reason, frame.s3_key, frame)
        logger.error("frame not stored", extra={
            "reason": "spool_full", "detail": f"{reason}; the spool holds {spool.bytes} of {spool.max_bytes} bytes",
            **ids})
        count_with_dimension("FrameStoreFailed", "reason", "spool_full")
        return Outcome(FAILED, "spool_full", frame.s3_key, frame)

    def drain_spool(self, executor, limit: int = 16) -> tuple[int, int]:
        """Store the spool's oldest frames (up to ``limit``, in parallel on ``executor``); each
        one stored, a duplicate or refused for good (a conflict) leaves the spool. A frame that
        keeps failing while others of its batches are stored is not an outage but a frame the
        store refuses (a policy on its key, say): after ``POISON_ATTEMPTS`` such batches it is
        failed for good (logged and counted as any lost frame), so it cannot hold up the rest.
        Returns (frames that left, frames kept because the store still fails): the caller
        backs off when nothing left."""
        spool = self.spool
        batch = spool.oldest(limit)
        futures = [executor.submit(lambda s: self.begin_store(s.frame, connection_id=s.connection_id,
                                                              bot_id=s.bot_id, from_spool=True).result(), item)
                   for item in batch]
        results = []
        for item, future in zip(batch, futures):
            try:
                results.append((item, future.result()))
            except Exception:  # a bug: keep the file, say so, try again later
                logger.exception("spooled frame not stored", extra={"reason": "internal_error"})
                results.append((item, Outcome(FAILED, "internal_error")))
        store_up = any(outcome.status != FAILED for _, outcome in results)
        left = failing = 0
        for item, outcome in results:
            if outcome.status == FAILED:
                if not store_up or spool.attempted(item.path) < POISON_ATTEMPTS:
                    failing += 1
                    continue
                logger.error("frame not stored", extra={
                    "reason": outcome.reason, "s3_key": item.frame.s3_key, "from_spool": True,
                    "detail": f"refused {POISON_ATTEMPTS} times while the store took other frames"})
                count_with_dimension("FrameStoreFailed", "reason", outcome.reason or "internal_error")
            else:
                count("SpoolDrained")
                logger.debug("spooled frame stored", extra={
                    "status": outcome.status, "s3_key": item.frame.s3_key,
                    "spooled_ms": max(0, int(time.time() * 1000) - item.spooled_at_ms)})
            spool.remove(item.path)
            left += 1
        return left, failing

    @staticmethod
    def _stored(result, frame: Frame, ids: dict, started: float) -> Outcome:
        if result.duplicate:
            count("FrameDuplicate")
            if result.repaired:
                logger.info("index item repaired", extra={"s3_key": result.key, **ids})
                count("FrameIndexRepaired")
            logger.debug("duplicate frame", extra={"s3_key": result.key, **ids})
            return Outcome(DUPLICATE, None, result.key, frame)
        count("FrameStored")
        count("FrameBytes", len(frame.png), "Bytes")
        count("StoreLatency", round((time.perf_counter() - started) * 1000, 1), "Milliseconds")
        return Outcome(STORED, None, result.key, frame)

