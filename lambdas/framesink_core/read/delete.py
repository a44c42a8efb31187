"""Delete a recording (a privacy request): its frames, exports and index items.

What goes: every object under ``recordings/<rec>/`` and ``exports/<rec>/`` (listed, deleted
1,000 per DeleteObjects call), every item of the recording's partition (frames and their GSI
copies, participants, slides, exports, the export job, the META item: one Query, deleted 25
per BatchWriteItem), and the recording's item under each bot that streamed it. A dry run
counts the same things and deletes nothing. Bot status events stay: they belong to the bot,
not the recording (and expire with the frames' lifetime).

Delete wins over work in flight: before anything goes, a tombstone item
(``DELETED#<rec>``, expiring with the frames' lifetime) is written; the export job and the
slide analyzer write first and then look for it, undoing what they wrote when it is there, so
whichever finishes last, nothing of the recording comes back (a writer that finished before
the tombstone was swept with the rest). Frames still arriving on a live connection are refused
(``recording_deleted``) once the ingest process sees the tombstone (tombstones.py: within 2 s);
a frame that passed its check just before is removed by a second sweep 5 s later.

With a ``deadline`` (the query API's 30 s) it stops between batches when time runs out and
says ``complete: false``; calling it again goes on where it stopped (what is deleted is no
longer listed), so a caller repeats until ``complete``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from boto3.dynamodb.table import BatchWriter

from framesink_core.ingest.tombstones import SETTLE_SECONDS, write_tombstone
from framesink_core.read.query import FrameIndex, check_id
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item


@dataclass
class DeleteResult:
    recording_id: str
    dry_run: bool
    objects: int = 0
    object_bytes: int = 0
    exports: int = 0
    items: int = 0
    bots: list[str] = field(default_factory=list)
    complete: bool = True
    late_objects: int = 0  # found by the second sweep: stored while the delete ran
    late_items: int = 0

    @property
    def found(self) -> bool:
        """Anything was stored under the recording (a mistyped id finds nothing)."""
        return bool(self.objects or self.exports or self.items)

    def as_dict(self) -> dict:
        return {"recording_id": self.recording_id, "dry_run": self.dry_run, "frame_objects": self.objects,
                "export_objects": self.exports, "bytes": self.object_bytes, "index_items": self.items,
                "bots": self.bots, "complete": self.complete,
                "late": {"frame_objects": self.late_objects, "index_items": self.late_items}}


def _keys(s3, bucket: str, prefix: str):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def delete_recording(s3, dynamodb, bucket: str, table: str, recording_id: str, *, dry_run: bool = True,
                     deadline: float | None = None, settle_seconds: float = SETTLE_SECONDS) -> DeleteResult:
    """Delete (or, with ``dry_run``, count) a recording. ``deadline``: a time.monotonic() after
    which it stops between batches (``complete`` False). ``settle_seconds``: after the sweep,
    wait this long and sweep again for frames that passed an ingest process's tombstone check
    just before the tombstone landed (``late_objects`` / ``late_items``); 0 skips it."""
    recording_id = check_id(recording_id, "recording")
    result = DeleteResult(recording_id, dry_run)
    stored = not dry_run and _anything_stored(s3, dynamodb, bucket, table, recording_id)
    if stored:
        write_tombstone(dynamodb, table, recording_id)  # first: late writers see it, then undo
    _sweep(s3, dynamodb, bucket, table, recording_id, result, dry_run, deadline)
    if stored and result.complete and settle_seconds > 0 and (
            deadline is None or time.monotonic() + settle_seconds < deadline):
        time.sleep(settle_seconds)
        late = DeleteResult(recording_id, dry_run)
        _sweep(s3, dynamodb, bucket, table, recording_id, late, dry_run, deadline)
        result.late_objects, result.late_items = late.objects, late.items
        result.objects += late.objects
        result.object_bytes += late.object_bytes
        result.items += late.items
        result.exports += late.exports
        result.bots = sorted(set(result.bots) | set(late.bots))
        result.complete = late.complete
    return result


def _sweep(s3, dynamodb, bucket: str, table: str, recording_id: str, result: DeleteResult, dry_run: bool,
           deadline: float | None) -> None:
    """List and (unless ``dry_run``) delete the recording's objects and items, into ``result``."""

    def out_of_time() -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            result.complete = False
        return not result.complete

    for prefix, attr in ((schema.recording_prefix(recording_id), "objects"), (schema.export_prefix(recording_id), "exports")):
        batch: list[dict] = []
        for obj in _keys(s3, bucket, prefix):
            setattr(result, attr, getattr(result, attr) + 1)
            result.object_bytes += obj.get("Size", 0)
            batch.append({"Key": obj["Key"]})
            if len(batch) == 1000:
                if not dry_run:
                    _delete_objects(s3, bucket, batch)
                batch = []
                if out_of_time():
                    return
        if batch and not dry_run:
            _delete_objects(s3, bucket, batch)
        if out_of_time():
            return

    bots: set[str] = set()
    keys: list[dict] = []
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=to_item({":pk": schema.recording_pk(recording_id)}),
        ProjectionExpression="pk, sk, bot_id")
    for page in pages:
        for raw in page.get("Items", []):
            item = from_item(raw)
            keys.append({"pk": item["pk"], "sk": item["sk"]})
            if item.get("bot_id"):
                bots.add(item["bot_id"])
    for bot in sorted(bots):
        found = dynamodb.get_item(TableName=table, Key=to_item({"pk": schema.bot_pk(bot),
                                                                 "sk": schema.bot_recording_sk(recording_id)}))
        if "Item" in found:
            keys.append({"pk": schema.bot_pk(bot), "sk": schema.bot_recording_sk(recording_id)})
    result.items = len(keys)
    result.bots = sorted(bots)
    if not dry_run and keys:
        # boto3's BatchWriter: 25 per BatchWriteItem, unprocessed items retried.
        with BatchWriter(table, dynamodb) as writer:
            for k, key in enumerate(keys):
                writer.delete_item(Key=to_item(key))
                if k % 500 == 499 and out_of_time():
                    break


def _anything_stored(s3, dynamodb, bucket: str, table: str, recording_id: str) -> bool:
    """A mistyped id leaves no tombstone behind (it would shadow a future recording of that id)."""
    for prefix in (schema.recording_prefix(recording_id), schema.export_prefix(recording_id)):
        if s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"):
            return True
    return FrameIndex(table, dynamodb).has_recording(recording_id)


def _delete_objects(s3, bucket: str, batch: list[dict]) -> None:
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    errors = answer.get("Errors") or []
    if errors:
        first = errors[0]
        raise RuntimeError(f"S3 could not delete {len(errors)} objects, e.g. {first.get('Key')}: "
                           f"{first.get('Code')} {first.get('Message')}")
