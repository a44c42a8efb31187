"""Rebuild a recording's index: from its S3 objects (``reindex``), or its participant totals
from its frame items (``retotal``).

S3 is the source of truth: every object's key and metadata hold what its index item holds
(storage.StoredFrame), so reindex lists ``recordings/<rec>/``, reads each object's metadata
(HeadObject) and writes the items with the same code ingest uses. Frame items are
overwritten (each is a function of its object); participant totals are recomputed from the
objects and SET, never ADDed, so a second run changes nothing. Expiry (DynamoDB TTL) comes
from each object's stored-at time and the store's frame_expiry_days, as at ingest.

Run it while the recording is not being ingested: a frame stored between the listing and
the participant write is indexed, but its participant's totals miss it until the next run.

``retotal`` is the cheap half: one paginated Query of the recording's frame items, then the
same exact totals. The end-of-meeting export job runs it, so totals that lagged during the
meeting (totals.py) are exact once the meeting is over.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from framesink_core.ingest.storage import FrameStore
from framesink_core.ingest.stored_frame import MetadataError, StoredFrame
from framesink_core.ingest.totals import set_exact_totals, write_recording_items
from framesink_core.read.query import check_id
from framesink_core.ingest.audio import is_audio_key
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item


@dataclass
class ReindexResult:
    recording_id: str
    objects: int = 0
    indexed: int = 0
    participants: int = 0
    bots: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    seconds: float = 0.0


def reindex_recording(
    store: FrameStore,
    recording_id: str,
    *,
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> ReindexResult:
    """Index every frame object of a recording. ``progress(n)`` is called per object read."""
    recording_id = check_id(recording_id, "recording")
    started = time.monotonic()
    result = ReindexResult(recording_id)
    listed = []
    paginator = store.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=store.bucket, Prefix=schema.recording_prefix(recording_id)):
        # Audio objects (audio.py) are not frames and have no index item: not counted as skipped.
        listed += [(o["Key"], o["Size"]) for o in page.get("Contents", []) if not is_audio_key(o["Key"])]
    result.objects = len(listed)

    def read(entry):
        key, size = entry
        try:
            if not schema.FRAME_KEY_PATTERN.fullmatch(key):
                raise MetadataError("not_a_frame_key", key)
            head = store.s3.head_object(Bucket=store.bucket, Key=key)
            modified = int(head["LastModified"].timestamp() * 1000)
            return StoredFrame.from_object(key, head.get("Metadata", {}), head["ContentLength"], modified)
        except MetadataError as exc:
            return exc
        finally:
            if progress:
                progress(1)

    frames: list[StoredFrame] = []
    # HeadObject is one round trip per object: a thread pool hides the latency
    # (boto3 clients are thread-safe; BOTO_CONFIG allows 64 pooled connections).
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (key, _), outcome in zip(listed, pool.map(read, listed)):
            if isinstance(outcome, MetadataError):
                result.skipped.append((key, outcome.reason))
            else:
                frames.append(outcome)

    store.write_index_items(frames)
    result.indexed = len(frames)
    result.participants, result.bots = write_totals(store, recording_id, frames)
    result.seconds = time.monotonic() - started
    return result


def write_totals(store: FrameStore, recording_id: str, frames: Iterable[StoredFrame]) -> tuple[int, int]:
    """Exact participant totals, the recording's META item and its bots' recording items,
    as ingest leaves them. Returns (participants, bots)."""
    by_participant: dict[str, list[StoredFrame]] = defaultdict(list)
    first_seen: dict[str | None, int] = {}  # bot (None: no bot) -> earliest stored_at
    expiry: dict[str | None, int | None] = {}  # bot -> its newest frame's expiry
    for frame in frames:
        by_participant[frame.participant_id].append(frame)
        bot = frame.bot_id
        seen = frame.stored_at if frame.stored_at is not None else int(time.time() * 1000)
        first_seen[bot] = min(seen, first_seen.get(bot, seen))
        expires = store.expires_at(frame)
        if expires is not None:
            expiry[bot] = max(expires, expiry.get(bot) or expires)
        else:
            expiry.setdefault(bot, None)
    for participant_frames in by_participant.values():
        set_exact_totals(store.dynamodb, store.table, participant_frames, store.frame_expiry_days)
    for bot, seen in first_seen.items():
        write_recording_items(store.dynamodb, store.table, recording_id, bot, seen, expiry[bot])
    return len(by_participant), len([b for b in first_seen if b])


def retotal_recording(store: FrameStore, recording_id: str) -> int:
    """Recompute a recording's participant totals exactly from its frame items (one Query,
    paginated). Returns the number of frames counted."""
    pk = schema.recording_pk(check_id(recording_id, "recording"))
    pages = store.dynamodb.get_paginator("query").paginate(
        TableName=store.table, KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
        ExpressionAttributeValues=to_item({":pk": pk, ":lo": schema.FRAME_SK_LOW, ":hi": schema.FRAME_SK_HIGH}))
    frames = [StoredFrame.from_index_item(from_item(item)) for page in pages for item in page.get("Items", [])]
    by_participant: dict[str, list[StoredFrame]] = defaultdict(list)
    for frame in frames:
        by_participant[frame.participant_id].append(frame)
    for participant_frames in by_participant.values():
        set_exact_totals(store.dynamodb, store.table, participant_frames, store.frame_expiry_days)
    return len(frames)
