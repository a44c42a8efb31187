"""The live feed: one "Frame Stored" event per durable frame, published by the ingress that
stored it on the stack's event bus (ingest/outlet.py has when and how). An event::

    {"source": "framesink", "detail-type": "Frame Stored", "time": "2026-11-23T19:00:12Z",
     "detail": {"bucket": "<frames bucket>",
                "key": "recordings/<rec>/participants/<pid>/<type>/<relms10>.png",
                "recording_id": "<rec>", "participant_id": "<pid>", "participant_name": "Ada",
                "is_host": true, "platform": "desktop", "type": "webcam", "relative_ms": 12500,
                "absolute": "...", "width": 480, "height": 360, "bytes": 212345,
                "stored_at": 1796417237341, "bot_id": "...", "connection_id": "..."}}

The novelty function (analyze/novelty.py) answers each with a "Frame Scored" event: the same
detail plus ``novel`` (true/false), ``change_score`` and ``novel_reason``.

``frames_pattern`` builds the rule pattern for a subscription (a recording, participants,
a type, novel frames only); ``FrameRef.from_event`` reads an event back, trusting only a key that follows the
storage contract (its parts must agree with the ids the event names).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framesink_core.ingest.outlet import FRAME_SCORED, FRAME_STORED, SOURCE
from framesink_core.shared import schema

FRAMES_PREFIX = "recordings/"


def frames_pattern(*, recording_id: str | None = None, participant_ids: list[str] | None = None,
                   frame_type: str | None = None, novel_only: bool = False) -> dict:
    """The EventBridge pattern for frame events, optionally narrowed (each field an exact
    match; give a rule its stack's bus, which only this stack's publishers may put events on).
    ``novel_only``: the novelty function's "Frame Scored" events of novel frames instead of
    every "Frame Stored" one."""
    detail: dict[str, list] = {"novel": [True]} if novel_only else {}
    if recording_id:
        detail["recording_id"] = [recording_id]
    if participant_ids:
        detail["participant_id"] = list(participant_ids)
    if frame_type:
        detail["type"] = [frame_type]
    pattern: dict = {"source": [SOURCE], "detail-type": [FRAME_SCORED if novel_only else FRAME_STORED]}
    if detail:
        pattern["detail"] = detail
    return pattern


@dataclass(frozen=True)
class FrameRef:
    """A stored frame, as an event names it; ``record`` is the event's whole detail."""

    bucket: str
    key: str
    recording_id: str
    participant_id: str
    frame_type: str
    relative_ms: int
    size: int | None = None
    event_time: str | None = None
    record: dict | None = field(default=None, compare=False, hash=False)

    @classmethod
    def from_key(cls, bucket: str, key: str, size: int | None = None, event_time: str | None = None,
                 record: dict | None = None) -> "FrameRef | None":
        match = schema.FRAME_KEY_PATTERN.fullmatch(key)
        if not match:
            return None
        return cls(bucket, key, match["recording_id"], match["participant_id"], match["type"],
                   int(match["relative_ms"]), size, event_time, record)

    @classmethod
    def from_event(cls, event: dict) -> "FrameRef | None":
        """The frame a "Frame Stored" (or "Frame Scored") event names, or None for anything else
        (another event, a key outside the contract, ids that disagree with the key)."""
        if (not isinstance(event, dict) or event.get("detail-type") not in (FRAME_STORED, FRAME_SCORED)
                or event.get("source") != SOURCE):
            return None
        detail = event.get("detail")
        if not isinstance(detail, dict):
            return None
        bucket, key = detail.get("bucket"), detail.get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            return None
        size = detail.get("bytes") if isinstance(detail.get("bytes"), int) else None
        ref = cls.from_key(bucket, key, size, event.get("time"), detail)
        if ref is None or (detail.get("recording_id"), detail.get("participant_id"), detail.get("type")) != (
                ref.recording_id, ref.participant_id, ref.frame_type):
            return None
        return ref

    def frame_record(self) -> dict:
        """The frame in the index's public shape (query.frame_record: `frames --json`, the
        HTTP API), from the event alone: a consumer needs no read to know what it got."""
        from framesink_core.read.query import FRAME_FIELDS, NOVELTY_FIELDS

        detail = self.record or {}
        record = {name: detail.get(name) for name in FRAME_FIELDS}
        record.update({name: detail.get(name) for name in NOVELTY_FIELDS})
        record.update(recording_id=self.recording_id, participant_id=self.participant_id, type=self.frame_type,
                      relative_ms=self.relative_ms, s3_key=self.key)
        return record

    def matches(self, recording_id: str | None = None, participant_id: str | None = None,
                frame_type: str | None = None) -> bool:
        return ((recording_id is None or self.recording_id == recording_id)
                and (participant_id is None or self.participant_id == participant_id)
                and (frame_type is None or self.frame_type == frame_type))
