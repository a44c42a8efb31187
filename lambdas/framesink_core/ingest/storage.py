"""Where frames go: the S3 object first, then its DynamoDB index item (schema.py has the design).

First write wins, decided by S3: the object is written with a conditional put
(``If-None-Match: *``; objects.py: botocore, or obstore in the receiver). A 412 means the key
exists; the stored object is then compared with this frame (size, then its CRC32: S3's
checksum or the ``crc32`` metadata; the bytes when the object has neither):
- the same bytes written by this very call (its ``write-id``): a retry of our own whose first
  attempt landed, so it is a new frame;
- the same bytes written earlier: a duplicate. Nothing is rewritten, but if the first writer
  died between S3 and the index, its index item is written now from the object's metadata;
- different bytes: ``conflicting_frame``. The first object and its index item stay as they
  were. Two frames of one stream whose times round to the same millisecond are a conflict.

So the index put needs no condition (S3 already decided), and a frame costs two AWS calls:
PutObject and one index write (PutItem, or one slot of a receiver's BatchWriteItem). A frame
is reported stored only when both are durable. Participant totals are not written per frame:
see totals.py.

The object's metadata carries everything its index item holds (StoredFrame), so the index
can be rebuilt from S3 alone (reindex.py) with the very same item-building code.
"""

from __future__ import annotations

import base64
import time
import uuid
import zlib
from concurrent.futures import Future
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from framesink_core.ingest.events import Frame
from framesink_core.ingest.outlet import Outlet, frame_event
from framesink_core.ingest.stored_frame import MetadataError, StoredFrame
from framesink_core.ingest.totals import DEFAULT_FLUSH_SECONDS, ParticipantTotals
from framesink_core.shared import schema
from framesink_core.shared.items import BOTO_CONFIG, to_item
from framesink_core.shared.objects import (
    CHECKSUM_METADATA,
    FINGERPRINT_METADATA,
    BotoObjects,
    ObjectExists,
    ObjectWriteError,
    WriteRace,
)
from framesink_core.shared.objects import describe_client_error as _describe
from framesink_core.shared.settings import DEFAULT_FRAME_EXPIRY_DAYS

# S3 answers 409 ConditionalRequestConflict while another conditional write to the same key
# is in flight; botocore does not retry it. A redelivery racing its original is that case.
# (objects.WriteRace: also the native client's timeouts, which it does not retry for a PUT.)
CONFLICT_RETRIES = 3


# The ingest path's clients skip botocore's client-side parameter validation: every request
# they make is built here from parsed, bounded values, and validating a 25-item
# BatchWriteItem walks every attribute of every item in Python (measured with yappi in the
# receiver: two thirds of its DynamoDB CPU). A malformed request still fails, at the service.
# The S3 body is not SHA-256-signed: over HTTPS with a checksum header that is botocore's own
# default (TLS protects it in transit, S3 verifies the CRC32), and over plain HTTP (moto) it
# would hash every 250 KB frame for nothing. The CRC32 itself is computed once, by put_frame.
HOT_PATH_CONFIG = BOTO_CONFIG.merge(Config(parameter_validation=False, s3={"payload_signing_enabled": False}))


def clients(region: str | None = None, endpoint_url: str | None = None):
    """S3 and DynamoDB clients with framesink's retry and timeout settings (the store's)."""
    kwargs = {"config": HOT_PATH_CONFIG, "region_name": region, "endpoint_url": endpoint_url}
    return boto3.client("s3", **kwargs), boto3.client("dynamodb", **kwargs)


class StoreError(RuntimeError):
    """A frame that could not be stored after retries. ``stage`` is ``s3`` or ``index``."""

    def __init__(self, stage: str, detail: str):
        super().__init__(f"{stage}: {detail}")
        self.stage = stage
        self.reason = f"{stage}_write_failed"
        self.detail = detail


class FrameConflict(ValueError):
    """Different bytes for a key that already holds a frame: first write wins."""

    reason = "conflicting_frame"

    def __init__(self, key: str, detail: str):
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


@dataclass(frozen=True)
class StoreResult:
    key: str
    duplicate: bool
    repaired: bool = False  # a duplicate whose missing index item was written now
    record: StoredFrame | None = None  # the repaired item's frame


def resolved(fn, *args) -> Future:
    """A finished future holding ``fn(*args)``'s result, or the StoreError it raised (a
    botocore error becomes StoreError("index"), as only index writes come through here)."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except StoreError as exc:
        future.set_exception(exc)
    except (ClientError, BotoCoreError) as exc:
        future.set_exception(StoreError("index", _describe(exc)))
    return future


def crc32_base64(data: bytes) -> str:
    """S3's ChecksumCRC32 form: the big-endian CRC32, base64."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


class DirectIndexWriter:
    """One PutItem per frame (a Lambda handles one message per invocation)."""

    def __init__(self, table: str, dynamodb):
        self.table = table
        self.dynamodb = dynamodb

    def put(self, item: dict) -> None:
        self.dynamodb.put_item(TableName=self.table, Item=to_item(item))

    def submit(self, item: dict) -> Future:
        """put() now; its outcome as a resolved future (the batching writer's interface)."""
        return resolved(self.put, item)

    def close(self) -> None:
        pass


class FrameStore:
    def __init__(self, bucket: str, table: str, s3=None, dynamodb=None, *,
                 frame_expiry_days: int = DEFAULT_FRAME_EXPIRY_DAYS, index_writer=None,
                 totals_interval: float | None = None, objects=None, outlet: Outlet | None = None,
                 audio=None):
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
        self.index_writer = index_writer or DirectIndexWriter(table, dynamodb)
        # The frame's PutObject (objects.py); reads, heads and repairs stay on ``s3``.
        self.objects = objects or BotoObjects(s3, bucket)
        self.totals = ParticipantTotals(
            table, dynamodb, interval=DEFAULT_FLUSH_SECONDS if totals_interval is None else totals_interval)
        # Frame events for what this store makes durable (outlet.py); the base Outlet sends none.
        self.outlet = outlet or Outlet()
        # Audio objects (audio.py): each chunk written now, or the receiver's buffered writer.
        if audio is None:
            from framesink_core.ingest.audio import DirectAudio

            audio = DirectAudio(s3, bucket, self.outlet)
        self.audio = audio

    def submit_context(self, event) -> Future:
        """A participant event or utterance (context_events.py) into the index, through the
        same writer as frames' items (batched in the receiver); expires with the recording."""
        expires_at = schema.index_expires_at(int(time.time() * 1000), self.frame_expiry_days)
        return self.index_writer.submit(event.item(expires_at))

    def put_frame(
        self, frame: Frame, *, bot_id: str | None = None, connection_id: str | None = None
    ) -> StoreResult:
        """Store one frame, first write wins. Raises StoreError when S3 or the index fails
        after retries, FrameConflict when the key holds other bytes."""
        return self.begin_put(frame, bot_id=bot_id, connection_id=connection_id).result()

    def begin_put(
        self, frame: Frame, *, bot_id: str | None = None, connection_id: str | None = None
    ) -> Future:
        """put_frame in two stages: the S3 write now, in this thread (StoreError and
        FrameConflict are raised here), then a future that resolves with the StoreResult once
        the frame's index item is durable, or fails with StoreError("index"). With the
        batching writer the item waits for its batch (<= 50 ms) without holding this thread."""
        record = StoredFrame.from_frame(
            frame, bot_id=bot_id or frame.bot_id, connection_id=connection_id,
            stored_at=int(time.time() * 1000),
        )
        write_id = uuid.uuid4().hex
        result = self._put_object(record, frame.png, write_id, frame.fingerprint)
        if result is not None:  # a duplicate: decided (and its index repaired) already
            if result.repaired:  # its first writer died before the index: new to consumers
                self.outlet.publish(frame_event(result.record, self.bucket))
            done = resolved(lambda: result)
        else:  # written now (or by a retry of this very call)
            done = Future()
            expires_at = self.expires_at(record)

            def indexed(item: Future) -> None:
                try:
                    item.result()  # StoreError("index")
                    self.totals.add(record, expires_at)  # counted once its item is durable
                    self.outlet.publish(frame_event(record, self.bucket))  # durable: say so
                except BaseException as exc:  # noqa: BLE001 - whoever waits on `done` gets it
                    done.set_exception(exc)
                    return
                done.set_result(StoreResult(record.key, duplicate=False))

            self.index_writer.submit(record.index_item(self.frame_expiry_days)).add_done_callback(indexed)
        self.totals.flush_due()
        return done

    def expires_at(self, frame: StoredFrame) -> int | None:
        return frame.expires_at(self.frame_expiry_days)

    def _put_object(self, record: StoredFrame, png: bytes, write_id: str,
                     fingerprint: str | None = None) -> StoreResult | None:
        """None if this call wrote the object; a StoreResult for a duplicate."""
        metadata = {**record.metadata(), "write-id": write_id}
        # What a duplicate is later compared by (_existing): the PNG walk's fingerprint, free
        # (png.py), and the CRC32 only where S3 verifies the body by it (botocore's header) or
        # there is no fingerprint (objects.py): one pass over the bytes per frame, not two.
        if fingerprint:
            metadata[FINGERPRINT_METADATA] = fingerprint
        checksum = crc32_base64(png) if self.objects.wants_crc32 or not fingerprint else None
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self.objects.put_new(record.key, png, metadata, checksum)
                return None
            except ObjectExists:
                return self._existing(record, png, write_id, checksum, fingerprint)
            except WriteRace as exc:
                if attempt < CONFLICT_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise StoreError("s3", str(exc)) from exc
            except ObjectWriteError as exc:
                raise StoreError("s3", str(exc)) from exc
        raise AssertionError("unreachable")

    def _existing(self, record: StoredFrame, png: bytes, write_id: str, checksum: str | None,
                  fingerprint: str | None = None) -> StoreResult | None:
        key = record.key
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            same = head["ContentLength"] == len(png)
            if same:
                meta = head.get("Metadata") or {}
                stored_checksum = head.get("ChecksumCRC32") or meta.get(CHECKSUM_METADATA)
                if meta.get(FINGERPRINT_METADATA) and fingerprint:
                    same = meta[FINGERPRINT_METADATA] == fingerprint
                elif stored_checksum:
                    same = stored_checksum == (checksum or crc32_base64(png))
                else:  # written with neither: compare the bytes themselves
                    same = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read() == png
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("s3", _describe(exc)) from exc
        if not same:
            raise FrameConflict(key, f"holds a different frame ({head['ContentLength']} bytes, this one "
                                     f"{len(png)}): the first write wins")
        meta = head.get("Metadata") or {}
        if meta.get("write-id") == write_id:
            return None  # our own first attempt landed and its answer was lost
        # A redelivery. Its first writer may have died between S3 and the index: make sure
        # the item exists, built from the object exactly as reindex would build it.
        try:
            first = StoredFrame.from_object(key, meta, head["ContentLength"],
                                            int(head["LastModified"].timestamp() * 1000))
        except MetadataError:
            return StoreResult(key, duplicate=True)  # not written by framesink: leave it alone
        try:
            found = self.dynamodb.get_item(TableName=self.table, Key=to_item(first.index_key),
                                           ProjectionExpression="pk", ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("index", _describe(exc)) from exc
        if "Item" in found:
            return StoreResult(key, duplicate=True)
        self._write_index(first)
        return StoreResult(key, duplicate=True, repaired=True, record=first)

    def _write_index(self, record: StoredFrame) -> None:
        """Raises StoreError("index"): DirectIndexWriter's botocore errors are turned into it
        here, the batching writer raises it itself."""
        try:
            self.index_writer.put(record.index_item(self.frame_expiry_days))
        except (ClientError, BotoCoreError) as exc:
            raise StoreError("index", _describe(exc)) from exc

    def close(self) -> None:
        """Flush what is pending: queued index writes, then participant totals. The outlet is
        closed by its owner once nothing more is stored (the receiver's spool drains after)."""
        self.audio.close()
        self.index_writer.close()
        self.totals.flush_all()

    # -- reindex: index objects that are already in S3 (reindex.py) ----------------------

    def write_index_items(self, frames: list[StoredFrame]) -> None:
        """Put (overwrite) the frames' index items in batches of 25.

        An item is a pure function of its object, so overwriting is idempotent. boto3's
        BatchWriter retries the unprocessed items a throttled BatchWriteItem hands back.
        """
        from boto3.dynamodb.table import BatchWriter

        with BatchWriter(self.table, self.dynamodb, overwrite_by_pkeys=["pk", "sk"]) as writer:
            for frame in frames:
                writer.put_item(Item=to_item(frame.index_item(self.frame_expiry_days)))
