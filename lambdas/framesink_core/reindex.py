"""Rebuild a recording's index from its S3 objects: the repair path for a lost index write.

S3 is the source of truth: every object's key and metadata hold what its index item holds
(storage.StoredFrame), so reindex lists ``recordings/<rec>/``, reads each object's metadata
(HeadObject) and writes the items with the same code ingest uses. Frame items are
overwritten (each is a function of its object); participant totals are recomputed from the
objects and SET, never ADDed, so a second run changes nothing. Expiry (DynamoDB TTL) comes
from each object's stored-at time and the store's frame_expiry_days, as at ingest.

Run it while the recording is not being ingested: a frame stored between the listing and
the participant write is indexed, but its participant's totals miss it until the next run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import schema
from .query import check_id
from .storage import FrameStore, MetadataError, StoredFrame


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
        listed += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
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
    by_participant: dict[str, list[StoredFrame]] = defaultdict(list)
    first_seen: dict[str, int | None] = {}
    bot_expiry: dict[str, int] = {}  # the bot's newest frame's, as ingest leaves it
    for frame in frames:
        by_participant[frame.participant_id].append(frame)
        if frame.bot_id:
            expires = store.expires_at(frame)
            if expires is not None:
                bot_expiry[frame.bot_id] = max(expires, bot_expiry.get(frame.bot_id, expires))
            seen = first_seen.get(frame.bot_id)
            if frame.stored_at is not None and (seen is None or frame.stored_at < seen):
                first_seen[frame.bot_id] = frame.stored_at
            else:
                first_seen.setdefault(frame.bot_id, None)
    for participant_frames in by_participant.values():
        store.set_participant_totals(participant_frames)
    for bot_id, seen_at in first_seen.items():
        store.remember_bot_recording(bot_id, recording_id, seen_at, bot_expiry.get(bot_id))
    result.participants = len(by_participant)
    result.bots = len(first_seen)
    result.seconds = time.monotonic() - started
    return result
