"""Where frames go: the S3 object first, then the DynamoDB index (schema.py has the design).

Idempotent by construction: a frame's S3 key and its index key are functions of the frame,
so a redelivered frame overwrites the same object with the same bytes and its conditional
index put fails as a duplicate, which leaves the participant's counters alone.

The object's metadata carries everything its index item holds (StoredFrame), so the index
can be rebuilt from S3 alone (reindex.py) with the very same item-building code.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote

import boto3
from boto3.dynamodb.table import BatchWriter
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from . import schema
from .events import Frame
from .settings import DEFAULT_FRAME_EXPIRY_DAYS

# Standard retry mode: exponential backoff with jitter on throttling, 5xx and timeouts.
# Bounded so a Lambda invocation (29 s API Gateway integration limit) ends well inside it.
BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=64,
)

_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


def to_item(values: dict) -> dict:
    """Python values to a DynamoDB low-level item, dropping None (absent beats NULL)."""
    return {k: _serialize(v) for k, v in values.items() if v is not None}


def from_item(item: dict) -> dict:
    return {k: _deserialize(v) for k, v in item.items()}


def clients(region: str | None = None, endpoint_url: str | None = None):
    """S3 and DynamoDB clients with framesink's retry and timeout settings."""
    kwargs = {"config": BOTO_CONFIG, "region_name": region, "endpoint_url": endpoint_url}
    return boto3.client("s3", **kwargs), boto3.client("dynamodb", **kwargs)


class StoreError(RuntimeError):
    """A frame that could not be stored after retries. ``stage`` is ``s3`` or ``index``."""

    def __init__(self, stage: str, detail: str):
        super().__init__(f"{stage}: {detail}")
        self.stage = stage
        self.reason = f"{stage}_write_failed"
        self.detail = detail


@dataclass(frozen=True)
class StoreResult:
    key: str
    duplicate: bool


# S3 user metadata is limited to 2 KB in all; a participant name is free text of any length.
MAX_QUOTED_NAME = 1024


class MetadataError(ValueError):
    """An S3 object whose key or metadata cannot be turned back into an index item."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StoredFrame:
    """A frame as the index records it, without its pixels.

    Built from a parsed Frame at ingest (``from_frame``) or from an S3 object's key and
    metadata at reindex (``from_object``); both paths then write the same items with
    ``index_item`` and ``participant_attributes``.
    """

    recording_id: str
    participant_id: str
    participant_name: str | None
    is_host: bool | None
    platform: str | None
    frame_type: str
    relative_ms: int
    absolute: str | None
    width: int
    height: int
    size: int
    bot_id: str | None = None
    connection_id: str | None = None
    stored_at: int | None = None  # epoch ms of the S3 write

    @property
    def key(self) -> str:
        return schema.frame_key(self.recording_id, self.participant_id, self.frame_type, self.relative_ms)

    @classmethod
    def from_frame(cls, frame: Frame, *, bot_id: str | None, connection_id: str | None,
                   stored_at: int | None) -> "StoredFrame":
        return cls(
            recording_id=frame.recording_id, participant_id=frame.participant_id,
            participant_name=frame.participant_name, is_host=frame.is_host, platform=frame.platform,
            frame_type=frame.frame_type, relative_ms=frame.relative_ms, absolute=frame.absolute,
            width=frame.width, height=frame.height, size=len(frame.png),
            bot_id=bot_id, connection_id=connection_id, stored_at=stored_at,
        )

    @classmethod
    def from_object(cls, key: str, metadata: dict[str, str], size: int,
                    last_modified_ms: int | None = None) -> "StoredFrame":
        """Rebuild from an object's key, user metadata (HeadObject) and size.

        The key is the authority for ids, type and time; metadata that disagrees with it
        means the object was not written by framesink, and is refused.
        """
        match = schema.FRAME_KEY_PATTERN.fullmatch(key)
        if not match:
            raise MetadataError("not_a_frame_key", f"{key[:200]!r} is not a frame key")
        meta = {k.lower(): v for k, v in (metadata or {}).items()}
        for field, expected in (
            ("recording-id", match["recording_id"]),
            ("participant-id", match["participant_id"]),
            ("type", match["type"]),
            ("relative-ms", str(int(match["relative_ms"]))),
        ):
            if meta.get(field) != expected:
                raise MetadataError("metadata_mismatch", f"{key}: metadata {field} is not {expected!r}")
        try:
            width, height = int(meta["width"]), int(meta["height"])
            stored_at = int(meta["stored-at"]) if meta.get("stored-at") else last_modified_ms
        except (KeyError, ValueError):
            raise MetadataError("metadata_missing", f"{key}: width/height/stored-at missing or not integers") from None
        name = meta.get("participant-name")
        return cls(
            recording_id=match["recording_id"], participant_id=match["participant_id"],
            participant_name=unquote(name) if name is not None else None,
            is_host={"true": True, "false": False}.get(meta.get("is-host", "")),
            platform=unquote(meta["platform"]) if "platform" in meta else None,
            frame_type=match["type"], relative_ms=int(match["relative_ms"]),
            absolute=meta.get("absolute") or None, width=width, height=height, size=size,
            bot_id=meta.get("bot-id") or None, connection_id=meta.get("connection-id") or None,
            stored_at=stored_at,
        )

    def metadata(self) -> dict[str, str]:
        """User metadata: enough to rebuild the index item from the object alone (reindex).

        S3 metadata travels as HTTP headers, so free text (name, platform) is URL-quoted.
        An absent name, host flag or platform is an absent key, so None survives the trip.
        """
        meta = {
            "absolute": self.absolute or "",
            "bot-id": self.bot_id or "",
            "recording-id": self.recording_id,
            "participant-id": self.participant_id,
            "type": self.frame_type,
            "relative-ms": str(self.relative_ms),
            "width": str(self.width),
            "height": str(self.height),
        }
        if self.participant_name is not None:
            meta["participant-name"] = _quote_capped(self.participant_name, MAX_QUOTED_NAME)
        if self.is_host is not None:
            meta["is-host"] = "true" if self.is_host else "false"
        if self.platform is not None:
            meta["platform"] = _quote_capped(self.platform, 128)
        if self.connection_id:
            meta["connection-id"] = self.connection_id
        if self.stored_at is not None:
            meta["stored-at"] = str(self.stored_at)
        return meta

    def expires_at(self, expiry_days: int) -> int | None:
        """TTL of this frame's index items: from its store time, which S3's lifecycle counts
        from too (the absolute capture time only when the store time is unknown)."""
        created_ms = self.stored_at
        if created_ms is None and self.absolute:
            try:
                created_ms = int(datetime.fromisoformat(self.absolute).timestamp() * 1000)
            except ValueError:
                pass
        return schema.index_expires_at(created_ms, expiry_days)

    def index_item(self, expiry_days: int = DEFAULT_FRAME_EXPIRY_DAYS) -> dict:
        rel = schema.relative_ms_text(self.relative_ms)
        return {
            "pk": schema.stream_pk(self.recording_id, self.participant_id, self.frame_type),
            "sk": rel,
            "gsi1pk": schema.participant_gsi_pk(self.recording_id, self.participant_id),
            "gsi1sk": f"{rel}#{self.frame_type}",
            "gsi2pk": schema.recording_gsi_pk(self.recording_id),
            "gsi2sk": f"{rel}#{self.participant_id}#{self.frame_type}",
            "kind": "frame",
            "recording_id": self.recording_id,
            "participant_id": self.participant_id,
            "participant_name": self.participant_name,
            "type": self.frame_type,
            "relative_ms": self.relative_ms,
            "absolute": self.absolute,
            "s3_key": self.key,
            "bytes": self.size,
            "width": self.width,
            "height": self.height,
            "bot_id": self.bot_id,
            "connection_id": self.connection_id,
            "stored_at": self.stored_at,
            # The GSI copies are projections of this item, so they go with it.
            schema.TTL_ATTRIBUTE: self.expires_at(expiry_days),
        }

    def participant_attributes(self) -> dict:
        """The participant item's descriptive attributes this frame sets (None = leave as is)."""
        return {
            "recording_id": self.recording_id,
            "participant_id": self.participant_id,
            "kind": "participant",
            "participant_name": self.participant_name,
            "is_host": self.is_host,
            "platform": self.platform,
            "bot_id": self.bot_id,
        }


def _quote_capped(text: str, limit: int) -> str:
    quoted = quote(text, safe="")
    while len(quoted) > limit:  # cut whole characters, never half a %XX escape
        text = text[: max(len(text) * limit // len(quoted), len(text) - 1)]
        quoted = quote(text, safe="")
    return quoted


def s3_metadata(frame: Frame, bot_id: str | None, connection_id: str | None,
                stored_at: int | None = None) -> dict[str, str]:
    return StoredFrame.from_frame(frame, bot_id=bot_id, connection_id=connection_id,
                                  stored_at=stored_at).metadata()


def frame_index_item(
    frame: Frame, key: str, size: int, bot_id: str | None, connection_id: str | None
) -> dict:
    item = StoredFrame.from_frame(frame, bot_id=bot_id, connection_id=connection_id, stored_at=None).index_item()
    item.update(s3_key=key, bytes=size)
    return item


class FrameStore:
    def __init__(self, bucket: str, table: str, s3=None, dynamodb=None, *,
                 frame_expiry_days: int = DEFAULT_FRAME_EXPIRY_DAYS):
        if s3 is None or dynamodb is None:
            s3_default, ddb_default = clients()
            s3 = s3 or s3_default
            dynamodb = dynamodb or ddb_default
        self.bucket = bucket
        self.table = table
        self.s3 = s3
        self.dynamodb = dynamodb
        # Matches the bucket's lifecycle rule (settings.frame_expiry_days); 0 = no TTL.
        self.frame_expiry_days = frame_expiry_days
        # (bot, recording) pairs already written by this process -> the expires_at written:
        # one write per recording (and per day its expiry moves), not one per frame.
        # Bounded so a long-lived receiver does not grow without end.
        self._bot_recordings: OrderedDict = OrderedDict()

    def put_frame(
        self, frame: Frame, *, bot_id: str | None = None, connection_id: str | None = None
    ) -> StoreResult:
        """Store one frame. Raises StoreError when S3 or the index fails after retries."""
        record = StoredFrame.from_frame(
            frame, bot_id=bot_id or frame.bot_id, connection_id=connection_id,
            stored_at=int(time.time() * 1000),
        )
        key = record.key
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=frame.png,
                ContentType="image/png",
                Metadata=record.metadata(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("s3", _describe(exc)) from exc
        expires_at = self.expires_at(record)
        try:
            duplicate = not self._put_index_item(record.index_item(self.frame_expiry_days))
            if not duplicate:
                self._update_participant(record, expires_at)
            if record.bot_id:
                self._remember_bot_recording(record.bot_id, record.recording_id, record.stored_at, expires_at)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("index", _describe(exc)) from exc
        return StoreResult(key=key, duplicate=duplicate)

    def expires_at(self, frame: StoredFrame) -> int | None:
        return frame.expires_at(self.frame_expiry_days)

    def _put_index_item(self, item: dict) -> bool:
        """Put a frame's index item unless it exists. True if it was new.

        ``write_id`` tells a real duplicate from our own retried write: if an attempt landed
        but its response was lost (timeout, 500), botocore's retry fails the condition on an
        item carrying the same write_id, which is still this frame's first write.
        """
        item = {**item, "write_id": uuid.uuid4().hex}
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                old = exc.response.get("Item", {})
                return old.get("write_id", {}).get("S") == item["write_id"]
            raise

    def _update_participant(self, frame: StoredFrame, expires_at: int | None) -> None:
        # Each frame moves the participant's expiry to its own (frames arrive in store-time
        # order), so the participant stays listed as long as its newest frame.
        names, values, sets = _set_clauses({**frame.participant_attributes(), schema.TTL_ATTRIBUTE: expires_at})
        values.update({":ms": frame.relative_ms, ":one": 1, ":bytes": frame.size})
        sets.append("first_ms = if_not_exists(first_ms, :ms)")
        key = _participant_key(frame.recording_id, frame.participant_id)
        update = {"TableName": self.table, "Key": key, "ExpressionAttributeNames": {**names, "#b": "bytes"},
                  "ExpressionAttributeValues": to_item(values)}
        add = " ADD frame_count :one, #b :bytes" + _remove_ttl(expires_at)
        # Frames arrive in time order: one write moves last_ms forward, on the condition that
        # it is not ahead of this frame (a retried write that landed meets the condition too).
        try:
            self.dynamodb.update_item(
                **update,
                UpdateExpression="SET " + ", ".join([*sets, "last_ms = :ms"]) + add,
                ConditionExpression="attribute_not_exists(last_ms) OR last_ms <= :ms",
            )
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        # A late frame (older than last_ms): count it without moving last_ms.
        result = self.dynamodb.update_item(**update, UpdateExpression="SET " + ", ".join(sets) + add,
                                           ReturnValues="ALL_NEW")
        updated = from_item(result.get("Attributes", {}))
        # if_not_exists only sets the first value seen, so widen the range with a
        # conditional write in the (rare) case this frame lies outside it.
        for attr, outside in (("first_ms", ">"), ("last_ms", "<")):
            current = updated.get(attr)
            if current is not None and (
                frame.relative_ms < current if outside == ">" else frame.relative_ms > current
            ):
                try:
                    self.dynamodb.update_item(
                        TableName=self.table,
                        Key=key,
                        UpdateExpression=f"SET {attr} = :ms",
                        ConditionExpression=f"{attr} {outside} :ms",
                        ExpressionAttributeValues=to_item({":ms": frame.relative_ms}),
                    )
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise

    def _remember_bot_recording(self, bot_id: str, recording_id: str, seen_at: int | None = None,
                                expires_at: int | None = None) -> None:
        pair = (bot_id, recording_id)
        if pair in self._bot_recordings:
            written = self._bot_recordings[pair]
            # expires_at is day-granular (index_expires_at), so this rewrites about once a day.
            if expires_at is None or (written is not None and written >= expires_at):
                return
        now = seen_at if seen_at is not None else int(time.time() * 1000)
        values = {":kind": "recording", ":bot": bot_id, ":rec": recording_id, ":now": now}
        ttl = ""
        if expires_at is not None:
            values[":exp"] = expires_at
            ttl = f", {schema.TTL_ATTRIBUTE} = :exp"
        self.dynamodb.update_item(
            TableName=self.table,
            Key=to_item({"pk": schema.bot_pk(bot_id), "sk": f"REC#{recording_id}"}),
            UpdateExpression=(
                "SET kind = :kind, bot_id = :bot, recording_id = :rec, "
                "first_seen = if_not_exists(first_seen, :now)" + ttl + _remove_ttl(expires_at)
            ),
            ExpressionAttributeValues=to_item(values),
        )
        self._bot_recordings[pair] = expires_at
        self._bot_recordings.move_to_end(pair)
        if len(self._bot_recordings) > 10_000:
            self._bot_recordings.popitem(last=False)

    # -- reindex: index objects that are already in S3 (reindex.py) ----------------------

    def write_index_items(self, frames: list[StoredFrame]) -> None:
        """Put (overwrite) the frames' index items in batches of 25.

        An item is a pure function of its object, so overwriting is idempotent. boto3's
        BatchWriter retries the unprocessed items a throttled BatchWriteItem hands back.
        """
        with BatchWriter(self.table, self.dynamodb) as writer:
            for frame in frames:
                writer.put_item(Item=to_item(frame.index_item(self.frame_expiry_days)))

    def set_participant_totals(self, frames: list[StoredFrame]) -> None:
        """Write one participant's item from all of its frames: counts and first/last are
        SET (recomputed), never ADDed, so running reindex twice changes nothing. Descriptive
        attributes apply in time order, as at ingest: the latest non-empty value wins."""
        if not frames:
            return
        ordered = sorted(frames, key=lambda f: (f.relative_ms, f.stored_at or 0, f.frame_type))
        attributes: dict = {}
        for frame in ordered:
            attributes.update({k: v for k, v in frame.participant_attributes().items() if v is not None})
        names, values, sets = _set_clauses(attributes)
        expiry = [e for e in map(self.expires_at, frames) if e is not None]
        totals = {
            schema.TTL_ATTRIBUTE: max(expiry, default=None),  # as ingest leaves it: its newest frame's
            "frame_count": len(frames),
            "bytes": sum(f.size for f in frames),
            "first_ms": ordered[0].relative_ms,
            "last_ms": max(f.relative_ms for f in frames),
        }
        for attr, value in totals.items():
            if value is not None:
                names[f"#{attr}"] = attr
                values[f":{attr}"] = value
                sets.append(f"#{attr} = :{attr}")
        self.dynamodb.update_item(
            TableName=self.table,
            Key=_participant_key(ordered[0].recording_id, ordered[0].participant_id),
            UpdateExpression="SET " + ", ".join(sets) + _remove_ttl(totals[schema.TTL_ATTRIBUTE]),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item(values),
        )

    def remember_bot_recording(self, bot_id: str, recording_id: str, seen_at: int | None,
                               expires_at: int | None = None) -> None:
        """The bot's recording item (first_seen is kept if it exists)."""
        self._bot_recordings.pop((bot_id, recording_id), None)
        self._remember_bot_recording(bot_id, recording_id, seen_at, expires_at)


def _set_clauses(attributes: dict) -> tuple[dict, dict, list[str]]:
    """SET clauses for the non-None attributes, every name behind a placeholder."""
    names, values, sets = {}, {}, []
    for attr, value in attributes.items():
        if value is not None:
            names[f"#{attr}"] = attr
            values[f":{attr}"] = value
            sets.append(f"#{attr} = :{attr}")
    return names, values, sets


def _remove_ttl(expires_at: int | None) -> str:
    """With no expiry (frames kept forever), clear one an earlier setting left behind."""
    return f" REMOVE {schema.TTL_ATTRIBUTE}" if expires_at is None else ""


def _participant_key(recording_id: str, participant_id: str) -> dict:
    return to_item({"pk": schema.recording_pk(recording_id), "sk": schema.participant_sk(participant_id)})


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}"[:300]
    return f"{exc.__class__.__name__}: {exc}"[:300]
