"""Participant totals, accumulated in memory and written per participant every few seconds.

A frame's own cost is its S3 object and its index item. The participant item (frame count,
bytes, first/last frame time, name, host flag and platform by time) is not written per frame:
each process adds its frames here and ``flush_due`` writes one UpdateItem per participant that
changed, the first time at once (a participant appears in listings with its first frame) and
then at most every ``interval`` seconds. The container receiver also flushes from a timer and
at shutdown. A Lambda has neither (an instance may never run again: 60 frames stored once
showed as 34 until a recount), so the Lambda ingress flushes with every frame (interval 0,
service.py): one UpdateItem more per frame, totals exact once the frame is stored.

Several writers (receiver tasks, Lambda containers) may hold totals of one participant, so a
flush ADDs counts and widens first/last; name, host and platform follow the latest frame in
*meeting* time (``attrs_ms``), never the latest to arrive. The common case is one write; a
late frame or another writer ahead costs up to three more, once per flush.

How far totals may lag: on the receiver ``interval`` seconds (5) plus its 1 s timer tick; on
a Lambda, nothing.
What a crash loses: the unflushed deltas of that process (at most ``interval`` seconds of its
frames); a retried UpdateItem whose first attempt landed counts twice. The frames themselves
are never at risk. ``reindex`` (from S3) and ``retotal`` (from the index) recompute totals
exactly and mark the item ``counted_through`` (the newest stored_at they counted): a delta
whose frames were all stored by then is dropped rather than counted twice. The end-of-meeting
export job runs ``retotal`` once frames have stopped for a while (export.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from framesink_core.ingest.stored_frame import StoredFrame
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.objects import error_code
from framesink_core.shared.observability import count, logger

DEFAULT_FLUSH_SECONDS = 5.0
ATTRIBUTES = ("participant_name", "is_host", "platform")


@dataclass
class _Delta:
    """What one process saw of one participant since its last flush."""

    frames: int = 0
    bytes: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    attrs: dict = field(default_factory=dict)  # attribute -> (ms, value): latest non-null by time
    bot_id: str | None = None
    types: set = field(default_factory=set)  # webcam / screenshare: the streams an export makes
    first_stored: int | None = None  # earliest stored_at: when the recording was first seen; a
    # recount that counted frames stored up to or after it makes this delta stale (_write)
    expires_at: int | None = None
    expiry_known: bool = False  # expires_at None means "no TTL" only once a frame said so

    def add(self, frame: StoredFrame, expires_at: int | None) -> None:
        ms = frame.relative_ms
        self.frames += 1
        self.bytes += frame.size
        self.first_ms = ms if self.first_ms is None else min(self.first_ms, ms)
        self.last_ms = ms if self.last_ms is None else max(self.last_ms, ms)
        for attr in ATTRIBUTES:
            value = getattr(frame, attr)
            if value is not None and (attr not in self.attrs or self.attrs[attr][0] <= ms):
                self.attrs[attr] = (ms, value)
        self.bot_id = frame.bot_id or self.bot_id
        self.types.add(frame.frame_type)
        if frame.stored_at is not None:
            self.first_stored = frame.stored_at if self.first_stored is None else min(self.first_stored, frame.stored_at)
        # Items expire with their newest stored frame (frames arrive in store-time order).
        self.expires_at = expires_at if expires_at is None or self.expires_at is None else max(self.expires_at, expires_at)
        self.expiry_known = True

    def merge(self, other: "_Delta") -> None:
        """Put back a delta whose flush failed, under one that arrived meanwhile."""
        self.frames += other.frames
        self.bytes += other.bytes
        if other.first_ms is not None:
            self.first_ms = other.first_ms if self.first_ms is None else min(self.first_ms, other.first_ms)
        if other.last_ms is not None:
            self.last_ms = other.last_ms if self.last_ms is None else max(self.last_ms, other.last_ms)
        for attr, (ms, value) in other.attrs.items():
            if attr not in self.attrs or self.attrs[attr][0] < ms:
                self.attrs[attr] = (ms, value)
        self.bot_id = self.bot_id or other.bot_id
        self.types |= other.types
        if other.first_stored is not None:
            self.first_stored = min(self.first_stored or other.first_stored, other.first_stored)
        if not self.expiry_known:
            self.expires_at, self.expiry_known = other.expires_at, other.expiry_known

    @property
    def attrs_ms(self) -> int | None:
        return max((ms for ms, _ in self.attrs.values()), default=None)


@dataclass
class _Entry:
    recording_id: str
    participant_id: str
    delta: _Delta = field(default_factory=_Delta)
    flushed_at: float | None = None  # monotonic time of the last successful flush
    flushing: bool = False


class ParticipantTotals:
    """Thread-safe: the receiver's store threads add, its timer and the store threads flush."""

    def __init__(self, table: str, dynamodb, *, interval: float = DEFAULT_FLUSH_SECONDS,
                 clock=time.monotonic, max_entries: int = 10_000):
        self.table = table
        self.dynamodb = dynamodb
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._max_entries = max_entries
        # Recordings (and bot recordings) this process has written, with the expiry written:
        # their items are written once, then again only when the expiry moves (once a day).
        self._recordings: dict[tuple[str, str | None], int | None] = {}
        # recording id -> deleted? (tombstones.DeletedRecordings, set by service.py): counts of
        # a deleted recording are dropped, never written back as a participant.
        self.deleted = None

    def add(self, frame: StoredFrame, expires_at: int | None) -> None:
        with self._lock:
            key = (frame.recording_id, frame.participant_id)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(frame.recording_id, frame.participant_id)
            entry.delta.add(frame, expires_at)

    def pending(self) -> int:
        """Frames added and not yet flushed (all participants)."""
        with self._lock:
            return sum(e.delta.frames for e in self._entries.values())

    def flush_due(self) -> int:
        """Flush participants never written by this process, and the others whose last flush
        is ``interval`` old. Returns how many were written."""
        now = self._clock()
        return self._flush(lambda e: e.flushed_at is None or now - e.flushed_at >= self.interval)

    def flush_all(self) -> int:
        return self._flush(lambda e: True)

    def _flush(self, due) -> int:
        with self._lock:
            batch = []
            for entry in self._entries.values():
                if entry.delta.frames and not entry.flushing and due(entry):
                    batch.append((entry, entry.delta))
                    entry.delta, entry.flushing = _Delta(), True
        written = 0
        for entry, delta in batch:
            try:
                if self.deleted is not None and self.deleted(entry.recording_id):
                    logger.info("participant totals of a deleted recording dropped", extra={
                        "reason": "recording_deleted", "recording_id": entry.recording_id,
                        "participant_id": entry.participant_id, "frames": delta.frames})
                else:
                    self._write(entry.recording_id, entry.participant_id, delta)
                    written += 1
                ok = True
            except (ClientError, BotoCoreError) as exc:
                logger.warning("participant totals not written", extra={
                    "reason": "totals_write_failed", "detail": str(exc)[:300],
                    "recording_id": entry.recording_id, "participant_id": entry.participant_id})
                count("TotalsWriteFailed")
                ok = False
            with self._lock:
                entry.flushing = False
                if ok:
                    entry.flushed_at = self._clock()
                else:
                    delta.merge(entry.delta)
                    entry.delta = delta
        self._trim()
        return written

    def _trim(self) -> None:
        # A long-lived receiver sees many meetings: forget participants with nothing pending.
        with self._lock:
            if len(self._entries) > self._max_entries:
                for key in [k for k, e in self._entries.items() if not e.delta.frames and not e.flushing]:
                    del self._entries[key]
                    if len(self._entries) <= self._max_entries // 2:
                        break
            if len(self._recordings) > self._max_entries:
                for key in list(self._recordings)[: len(self._recordings) // 2]:
                    del self._recordings[key]

    # -- the writes ------------------------------------------------------------------------

    def _write(self, recording_id: str, participant_id: str, d: _Delta) -> None:
        self._write_recording(recording_id, d.bot_id, d.first_stored, d.expires_at if d.expiry_known else None)
        key = to_item({"pk": schema.recording_pk(recording_id), "sk": schema.participant_sk(participant_id)})
        names = {"#b": "bytes", "#types": "types", "#exp": schema.TTL_ATTRIBUTE}
        values = {":kind": "participant", ":rec": recording_id, ":pid": participant_id, ":n": d.frames,
                  ":bytes": d.bytes, ":first": d.first_ms, ":types": set(d.types)}
        sets = ["kind = :kind", "recording_id = :rec", "participant_id = :pid",
                "first_ms = if_not_exists(first_ms, :first)"]
        if d.bot_id:
            sets.append("bot_id = :bot")
            values[":bot"] = d.bot_id
        expiry = ""
        if d.expiry_known:
            if d.expires_at is None:
                expiry = " REMOVE #exp"  # frames are kept forever now: so is the participant
            else:
                sets.append("#exp = :exp")
                values[":exp"] = d.expires_at
        else:
            del names["#exp"]
        attr_sets, attr_values = self._attribute_clauses(d)
        adds = " ADD frame_count :n, #b :bytes, #types :types"
        # A recount (set_exact_totals: the export job's retotal, reindex) marks the item with
        # the newest stored_at it counted; a delta of frames stored no later than that was
        # counted already (a Lambda instance's leftover, flushed by its next invocation) and
        # is dropped instead of counted twice.
        fresh = "(attribute_not_exists(counted_through) OR counted_through < :fs)"
        values[":fs"] = d.first_stored if d.first_stored is not None else 0
        try:
            # The common case: this delta is the newest in meeting time. One write.
            result = self.dynamodb.update_item(
                TableName=self.table, Key=key, ReturnValues="ALL_NEW",
                UpdateExpression="SET " + ", ".join([*sets, "last_ms = :last", *attr_sets]) + adds + expiry,
                ConditionExpression=f"{fresh} AND (attribute_not_exists(last_ms) OR last_ms <= :last)"
                + (" AND (attribute_not_exists(attrs_ms) OR attrs_ms <= :am)" if attr_sets else ""),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item({**values, ":last": d.last_ms, **attr_values}),
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Late frames, or another writer is ahead: count, then widen what this delta widens.
            try:
                result = self.dynamodb.update_item(
                    TableName=self.table, Key=key, ReturnValues="ALL_NEW",
                    UpdateExpression="SET " + ", ".join(sets) + adds + expiry, ConditionExpression=fresh,
                    ExpressionAttributeNames=names, ExpressionAttributeValues=to_item(values),
                )
            except ClientError as again:
                if error_code(again) != "ConditionalCheckFailedException":
                    raise
                count("TotalsRecounted")  # counted by the recount already
                return
            current = from_item(result.get("Attributes", {}))
            if current.get("last_ms") is None or current["last_ms"] < d.last_ms:
                self._set_if(key, "last_ms = :v", "attribute_not_exists(last_ms) OR last_ms < :v", {":v": d.last_ms})
            if attr_sets and (current.get("attrs_ms") is None or current["attrs_ms"] < d.attrs_ms):
                self._set_if(key, ", ".join(attr_sets), "attribute_not_exists(attrs_ms) OR attrs_ms < :am", attr_values)
        current = from_item(result.get("Attributes", {}))
        if current.get("first_ms") is not None and current["first_ms"] > d.first_ms:
            self._set_if(key, "first_ms = :v", "first_ms > :v", {":v": d.first_ms})

    @staticmethod
    def _attribute_clauses(d: _Delta) -> tuple[list[str], dict]:
        if not d.attrs:
            return [], {}
        sets, values = [], {":am": d.attrs_ms}
        for attr, (_ms, value) in d.attrs.items():
            sets.append(f"{attr} = :{attr}")
            values[f":{attr}"] = value
        sets.append("attrs_ms = :am")
        return sets, values

    def _set_if(self, key: dict, update: str, condition: str, values: dict) -> None:
        try:
            self.dynamodb.update_item(TableName=self.table, Key=key, UpdateExpression="SET " + update,
                                      ConditionExpression=condition, ExpressionAttributeValues=to_item(values))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise  # someone else widened it further meanwhile: theirs stands

    def _write_recording(self, recording_id: str, bot_id: str | None, seen_at: int | None,
                         expires_at: int | None) -> None:
        """The recording's META item (listed by `framesink recordings`) and, with a bot, the
        bot's recording item: once per process, and again when their expiry moves."""
        pair = (recording_id, bot_id)
        if pair in self._recordings:
            written = self._recordings[pair]
            # expires_at is day-granular (index_expires_at), so this rewrites about once a day.
            if expires_at is None or (written is not None and written >= expires_at):
                return
        seen_at = seen_at if seen_at is not None else int(time.time() * 1000)
        write_recording_items(self.dynamodb, self.table, recording_id, bot_id, seen_at, expires_at)
        self._recordings[pair] = expires_at


def write_recording_items(dynamodb, table: str, recording_id: str, bot_id: str | None, seen_at: int,
                          expires_at: int | None) -> None:
    """Create or refresh a recording's META item (first_seen and its listing key are kept
    once set; a status written by Recall's webhooks is never overwritten), and the bot's
    recording item. Also what reindex writes."""
    values = {":kind": "recording", ":rec": recording_id, ":now": seen_at, ":gpk": schema.RECORDINGS_GSI_PK,
              ":gsk": schema.recordings_gsi_sk(seen_at, recording_id)}
    ttl = f", {schema.TTL_ATTRIBUTE} = :exp" if expires_at is not None else ""
    if expires_at is not None:
        values[":exp"] = expires_at
    remove = f" REMOVE {schema.TTL_ATTRIBUTE}" if expires_at is None else ""
    sets = ("SET kind = :kind, recording_id = :rec, first_seen = if_not_exists(first_seen, :now), "
            "gsi1pk = :gpk, gsi1sk = if_not_exists(gsi1sk, :gsk)")
    if bot_id:
        values[":bot"] = bot_id
        sets += ", bot_id = if_not_exists(bot_id, :bot)"
    dynamodb.update_item(
        TableName=table, Key=to_item({"pk": schema.recording_pk(recording_id), "sk": schema.META_SK}),
        UpdateExpression=sets + ttl + remove, ExpressionAttributeValues=to_item(values),
    )
    if bot_id:
        bot_values = {":kind": "bot_recording", ":bot": bot_id, ":rec": recording_id, ":now": seen_at}
        if expires_at is not None:
            bot_values[":exp"] = expires_at
        dynamodb.update_item(
            TableName=table, Key=to_item({"pk": schema.bot_pk(bot_id), "sk": schema.bot_recording_sk(recording_id)}),
            UpdateExpression="SET kind = :kind, bot_id = :bot, recording_id = :rec, "
            "first_seen = if_not_exists(first_seen, :now)" + ttl + remove,
            ExpressionAttributeValues=to_item(bot_values),
        )
        from framesink_core.ingest.status import inherit_bot_status  # statuses that came before the first frame

        inherit_bot_status(dynamodb, table, bot_id, recording_id)


def set_exact_totals(dynamodb, table: str, frames: list[StoredFrame], expiry_days: int) -> None:
    """Write one participant's item from all of its frames: counts and first/last are SET
    (recomputed), never ADDed, so running it twice changes nothing. Attributes follow the
    latest non-null value in meeting time, as the accumulator does. reindex and retotal."""
    if not frames:
        return
    d = _Delta()
    for frame in sorted(frames, key=lambda f: (f.relative_ms, f.stored_at or 0, f.frame_type)):
        d.add(frame, None)
    expiry = [e for e in (f.expires_at(expiry_days) for f in frames) if e is not None]
    exp = max(expiry, default=None)
    values = {"kind": "participant", "recording_id": frames[0].recording_id,
              "participant_id": frames[0].participant_id, "frame_count": d.frames, "bytes": d.bytes,
              "first_ms": d.first_ms, "last_ms": d.last_ms, "bot_id": d.bot_id, "types": set(d.types),
              **{attr: value for attr, (_ms, value) in d.attrs.items()}, "attrs_ms": d.attrs_ms,
              "counted_through": max((f.stored_at for f in frames if f.stored_at is not None), default=None),
              schema.TTL_ATTRIBUTE: exp}
    names, vals, sets = {}, {}, []
    for attr, value in values.items():
        if value is not None:
            names[f"#{attr}"] = attr
            vals[f":{attr}"] = value
            sets.append(f"#{attr} = :{attr}")
    dynamodb.update_item(
        TableName=table,
        Key=to_item({"pk": schema.recording_pk(frames[0].recording_id),
                     "sk": schema.participant_sk(frames[0].participant_id)}),
        UpdateExpression="SET " + ", ".join(sets) + (f" REMOVE {schema.TTL_ATTRIBUTE}" if exp is None else ""),
        ExpressionAttributeNames=names, ExpressionAttributeValues=to_item(vals),
    )
