"""The meeting's other events on the same socket: participant events (join, leave, update,
speech on/off, webcam and screenshare on/off, chat) and final transcript utterances, parsed and
bounded like frames (docs/recall-events.md, docs/storage.md "Context items").

Each becomes one item in the recording's partition, on the frames' clock (``relative`` seconds
from the recording's start, which Recall sends **negative** for events before the recording
started): ``PEV#<t>#<pid>#<kind>`` and ``UTT#<t>#<pid>``, where ``<t>`` is the relative time in
ms plus OFFSET_MS as 11 digits, so negative times sort before zero. A redelivered event writes
the same key with the same content. Partial transcripts (``transcript.partial_data``) are not
stored: each is superseded by a final one within seconds.

Bounds: at most MAX_WORDS words per utterance, each word's text cut to MAX_WORD_BYTES and the
utterance's text to MAX_UTTERANCE_BYTES; a chat message to MAX_CHAT_BYTES; times between
MIN_RELATIVE_MS and the frames' key range. Every check is linear in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from framesink_core.ingest.events import (
    KNOWN_EVENTS,
    MAX_NAME_BYTES,
    Rejected,
    _absolute,
    _obj,
    bot_id_of,
    bounded_text,
    envelope,
    participant_of,
    recording_id_of,
)
from framesink_core.shared import schema

PARTICIPANT_PREFIX = "participant_events."
# join, leave, update, speech_on/off, webcam_on/off, screenshare_on/off, chat_message: the names
# events.KNOWN_EVENTS lists (the one list of what Recall sends)
PARTICIPANT_KINDS = frozenset(e[len(PARTICIPANT_PREFIX):] for e in KNOWN_EVENTS if e.startswith(PARTICIPANT_PREFIX))
TRANSCRIPT_EVENT = "transcript.data"
CONTEXT_EVENTS = frozenset({*(PARTICIPANT_PREFIX + k for k in PARTICIPANT_KINDS), TRANSCRIPT_EVENT})

OFFSET_MS = 10**10  # keys hold relative ms + this: negative times (before recording) still sort first
MIN_RELATIVE_MS = -24 * 3600 * 1000  # a day before the recording started: nothing real is earlier
MAX_WORDS = 5000  # ~30 minutes of speech in one utterance
MAX_WORD_BYTES = 128
MAX_UTTERANCE_BYTES = 32 * 1024  # the item stays far under DynamoDB's 400 KB
MAX_CHAT_BYTES = 4 * 1024


def time_text(relative_ms: int) -> str:
    return f"{relative_ms + OFFSET_MS:011d}"


def participant_event_sk(relative_ms: int, participant_id: str, kind: str) -> str:
    return f"PEV#{time_text(relative_ms)}#{participant_id}#{kind}"


def utterance_sk(start_ms: int, participant_id: str) -> str:
    return f"UTT#{time_text(start_ms)}#{participant_id}"


@dataclass(frozen=True)
class ParticipantEvent:
    recording_id: str
    participant_id: str
    participant_name: str | None
    kind: str  # join, leave, ..., chat_message
    relative_ms: int
    absolute: str | None
    text: str | None  # a chat message's
    bot_id: str | None

    def item(self, expires_at: int | None) -> dict:
        return _with_expiry({
            "pk": schema.recording_pk(self.recording_id),
            "sk": participant_event_sk(self.relative_ms, self.participant_id, self.kind),
            "kind": "participant_event", "event": self.kind, "recording_id": self.recording_id,
            "participant_id": self.participant_id, "participant_name": self.participant_name,
            "relative_ms": self.relative_ms, "absolute": self.absolute, "text": self.text, "bot_id": self.bot_id,
        }, expires_at)

    def detail(self) -> dict:
        return _detail(self)


@dataclass(frozen=True)
class Utterance:
    recording_id: str
    participant_id: str
    participant_name: str | None
    start_ms: int
    end_ms: int
    text: str
    words: int
    bot_id: str | None

    def item(self, expires_at: int | None) -> dict:
        return _with_expiry({
            "pk": schema.recording_pk(self.recording_id), "sk": utterance_sk(self.start_ms, self.participant_id),
            "kind": "utterance", "recording_id": self.recording_id, "participant_id": self.participant_id,
            "participant_name": self.participant_name, "start_ms": self.start_ms, "end_ms": self.end_ms,
            "text": self.text, "words": self.words, "bot_id": self.bot_id,
        }, expires_at)

    def detail(self) -> dict:
        return _detail(self)


ContextEvent = ParticipantEvent | Utterance


def _detail(event) -> dict:
    """The "Meeting Event" on the bus (outlet.py): the item's fields, without keys and expiry."""
    return {k: v for k, v in event.item(None).items() if k not in ("pk", "sk")}


def _with_expiry(item: dict, expires_at: int | None) -> dict:
    item = {k: v for k, v in item.items() if v is not None}
    if expires_at is not None:
        item[schema.TTL_ATTRIBUTE] = expires_at
    return item


def relative_ms(value, what: str) -> int:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise Rejected("bad_timestamp", f"{what} {repr(value)[:40]} is not a finite number")
    # Compared before multiplying: a huge float times 1000 is inf.
    if not (MIN_RELATIVE_MS - 0.5) / 1000 <= value <= (schema.MAX_RELATIVE_MS + 0.5) / 1000:
        raise Rejected("bad_timestamp", f"{what} {repr(value)[:40]} is outside -1 day .. the frames' key range")
    return max(MIN_RELATIVE_MS, min(round(value * 1000), schema.MAX_RELATIVE_MS))


def parse_context(message: dict, event: str) -> ContextEvent:
    """A participant event or a final utterance, from a message whose ``event`` is in
    CONTEXT_EVENTS. Raises Rejected with the reason."""
    outer, inner = envelope(message)
    context: dict = {"event": event}
    try:
        recording_id = context["recording_id"] = recording_id_of(outer)
        participant, participant_id = participant_of(inner)
        context["participant_id"] = participant_id
        name = bounded_text(participant.get("name"), MAX_NAME_BYTES)
        bot_id = bot_id_of(outer)
        if event == TRANSCRIPT_EVENT:
            return _utterance(inner, recording_id, participant_id, name, bot_id)
        timestamp = _obj(inner.get("timestamp"), "bad_timestamp", "'data.data.timestamp'")
        kind = event[len(PARTICIPANT_PREFIX):]
        data = inner.get("data")
        text = bounded_text(data.get("text"), MAX_CHAT_BYTES) if isinstance(data, dict) else None
        return ParticipantEvent(recording_id, participant_id, name, kind,
                                relative_ms(timestamp.get("relative"), "timestamp.relative"),
                                _absolute(timestamp.get("absolute")), text, bot_id)
    except Rejected as exc:
        exc.context = {**context, **exc.context}
        raise


def _utterance(inner: dict, recording_id: str, participant_id: str, name: str | None, bot_id: str | None) -> Utterance:
    words = inner.get("words")
    if not isinstance(words, list) or not words:
        raise Rejected("bad_transcript", "'data.data.words' is missing, empty or not a list")
    if len(words) > MAX_WORDS:
        raise Rejected("bad_transcript", f"{len(words)} words in one utterance, over {MAX_WORDS}")
    texts, start, end = [], None, None
    budget = MAX_UTTERANCE_BYTES
    for n, word in enumerate(words):
        if not isinstance(word, dict):
            raise Rejected("bad_transcript", f"word {n} is not an object")
        text = bounded_text(word.get("text"), MAX_WORD_BYTES)
        if text is None:
            raise Rejected("bad_transcript", f"word {n} has no text")
        began = word.get("start_timestamp")
        if not isinstance(began, dict):
            raise Rejected("bad_transcript", f"word {n} has no start_timestamp")
        began_ms = relative_ms(began.get("relative"), f"word {n}'s start_timestamp.relative")
        ended = word.get("end_timestamp")
        ended_ms = relative_ms(ended.get("relative"), f"word {n}'s end_timestamp.relative") \
            if isinstance(ended, dict) and ended.get("relative") is not None else began_ms
        start = began_ms if start is None else min(start, began_ms)
        end = max(ended_ms, began_ms) if end is None else max(end, ended_ms, began_ms)
        cost = len(text.encode("utf-8", "surrogatepass")) + 1
        if cost <= budget:  # the text is cut at a word past the budget; the times still count
            texts.append(text)
            budget -= cost
    return Utterance(recording_id, participant_id, name, start, end, " ".join(texts).strip(), len(words), bot_id)
