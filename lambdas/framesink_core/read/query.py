"""Reading the index: frames, participants, recordings, presigned URLs.

Every access pattern is one DynamoDB Query (never a Scan) on a key from schema.py:

| question                                  | Query                                                      |
|-------------------------------------------|------------------------------------------------------------|
| frames of a recording                     | table pk = REC#<rec>, sk BETWEEN <since> AND <until>       |
| ... of one participant (both types)       | gsi1  gsi1pk = PART#<rec>#<pid>, gsi1sk in range           |
| ... of one participant and one type       | gsi1 as above + FilterExpression type = :t                 |
| ... of one type (all participants)        | table as above + FilterExpression type = :t                |
| participants of a recording               | table pk = REC#<rec>, begins_with(sk, PART#)               |
| a recording: status, participants, slides, exports | table pk = REC#<rec>, sk >= "A" (every non-frame item) |
| recordings (newest first)                 | gsi1  gsi1pk = RECORDINGS, ScanIndexForward=False          |
| recordings of a bot                       | table pk = BOT#<bot>, begins_with(sk, REC#)                |
| latest frame of a participant             | gsi1, ScanIndexForward=False, Limit=1                      |

Time ranges are in relative milliseconds, ``since`` inclusive and ``until`` exclusive
(``since <= relative_ms < until``), so consecutive windows [0, 1000), [1000, 2000) neither
overlap nor leave gaps. Both frame sort keys start with the zero-padded relative ms, so the
range is a key condition, not a filter: it costs only what it returns.

A type filter is a FilterExpression: DynamoDB reads (and bills) the other type's items too,
and a page can hold fewer than ``limit`` items (even none) while more follow; the cursor
says whether there is more, never the page size. (One GSI keeps a frame at two write units;
a type-keyed index would cost a third.)

Every query also filters out items past their ``expires_at``: DynamoDB's TTL deletes them
only within days, while their S3 objects are already gone (schema.index_expires_at).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from decimal import Decimal

import boto3
import orjson
from botocore.config import Config

from framesink_core.shared import schema
from framesink_core.shared.items import BOTO_CONFIG, from_item, to_item

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_CURSOR_CHARS = 2048
# SigV4 presigned URLs are valid for at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

FRAME_FIELDS = (
    "recording_id",
    "participant_id",
    "participant_name",
    "type",
    "relative_ms",
    "absolute",
    "s3_key",
    "bytes",
    "width",
    "height",
    "bot_id",
    "connection_id",
    "stored_at",
)
# Written by the novelty function after the frame is stored (analyze/novelty.py): null in a
# record until the frame was scored (and in a "Frame Stored" event, sent before).
NOVELTY_FIELDS = ("novel", "change_score")
PARTICIPANT_FIELDS = (
    "recording_id",
    "participant_id",
    "participant_name",
    "is_host",
    "platform",
    "first_ms",
    "last_ms",
    "frame_count",
    "bytes",
    "bot_id",
    "types",
)
RECORDING_FIELDS = ("recording_id", "bot_id", "first_seen", "status", "status_at", "sub_code", "endpoint_status",
                    "endpoint_status_at", "endpoint_sub_code")
SLIDE_FIELDS = ("recording_id", "participant_id", "relative_ms", "s3_key", "distance", "repeat_of_ms")
PARTICIPANT_EVENT_FIELDS = ("event", "participant_id", "participant_name", "relative_ms", "absolute", "text")
UTTERANCE_FIELDS = ("participant_id", "participant_name", "start_ms", "end_ms", "text", "words")
RESULT_FIELDS = ("analyzer", "recording_id", "participant_id", "type", "relative_ms", "s3_key", "analyzed_at")
EXPORT_FIELDS = ("recording_id", "participant_id", "type", "s3_key", "frames", "duration_ms", "bytes",
                 "width", "height", "created_at", "contact_sheet_key", "audio_ms", "audio_silent_ms",
                 "endpoint_failed_at")


class QueryError(ValueError):
    """A bad query parameter. ``param`` names it; ``reason`` is a stable log/metric label."""

    def __init__(self, param: str, detail: str, reason: str = "bad_parameter"):
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail
        self.reason = reason


@dataclass(frozen=True)
class Page:
    items: list[dict]
    cursor: str | None  # opaque; None when there is nothing more


@dataclass(frozen=True)
class _Plan:
    """One Query: which index, its key attributes, and the partition it reads."""

    index: str | None
    hash_attr: str
    range_attr: str
    hash_value: str
    filter_type: str | None = None

    @property
    def key_attrs(self) -> frozenset[str]:
        return frozenset({self.hash_attr, self.range_attr, "pk", "sk"})


def check_id(value, param: str) -> str:
    if not isinstance(value, str) or not schema.ID_PATTERN.fullmatch(value):
        raise QueryError(param, "must match [A-Za-z0-9_-]{1,128}")
    return value


def check_type(value, param: str = "type") -> str:
    if value not in schema.FRAME_TYPES:
        raise QueryError(param, f"must be one of {', '.join(schema.FRAME_TYPES)}")
    return value


def parse_int(value, param: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer parameter from text (query string, CLI) or an int, with bounds."""
    if isinstance(value, bool):
        raise QueryError(param, "must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 12:
            raise QueryError(param, "must be a non-negative integer")
        value = int(text)
    if not isinstance(value, int):
        raise QueryError(param, "must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise QueryError(param, f"must be {bound}")
    return value


def _live(names: dict, values: dict) -> str:
    """The not-yet-expired filter, its names and values added to the query's. Items without
    expires_at (frameExpiryDays 0) live forever; the others until that second."""
    names["#exp"] = schema.TTL_ATTRIBUTE
    values[":now"] = int(time.time())
    return "(attribute_not_exists(#exp) OR #exp > :now)"


def encode_cursor(last_evaluated_key: dict) -> str:
    """An opaque cursor: the LastEvaluatedKey's string values, as unpadded base64url JSON."""
    plain = {k: v["S"] for k, v in sorted(last_evaluated_key.items())}
    return base64.urlsafe_b64encode(orjson.dumps(plain)).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str, plan: _Plan, since: int, until: int | None) -> dict:
    """ExclusiveStartKey from a cursor, checked to belong to this very query. orjson refuses
    nesting past 1024 levels, so a hostile cursor is a 400, never a RecursionError."""
    bad = QueryError("cursor", "is not a cursor returned by this query", reason="bad_cursor")
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        plain = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if (
        not isinstance(plain, dict)
        or set(plain) != plan.key_attrs
        or not all(isinstance(v, str) and 0 < len(v) <= 600 for v in plain.values())
        or plain[plan.hash_attr] != plan.hash_value
    ):
        raise bad
    # The position must lie inside this query's time range (DynamoDB rejects it otherwise,
    # with a less helpful message), and the base-table key must be a frame of this recording.
    match = schema.FRAME_SK_PATTERN.fullmatch(plain["sk"])
    position = plain[plan.range_attr][: schema.RELATIVE_MS_DIGITS]
    if not match or not position.isdigit() or not plain["pk"].startswith("REC#"):
        raise bad
    if int(position) < since or (until is not None and int(position) >= until):
        raise bad
    return to_item(plain)


def _plain(value):
    """DynamoDB numbers come back as Decimal: integers as int, the rest (a slide's distance)
    as float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):  # a string set (a participant's types)
        return sorted(value)
    return value


def _record(values: dict, fields: tuple[str, ...]) -> dict:
    return {field: _plain(values.get(field)) for field in fields}


def frame_record(item: dict) -> dict:
    """The public view of a frame index item (CLI --json, HTTP API)."""
    values = from_item(item)
    record = _record(values, FRAME_FIELDS)
    record["s3_key"] = schema.frame_key(record["recording_id"], record["participant_id"], record["type"],
                                        record["relative_ms"])
    record.update({name: _plain(values.get(name)) for name in NOVELTY_FIELDS})
    return record


def participant_record(item: dict) -> dict:
    return _record(from_item(item), PARTICIPANT_FIELDS)


class FrameIndex:
    """Read-only queries over the table that FrameStore writes."""

    def __init__(self, table: str, dynamodb):
        self.table = table
        self.dynamodb = dynamodb

    # -- frames -------------------------------------------------------------------------

    def frames(
        self,
        recording_id: str,
        *,
        participant_id: str | None = None,
        frame_type: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
        novel: bool = False,
    ) -> Page:
        """One page of frames in time order, ``since <= relative_ms < until``; ``novel``: only
        the frames the novelty function flagged (a filter: the others are read and billed)."""
        plan = self._plan(recording_id, participant_id, frame_type)
        since = 0 if since is None else parse_int(since, "since", maximum=schema.MAX_RELATIVE_MS)
        if until is not None:
            # Anything past the key range means "no upper bound".
            until = parse_int(until, "until")
            if until > schema.MAX_RELATIVE_MS:
                until = None
        limit = DEFAULT_PAGE_SIZE if limit is None else parse_int(limit, "limit", minimum=1, maximum=MAX_PAGE_SIZE)
        start_key = _decode_cursor(cursor, plan, since, until) if cursor is not None else None
        if until is not None and until <= since:
            return Page([], None)

        # Sort keys are "<relms10>#...": compare on the 10-digit prefix. "~" sorts after "#"
        # and every id character, so every key of ms until-1 is inside the upper bound.
        names = {"#h": plan.hash_attr, "#r": plan.range_attr}
        values = {
            ":h": plan.hash_value,
            ":lo": schema.relative_ms_text(since),
            ":hi": schema.relative_ms_text(until - 1) + "~" if until is not None else schema.FRAME_SK_HIGH,
        }
        kwargs: dict = {
            "TableName": self.table,
            "KeyConditionExpression": "#h = :h AND #r BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": names,
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if plan.index:
            kwargs["IndexName"] = plan.index
        kwargs["FilterExpression"] = _live(names, values)
        if plan.filter_type:
            kwargs["FilterExpression"] += " AND #t = :t"
            names["#t"] = "type"
            values[":t"] = plan.filter_type
        if novel:
            kwargs["FilterExpression"] += " AND #n = :novel"
            names["#n"] = "novel"
            values[":novel"] = True
        kwargs["ExpressionAttributeValues"] = to_item(values)
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        result = self.dynamodb.query(**kwargs)
        last = result.get("LastEvaluatedKey")
        return Page([frame_record(i) for i in result.get("Items", [])], encode_cursor(last) if last else None)

    def iter_frames(self, recording_id: str, **filters) -> Iterator[dict]:
        """Every matching frame, following the cursor page by page."""
        filters.setdefault("limit", MAX_PAGE_SIZE)
        cursor = None
        while True:
            page = self.frames(recording_id, cursor=cursor, **filters)
            yield from page.items
            if page.cursor is None:
                return
            cursor = page.cursor

    def endpoint_failure(self, recording_id: str) -> str | None:
        """When Recall's realtime endpoint failed for this recording (its realtime_endpoint.failed
        webhook: Recall stopped sending, the bot maybe still in the call), or None."""
        check_id(recording_id, "recording")
        item = self.dynamodb.get_item(
            TableName=self.table, Key=to_item({"pk": schema.recording_pk(recording_id), "sk": schema.META_SK}),
            ProjectionExpression="endpoint_status, endpoint_status_at").get("Item")
        meta = from_item(item) if item else {}
        return str(meta.get("endpoint_status_at") or "unknown time") if meta.get("endpoint_status") == "failed" else None

    def latest_frame(self, recording_id: str, participant_id: str, frame_type: str | None = None) -> dict | None:
        """The participant's most recent frame (of one type, or of any)."""
        check_id(participant_id, "participant")
        # Limit 1 reads the newest item; with a type filter, the page may be empty while
        # older items of that type exist, so follow the cursor (rarely more than a page).
        for frame in self.iter_frames(recording_id, participant_id=participant_id, frame_type=frame_type,
                                      newest_first=True, limit=1 if frame_type is None else 10):
            return frame
        return None

    def _plan(self, recording_id, participant_id, frame_type) -> _Plan:
        recording_id = check_id(recording_id, "recording")
        if participant_id is not None:
            participant_id = check_id(participant_id, "participant")
        if frame_type is not None:
            frame_type = check_type(frame_type)
        if participant_id:
            return _Plan(schema.GSI_PARTICIPANT, "gsi1pk", "gsi1sk",
                         schema.participant_gsi_pk(recording_id, participant_id), filter_type=frame_type)
        return _Plan(None, "pk", "sk", schema.recording_pk(recording_id), filter_type=frame_type)

    # -- participants and recordings ----------------------------------------------------

    def participants(self, recording_id: str) -> list[dict]:
        """A recording's participants (ordered by id as text); empty for an unknown recording."""
        pk = schema.recording_pk(check_id(recording_id, "recording"))
        return [participant_record(i) for i in self._query_prefix(pk, schema.participant_sk(""))]

    def has_recording(self, recording_id: str) -> bool:
        """Any item in the recording's partition: a participant, its META item, or a frame."""
        pk = schema.recording_pk(check_id(recording_id, "recording"))
        result = self.dynamodb.query(TableName=self.table, KeyConditionExpression="pk = :pk",
                                     ExpressionAttributeValues=to_item({":pk": pk}), Limit=1,
                                     ProjectionExpression="pk")
        return bool(result.get("Items"))

    def recordings(self, bot_id: str | None = None, status: str | None = None) -> list[dict]:
        """Recordings, newest first: of one bot (its partition), or all (the RECORDINGS
        partition of gsi1). ``status`` filters on the status Recall's webhooks reported."""
        if bot_id is not None:
            pk = schema.bot_pk(check_id(bot_id, "bot"))
            # The bot's links to its recordings carry the status too (meetings.py sets both).
            records = [_record(from_item(i), RECORDING_FIELDS) for i in self._query_prefix(pk, "REC#")]
            records.sort(key=lambda r: r.get("first_seen") or 0, reverse=True)
        else:
            names, values = {}, {":pk": schema.RECORDINGS_GSI_PK}
            kwargs = {"TableName": self.table, "IndexName": schema.GSI_PARTICIPANT,
                      "KeyConditionExpression": "gsi1pk = :pk", "ScanIndexForward": False,
                      "FilterExpression": _live(names, values), "ExpressionAttributeNames": names,
                      "ExpressionAttributeValues": to_item(values)}
            records = [_record(from_item(i), RECORDING_FIELDS) for i in self._paginate(kwargs)]
        if status is not None:
            records = [r for r in records if r.get("status") == status]
        return records

    def recording(self, recording_id: str) -> dict | None:
        """Everything about a recording but its frames and per-frame items, in two Queries: its
        META item (status), participants, exports and export job (sort keys "A" .. "PART#~"),
        then its slides. The per-frame and per-event items between and after them (analyzer
        results, participant events, utterances: thousands in a long meeting) are not read.
        None if nothing is known of it."""
        pk = schema.recording_pk(check_id(recording_id, "recording"))
        out: dict = {"recording_id": recording_id, "meta": None, "participants": [], "slides": [], "exports": [],
                     "export_job": None}
        found = False

        def between(low: str, high: str):
            names, values = {}, {":pk": pk, ":lo": low, ":hi": high}
            yield from self._paginate({"TableName": self.table, "FilterExpression": _live(names, values),
                                       "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                                       "ExpressionAttributeNames": names, "ExpressionAttributeValues": to_item(values)})

        for raw in chain(between(schema.NON_FRAME_SK_LOW, "PART#~"), between("SLIDE#", "SLIDE#~")):
            found = True
            item = from_item(raw)
            sk = item["sk"]
            if sk == schema.META_SK:
                out["meta"] = _record(item, RECORDING_FIELDS)
            elif sk.startswith("PART#"):
                out["participants"].append(_record(item, PARTICIPANT_FIELDS))
            elif sk.startswith("SLIDE#"):
                out["slides"].append(_record(item, SLIDE_FIELDS))
            elif sk.startswith("EXPORT#"):
                out["exports"].append(_record(item, EXPORT_FIELDS))
            elif sk == schema.EXPORT_JOB_SK:
                out["export_job"] = {k: _plain(v) for k, v in item.items() if k not in ("pk", "sk")}
        return out if found else None

    def slides(self, recording_id: str, *, with_signature: bool = False, before_ms: int | None = None,
               after_ms: int | None = None, newest_first: bool = False, limit: int | None = None) -> list[dict]:
        """Slide changes the analyzer found, in time order (participant second). With
        ``with_signature``, each carries ``hash``: its frame's thumbnail, hex (the analyzer's).
        ``before_ms`` / ``after_ms``, ``newest_first`` and ``limit``: the few nearest a time
        (one page)."""
        pk = schema.recording_pk(check_id(recording_id, "recording"))
        fields = SLIDE_FIELDS + (("hash",) if with_signature else ())
        if before_ms is None and after_ms is None and not newest_first:
            return [_record(from_item(i), fields) for i in self._query_prefix(pk, "SLIDE#", limit)]
        # "SLIDE#<relms10>" sorts after every slide item before that time and before the ones at it.
        high = f"SLIDE#{schema.relative_ms_text(before_ms)}" if before_ms is not None else "SLIDE#~"
        low = f"SLIDE#{schema.relative_ms_text(after_ms + 1)}" if after_ms is not None else "SLIDE#"
        names, values = {}, {":pk": pk, ":low": low, ":high": high}
        kwargs = {"TableName": self.table, "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
                  "FilterExpression": _live(names, values), "ExpressionAttributeNames": names,
                  "ExpressionAttributeValues": to_item(values), "ScanIndexForward": not newest_first}
        if limit:
            kwargs["Limit"] = limit  # what DynamoDB reads (and bills), not only what is returned
        return [_record(from_item(i), fields) for i in self._paginate(kwargs, limit)]

    def results(self, recording_id: str, *, analyzer: str | None = None, limit: int | None = None) -> list[dict]:
        """What kit analyzers returned for the recording's frames (analyze/kit.py), by analyzer,
        then time (participant, type second); each with its ``result`` dict."""
        pk = schema.recording_pk(check_id(recording_id, "recording"))
        if analyzer is not None and not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", analyzer):
            raise QueryError("analyzer", "1-40 of a-z, 0-9, _ and -, starting with a letter", "bad_analyzer")
        out = []
        for raw in self._query_prefix(pk, f"RESULT#{analyzer}#" if analyzer else "RESULT#", limit):
            values = from_item(raw)
            record = _record(values, RESULT_FIELDS)
            try:
                record["result"] = orjson.loads(values.get("result") or "null")
            except orjson.JSONDecodeError:
                record["result"] = None
            out.append(record)
        return out

    # -- the meeting's context (ingest/context_events.py) --------------------------------------

    def participant_events(self, recording_id: str, *, kinds: tuple[str, ...] | None = None,
                           since: int | None = None, until: int | None = None) -> list[dict]:
        """Participant events in time order (``since <= relative_ms < until``), one Query."""
        out = []
        for values in self._context_range(recording_id, "PEV#", since, until):
            if kinds is None or values.get("event") in kinds:
                out.append(_record(values, PARTICIPANT_EVENT_FIELDS))
        return out

    def transcript(self, recording_id: str, *, since: int | None = None, until: int | None = None) -> list[dict]:
        """Final utterances starting in ``since <= start_ms < until``, in time order, one Query."""
        return [_record(v, UTTERANCE_FIELDS) for v in self._context_range(recording_id, "UTT#", since, until)]

    def speaker_timeline(self, recording_id: str) -> list[dict]:
        """Who spoke when: segments {participant_id, participant_name, start_ms, end_ms, source}
        from speech_on/speech_off (one Query); a speech_on never closed ends at the speaker's
        next event or stays open (end_ms None). With no speech events at all, the transcript's
        utterances stand in (source "transcript")."""
        segments, open_at = [], {}
        for event in self.participant_events(recording_id, kinds=("speech_on", "speech_off", "leave")):
            pid = event["participant_id"]
            if event["event"] == "speech_on":
                if pid in open_at:  # on twice: the first ends where the second starts
                    segments.append({**open_at.pop(pid), "end_ms": event["relative_ms"]})
                open_at[pid] = {"participant_id": pid, "participant_name": event.get("participant_name"),
                                "start_ms": event["relative_ms"], "end_ms": None, "source": "speech"}
            elif pid in open_at:  # speech_off, or leaving mid-sentence
                segments.append({**open_at.pop(pid), "end_ms": event["relative_ms"]})
        segments += open_at.values()
        if not segments:
            segments = [{"participant_id": u["participant_id"], "participant_name": u.get("participant_name"),
                         "start_ms": u["start_ms"], "end_ms": u["end_ms"], "source": "transcript"}
                        for u in self.transcript(recording_id)]
        return sorted(segments, key=lambda s: (s["start_ms"], s["participant_id"]))

    def speaking_at(self, recording_id: str, relative_ms: int) -> list[dict]:
        """The segments of the speaker timeline that hold ``relative_ms``."""
        return [s for s in self.speaker_timeline(recording_id) if _holds(s, relative_ms)]

    def frames_while_speaking(self, recording_id: str, participant_id: str, *, frame_type: str | None = None,
                              speaker: str | None = None) -> Iterator[dict]:
        """The participant's frames taken while ``speaker`` (default: the participant) was
        speaking: the speaker timeline (one Query), then the participant's frames (the GSI,
        one Query paged) from the first segment's start to the last one's end, kept when inside
        a segment."""
        speaker = speaker or participant_id
        segments = [s for s in self.speaker_timeline(recording_id) if s["participant_id"] == speaker]
        if not segments:
            return
        last = max((s["end_ms"] for s in segments if s["end_ms"] is not None), default=None)
        until = None if any(s["end_ms"] is None for s in segments) or last is None else max(0, last)
        for frame in self.iter_frames(recording_id, participant_id=participant_id, frame_type=frame_type,
                                      since=max(0, segments[0]["start_ms"]), until=until):
            if any(_holds(s, frame["relative_ms"]) for s in segments):
                yield frame

    def talk_time(self, recording_id: str, segments: list[dict] | None = None) -> dict[str, int]:
        """participant id -> ms spoken (closed segments of the speaker timeline; pass the
        timeline as ``segments`` when it was read already)."""
        out: dict[str, int] = {}
        for s in self.speaker_timeline(recording_id) if segments is None else segments:
            if s["end_ms"] is not None:
                out[s["participant_id"]] = out.get(s["participant_id"], 0) + s["end_ms"] - s["start_ms"]
        return out

    def _context_range(self, recording_id: str, prefix: str, since: int | None, until: int | None) -> Iterator[dict]:
        from framesink_core.ingest.context_events import MIN_RELATIVE_MS, time_text

        pk = schema.recording_pk(check_id(recording_id, "recording"))
        since = MIN_RELATIVE_MS if since is None else parse_int(since, "since", minimum=MIN_RELATIVE_MS,
                                                                maximum=schema.MAX_RELATIVE_MS)
        until_text = (f"{prefix}{time_text(parse_int(until, 'until', minimum=MIN_RELATIVE_MS + 1, maximum=schema.MAX_RELATIVE_MS + 1) - 1)}~"
                      if until is not None else f"{prefix}~")
        names, values = {}, {":pk": pk, ":lo": f"{prefix}{time_text(since)}", ":hi": until_text}
        kwargs = {"TableName": self.table, "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                  "FilterExpression": _live(names, values), "ExpressionAttributeNames": names,
                  "ExpressionAttributeValues": to_item(values)}
        for raw in self._paginate(kwargs):
            yield from_item(raw)

    def bot_status(self, bot_id: str) -> dict | None:
        """The bot's status and its timeline (Recall's status webhooks), oldest first."""
        pk = schema.bot_pk(check_id(bot_id, "bot"))
        meta, events = None, []
        for raw in self._query_prefix(pk, ""):
            item = from_item(raw)
            if item["sk"] == schema.META_SK:
                meta = item
            elif item["sk"].startswith("EVENT#"):
                events.append({k: _plain(item.get(k)) for k in ("event", "status", "sub_code", "at", "received_at")})
        if meta is None and not events:
            return None
        return {"bot_id": bot_id, "status": (meta or {}).get("status"), "status_at": (meta or {}).get("status_at"),
                "timeline": events}

    def _query_prefix(self, pk: str, prefix: str, limit: int | None = None) -> Iterator[dict]:
        names, values = {}, {":pk": pk}
        condition = "pk = :pk"
        if prefix:
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = prefix
        kwargs = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "FilterExpression": _live(names, values),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
        }
        yield from self._paginate(kwargs, limit)

    def _paginate(self, kwargs: dict, limit: int | None = None) -> Iterator[dict]:
        paginator = self.dynamodb.get_paginator("query")
        if limit:
            kwargs = {**kwargs, "PaginationConfig": {"MaxItems": limit}}
        for page in paginator.paginate(**kwargs):
            yield from page.get("Items", [])


def _holds(segment: dict, relative_ms: int) -> bool:
    """A speaker segment covers this time (an open one, end_ms None, runs on)."""
    return segment["start_ms"] <= relative_ms and (segment["end_ms"] is None or relative_ms < segment["end_ms"])


def presigned_get_url(s3, bucket: str, key: str, expires_in: int) -> str:
    """A time-limited GET URL for one object. ``s3`` must sign with SigV4 (see presign_client).

    Signed with the caller's credentials: from a Lambda role the URL also stops working when
    the role's session expires, whichever comes first.
    """
    expires_in = parse_int(expires_in, "expires", minimum=1, maximum=MAX_PRESIGN_SECONDS)
    return s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
    )


def recording_view(index: FrameIndex, recording_id: str, presigner, bucket: str, expires_in: int) -> dict | None:
    """A recording as `framesink recording` and ``GET /recordings/{id}`` give it: its items
    (FrameIndex.recording), its bot's status and timeline, each export with presigned URLs
    (``presigner``: an S3 client signing with SigV4). None for an unknown recording."""
    found = index.recording(recording_id)
    if found is None:
        return None
    bot_id = (found["meta"] or {}).get("bot_id")
    found["bot"] = index.bot_status(bot_id) if bot_id else None
    for export in found["exports"]:
        export["url"] = presigned_get_url(presigner, bucket, export["s3_key"], expires_in)
        export["contact_sheet_url"] = presigned_get_url(presigner, bucket, export["contact_sheet_key"], expires_in)
    return found


def presign_client(region: str | None = None, endpoint_url: str | None = None):
    """An S3 client that presigns with SigV4: botocore's default for presigning in us-east-1
    is still the deprecated SigV2, which newer regions and KMS-encrypted objects refuse."""
    config = BOTO_CONFIG.merge(Config(signature_version="s3v4"))
    return boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
