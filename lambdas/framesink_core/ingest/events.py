"""Recall realtime websocket events: parse and validate one message into a Frame.

Written out by hand rather than with a pydantic model: the rules are few, each failure needs
its own stable reason label (the log line and metric name it), and pydantic's import would
be most of the ingest Lambda's cold start. docs/recall-events.md has the payloads.

Every field is bounded and handled in linear time: orjson parses (it refuses NaN, numbers
that overflow a double, integers beyond 64 bits as integers, lone surrogates and nesting
deeper than 1024; each is ``not_json``), pybase64 decodes strictly (the same alphabet and
padding rules as ``base64.b64decode(validate=True)``, at several times its speed), free text
is cut to a byte budget, and ``timestamp.absolute`` must be a short ISO 8601 timestamp.
"""

from __future__ import annotations

import binascii
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from pybase64 import b64decode

from framesink_core.ingest.png import DEFAULT_MAX_PIXELS, PngError, inspect_png
from framesink_core.shared.schema import FRAME_TYPES, ID_PATTERN, MAX_RELATIVE_MS, frame_key

FRAME_EVENT = "video_separate_png.data"

# Event names a websocket endpoint can subscribe to (docs/recall-events.md). Other names are
# acknowledged too; they are counted as "other" so a metric dimension stays low-cardinality.
KNOWN_EVENTS = frozenset(
    {
        FRAME_EVENT,
        "participant_events.join",
        "participant_events.leave",
        "participant_events.update",
        "participant_events.speech_on",
        "participant_events.speech_off",
        "participant_events.webcam_on",
        "participant_events.webcam_off",
        "participant_events.screenshare_on",
        "participant_events.screenshare_off",
        "participant_events.chat_message",
        "transcript.data",
        "transcript.partial_data",
        "audio_mixed_raw.data",
        "audio_separate_raw.data",
        "video_separate_h264.data",
    }
)

# Caps on free text, in UTF-8 bytes: with ids of at most 128 characters, a frame's S3
# metadata stays under S3's 2 KB (names are URL-quoted there: at most 3x) and its index item
# about 1 KB (one write unit). A longer value is cut at a character boundary, never refused.
MAX_NAME_BYTES = 256
MAX_PLATFORM_BYTES = 64
# timestamp.absolute: ISO 8601 with seconds, optional fraction (<= 9 digits) and an offset.
ABSOLUTE_PATTERN = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
MAX_ABSOLUTE_CHARS = 35


class Rejected(ValueError):
    """A message that cannot be stored. ``reason`` is the stable label for logs and metrics."""

    def __init__(self, reason: str, detail: str, context: dict | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.context = context or {}


@dataclass(frozen=True)
class Frame:
    recording_id: str
    participant_id: str
    participant_name: str | None
    is_host: bool | None
    platform: str | None
    frame_type: str
    relative_ms: int
    absolute: str | None
    bot_id: str | None
    png: bytes
    width: int
    height: int
    fingerprint: str | None = None  # png.PngInfo.fingerprint: None for a frame built elsewhere

    @property
    def s3_key(self) -> str:
        return frame_key(self.recording_id, self.participant_id, self.frame_type, self.relative_ms)


@dataclass(frozen=True)
class OtherEvent:
    """A well-formed message whose event is not a frame: the ingestor stores the meeting's
    context events (context_events.py); the rest are acknowledged, counted, not stored."""

    event: str
    message: dict | None = field(default=None, compare=False, repr=False)

    @property
    def metric_label(self) -> str:
        return self.event if self.event in KNOWN_EVENTS else "other"


def _obj(value, reason: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise Rejected(reason, f"{what} is missing or not an object")
    return value


def _id(value, reason: str, what: str, allow_number: bool = False) -> str:
    if allow_number and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise Rejected(reason, f"{what} {value} is negative")
        value = str(value)
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        shown = repr(value)[:80]
        raise Rejected(reason, f"{what} {shown} does not match [A-Za-z0-9_-]{{1,128}}")
    return value


def envelope(message: dict) -> tuple[dict, dict]:
    """A realtime event's ``data`` and ``data.data`` (every event has both)."""
    outer = _obj(message.get("data"), "missing_data", "'data'")
    return outer, _obj(outer.get("data"), "missing_data", "'data.data'")


def recording_id_of(outer: dict) -> str:
    recording = _obj(outer.get("recording"), "missing_recording", "'data.recording'")
    return _id(recording.get("id"), "bad_recording_id", "recording id")


def participant_of(inner: dict) -> tuple[dict, str]:
    """``data.data.participant`` and its id (Recall sends it as a number)."""
    participant = _obj(inner.get("participant"), "missing_participant", "'data.data.participant'")
    return participant, _id(participant.get("id"), "bad_participant_id", "participant id", allow_number=True)


def media_relative(timestamp: dict) -> float:
    """``timestamp.relative`` of a frame or an audio chunk: a finite number of seconds from 0
    (media flows only while the bot records) to the frames' key range. Compared before any
    multiplying: a huge float times 1000 is inf, and round(inf) raises."""
    relative = timestamp.get("relative")
    if not isinstance(relative, (int, float)) or isinstance(relative, bool) or not math.isfinite(relative) \
            or relative < 0:
        raise Rejected("bad_timestamp", f"timestamp.relative {repr(relative)[:40]} is not a finite number >= 0")
    if relative > (MAX_RELATIVE_MS + 0.5) / 1000:
        raise Rejected("bad_timestamp", f"timestamp.relative {repr(relative)[:40]} is beyond the key range")
    return relative


def decoded_buffer(inner: dict, max_bytes: int, too_large: str, noun: str) -> bytes:
    """``data.data.buffer`` decoded from base64, refused over ``max_bytes`` (reason
    ``too_large``) before decoding (base64 is 4/3 the size of what it carries) and after."""
    buffer = inner.get("buffer")
    if not isinstance(buffer, str) or not buffer:
        raise Rejected("missing_buffer", "'data.data.buffer' is missing or not a string")
    if len(buffer) // 4 * 3 > max_bytes + 3:
        raise Rejected(too_large, f"{noun} is about {len(buffer) // 4 * 3} bytes, over the {max_bytes}-byte maximum")
    try:
        data = b64decode(buffer, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("bad_base64", "'data.data.buffer' is not valid base64") from None
    if len(data) > max_bytes:
        raise Rejected(too_large, f"{noun} is {len(data)} bytes, over the {max_bytes}-byte maximum")
    return data


def bounded_text(value, max_bytes: int) -> str | None:
    """A string cut to ``max_bytes`` of UTF-8 at a character boundary; None if not a string."""
    if not isinstance(value, str):
        return None
    if len(value) * 4 <= max_bytes:  # short enough whatever its characters
        return value
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return value
    return raw[:max_bytes].decode("utf-8", "ignore")


def bot_id_of(outer: dict) -> str | None:
    """``data.bot.id`` of a realtime event: None when absent, Rejected when not an id."""
    bot = outer.get("bot")
    bot_id = bot.get("id") if isinstance(bot, dict) else None
    if bot_id is not None and not (isinstance(bot_id, str) and ID_PATTERN.fullmatch(bot_id)):
        raise Rejected("bad_bot_id", f"bot id {repr(bot_id)[:80]} does not match [A-Za-z0-9_-]{{1,128}}")
    return bot_id


def _absolute(value) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) <= MAX_ABSOLUTE_CHARS and ABSOLUTE_PATTERN.fullmatch(value)):
        raise Rejected("bad_timestamp", f"timestamp.absolute {repr(value)[:60]} is not an ISO 8601 timestamp")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise Rejected("bad_timestamp", f"timestamp.absolute {value!r} is not a valid date and time") from None
    return value


def parse_message(body: str | bytes, max_frame_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame | OtherEvent:
    """Parse one websocket message. Raises Rejected with a reason for anything unstorable."""
    if isinstance(body, (bytes, bytearray)):
        raise Rejected("binary_message", "binary messages are not supported; send JSON text")
    try:
        message = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise Rejected("not_json", f"message is not JSON: {str(exc)[:120]}") from None
    if not isinstance(message, dict):
        raise Rejected("not_json_object", "message is JSON but not an object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise Rejected("missing_event", "message has no string 'event'")
    if event != FRAME_EVENT:
        return OtherEvent(event, message)

    outer = _obj(message.get("data"), "missing_data", "'data'")
    inner = _obj(outer.get("data"), "missing_data", "'data.data'")
    context: dict = {}
    try:
        recording = _obj(outer.get("recording"), "missing_recording", "'data.recording'")
        recording_id = _id(recording.get("id"), "bad_recording_id", "recording id")
        context["recording_id"] = recording_id
        participant = _obj(inner.get("participant"), "missing_participant", "'data.data.participant'")
        participant_id = _id(
            participant.get("id"), "bad_participant_id", "participant id", allow_number=True
        )
        context["participant_id"] = participant_id

        frame_type = inner.get("type")
        if frame_type not in FRAME_TYPES:
            raise Rejected("bad_type", f"type {str(frame_type)[:40]!r} is not webcam or screenshare")

        timestamp = _obj(inner.get("timestamp"), "bad_timestamp", "'data.data.timestamp'")
        relative_ms = min(round(media_relative(timestamp) * 1000), MAX_RELATIVE_MS)
        absolute = _absolute(timestamp.get("absolute"))
        png = decoded_buffer(inner, max_frame_bytes, "frame_too_large", "frame")
        try:
            info = inspect_png(png, max_pixels)
        except PngError as exc:
            raise Rejected(exc.reason, exc.detail) from None

        bot_id = bot_id_of(outer)
        is_host = participant.get("is_host")
        return Frame(
            recording_id=recording_id,
            participant_id=participant_id,
            participant_name=bounded_text(participant.get("name"), MAX_NAME_BYTES),
            is_host=is_host if isinstance(is_host, bool) else None,
            platform=bounded_text(participant.get("platform"), MAX_PLATFORM_BYTES),
            frame_type=frame_type,
            relative_ms=relative_ms,
            absolute=absolute,
            bot_id=bot_id,
            png=png,
            width=info.width,
            height=info.height,
            fingerprint=info.fingerprint,
        )
    except Rejected as exc:
        exc.context = {**context, **exc.context}
        raise
