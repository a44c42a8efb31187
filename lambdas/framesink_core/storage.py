"""Where frames go: the S3 object first, then the DynamoDB index (schema.py has the design).

Idempotent by construction: a frame's S3 key and its index key are functions of the frame,
so a redelivered frame overwrites the same object with the same bytes and its conditional
index put fails as a duplicate, which leaves the participant's counters alone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from . import schema
from .events import Frame

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


def s3_metadata(frame: Frame, bot_id: str | None, connection_id: str | None) -> dict[str, str]:
    """User metadata: enough to rebuild the index item from the object alone (reindex).

    S3 metadata travels as HTTP headers, so free text (the participant name) is URL-quoted.
    """
    meta = {
        "absolute": frame.absolute or "",
        "bot-id": bot_id or "",
        "recording-id": frame.recording_id,
        "participant-id": frame.participant_id,
        "participant-name": quote(frame.participant_name or "", safe=""),
        "type": frame.frame_type,
        "relative-ms": str(frame.relative_ms),
        "width": str(frame.width),
        "height": str(frame.height),
    }
    if connection_id:
        meta["connection-id"] = connection_id
    return meta


def frame_index_item(
    frame: Frame, key: str, size: int, bot_id: str | None, connection_id: str | None
) -> dict:
    rel = schema.relative_ms_text(frame.relative_ms)
    return {
        "pk": schema.stream_pk(frame.recording_id, frame.participant_id, frame.frame_type),
        "sk": rel,
        "gsi1pk": schema.participant_gsi_pk(frame.recording_id, frame.participant_id),
        "gsi1sk": f"{rel}#{frame.frame_type}",
        "gsi2pk": schema.recording_gsi_pk(frame.recording_id),
        "gsi2sk": f"{rel}#{frame.participant_id}#{frame.frame_type}",
        "kind": "frame",
        "recording_id": frame.recording_id,
        "participant_id": frame.participant_id,
        "participant_name": frame.participant_name,
        "type": frame.frame_type,
        "relative_ms": frame.relative_ms,
        "absolute": frame.absolute,
        "s3_key": key,
        "bytes": size,
        "width": frame.width,
        "height": frame.height,
        "bot_id": bot_id,
        "connection_id": connection_id,
    }


class FrameStore:
    def __init__(self, bucket: str, table: str, s3=None, dynamodb=None):
        if s3 is None or dynamodb is None:
            s3_default, ddb_default = clients()
            s3 = s3 or s3_default
            dynamodb = dynamodb or ddb_default
        self.bucket = bucket
        self.table = table
        self.s3 = s3
        self.dynamodb = dynamodb
        # (bot, recording) pairs already written by this process: one write per recording,
        # not one per frame. Bounded so a long-lived receiver does not grow without end.
        self._bot_recordings: OrderedDict = OrderedDict()

    def put_frame(
        self, frame: Frame, *, bot_id: str | None = None, connection_id: str | None = None
    ) -> StoreResult:
        """Store one frame. Raises StoreError when S3 or the index fails after retries."""
        bot_id = bot_id or frame.bot_id
        key = frame.s3_key
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=frame.png,
                ContentType="image/png",
                Metadata=s3_metadata(frame, bot_id, connection_id),
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("s3", _describe(exc)) from exc
        try:
            item = frame_index_item(frame, key, len(frame.png), bot_id, connection_id)
            item["stored_at"] = int(time.time() * 1000)
            duplicate = not self._put_index_item(item)
            if not duplicate:
                self._update_participant(frame, len(frame.png), bot_id)
            if bot_id:
                self._remember_bot_recording(bot_id, frame.recording_id)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("index", _describe(exc)) from exc
        return StoreResult(key=key, duplicate=duplicate)

    def _put_index_item(self, item: dict) -> bool:
        """Put a frame's index item unless it exists. True if it was new."""
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(pk)",
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def _update_participant(self, frame: Frame, size: int, bot_id: str | None) -> None:
        names = {"#n": "participant_name"}
        values = {
            ":rec": frame.recording_id,
            ":pid": frame.participant_id,
            ":ms": frame.relative_ms,
            ":one": 1,
            ":bytes": size,
            ":kind": "participant",
        }
        sets = [
            "recording_id = :rec",
            "participant_id = :pid",
            "kind = :kind",
            "first_ms = if_not_exists(first_ms, :ms)",
            "last_ms = if_not_exists(last_ms, :ms)",
        ]
        for attr, value in (
            ("#n", frame.participant_name),
            ("is_host", frame.is_host),
            ("platform", frame.platform),
            ("bot_id", bot_id),
        ):
            if value is not None:
                placeholder = ":" + attr.lstrip("#")
                sets.append(f"{attr} = {placeholder}")
                values[placeholder] = value
        key = to_item({"pk": schema.recording_pk(frame.recording_id), "sk": schema.participant_sk(frame.participant_id)})
        result = self.dynamodb.update_item(
            TableName=self.table,
            Key=key,
            UpdateExpression="SET " + ", ".join(sets) + " ADD frame_count :one, #b :bytes",
            ExpressionAttributeNames={**names, "#b": "bytes"},
            ExpressionAttributeValues=to_item(values),
            ReturnValues="UPDATED_NEW",
        )
        updated = from_item(result.get("Attributes", {}))
        # Out-of-order frames: if_not_exists only sets the first value seen, so widen the
        # range with a conditional write in the (rare) case this frame lies outside it.
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

    def _remember_bot_recording(self, bot_id: str, recording_id: str) -> None:
        pair = (bot_id, recording_id)
        if pair in self._bot_recordings:
            return
        now = int(time.time() * 1000)
        self.dynamodb.update_item(
            TableName=self.table,
            Key=to_item({"pk": schema.bot_pk(bot_id), "sk": f"REC#{recording_id}"}),
            UpdateExpression=(
                "SET kind = :kind, bot_id = :bot, recording_id = :rec, "
                "first_seen = if_not_exists(first_seen, :now)"
            ),
            ExpressionAttributeValues=to_item(
                {":kind": "recording", ":bot": bot_id, ":rec": recording_id, ":now": now}
            ),
        )
        self._bot_recordings[pair] = True
        if len(self._bot_recordings) > 10_000:
            self._bot_recordings.popitem(last=False)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}"[:300]
    return f"{exc.__class__.__name__}: {exc}"[:300]
