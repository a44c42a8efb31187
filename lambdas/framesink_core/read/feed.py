"""The live feed: every stored frame is an S3 "Object Created" event on EventBridge.

The frames bucket sends its events to the account's default event bus (no cost for AWS
service events there). An event, trimmed to what a consumer reads::

    {"source": "aws.s3", "detail-type": "Object Created", "time": "2026-11-23T19:00:12Z",
     "detail": {"bucket": {"name": "<frames bucket>"},
                "object": {"key": "recordings/<rec>/participants/<pid>/<type>/<relms10>.png",
                           "size": 212345, "etag": "..."}}}

``FrameRef.from_event`` maps ``detail.object.key`` to the storage contract's parts. Only
stored frames produce events: S3's conditional write refuses duplicates and conflicts
(412: no object created), and rejected messages never reach S3. A frame whose index write
failed after its object landed does produce one (its index item arrives with a redelivery
or ``framesink reindex``).

Rule patterns (EventBridge content filters) for the common subscriptions::

    this recording:   {"detail": {"object": {"key": [{"prefix": "recordings/<rec>/"}]}}}
    screenshare only: {"detail": {"object": {"key": [{"wildcard": "recordings/*/screenshare/*"}]}}}
"""

from __future__ import annotations

from dataclasses import dataclass

from framesink_core.shared import schema

FRAMES_PREFIX = "recordings/"
SCREENSHARE_WILDCARD = "recordings/*/screenshare/*"


def frames_pattern(bucket_name: str, *, wildcard: str | None = None) -> dict:
    """The EventBridge pattern for frames stored in ``bucket_name`` (optionally narrowed)."""
    key = [{"wildcard": wildcard}] if wildcard else [{"prefix": FRAMES_PREFIX}]
    return {"source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [bucket_name]}, "object": {"key": key}}}


@dataclass(frozen=True)
class FrameRef:
    """A stored frame, as an event names it."""

    bucket: str
    key: str
    recording_id: str
    participant_id: str
    frame_type: str
    relative_ms: int
    size: int | None = None
    event_time: str | None = None

    @classmethod
    def from_key(cls, bucket: str, key: str, size: int | None = None, event_time: str | None = None) -> "FrameRef | None":
        match = schema.FRAME_KEY_PATTERN.fullmatch(key)
        if not match:
            return None
        return cls(bucket, key, match["recording_id"], match["participant_id"], match["type"],
                   int(match["relative_ms"]), size, event_time)

    @classmethod
    def from_event(cls, event: dict) -> "FrameRef | None":
        """The frame an S3 Object Created event (EventBridge) names, or None for anything else."""
        if not isinstance(event, dict) or event.get("detail-type") != "Object Created":
            return None
        detail = event.get("detail") or {}
        bucket = (detail.get("bucket") or {}).get("name")
        obj = detail.get("object") or {}
        key = obj.get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            return None
        size = obj.get("size") if isinstance(obj.get("size"), int) else None
        return cls.from_key(bucket, key, size, event.get("time"))

    def matches(self, recording_id: str | None = None, participant_id: str | None = None,
                frame_type: str | None = None) -> bool:
        return ((recording_id is None or self.recording_id == recording_id)
                and (participant_id is None or self.participant_id == participant_id)
                and (frame_type is None or self.frame_type == frame_type))
