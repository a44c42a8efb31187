"""A deleted recording's tombstone (``DELETED#<rec>``): what every late writer checks.

`framesink delete` writes it before anything goes (delete.py). The export job and the slide
analyzer write first and then look (``is_deleted``, strongly consistent) and undo what they
wrote. The ingest path cannot afford a read per frame before answering, so it asks
``DeletedRecordings``: one GetItem per recording per ``recheck_seconds`` per process (a
deleted answer is kept), and refuses the frames of a deleted recording with
``recording_deleted``; the participant totals drop the counts of a deleted recording rather
than write its participants back. A frame that passed the check just before the tombstone
landed may still be stored: the delete sweeps again ``SETTLE_SECONDS`` later for it.
"""

from __future__ import annotations

import threading
import time

from botocore.exceptions import BotoCoreError, ClientError

from framesink_core.shared import schema
from framesink_core.shared.items import to_item
from framesink_core.shared.observability import logger

TOMBSTONE_DAYS = 30  # how long late writers are told; the frames' default lifetime
RECHECK_SECONDS = 2.0  # how old a "not deleted" answer may be on the ingest path
# The delete's second sweep: after every ingest process has seen the tombstone (RECHECK_SECONDS)
# and a frame that passed the check before it has had time to land.
SETTLE_SECONDS = 5.0
_CACHE_LIMIT = 10_000  # recordings remembered per process


def write_tombstone(dynamodb, table: str, recording_id: str, now: float | None = None,
                    days: int = TOMBSTONE_DAYS) -> None:
    now = time.time() if now is None else now
    dynamodb.put_item(TableName=table, Item=to_item({
        "pk": schema.deleted_pk(recording_id), "sk": schema.META_SK, "kind": "deleted_recording",
        "recording_id": recording_id, "deleted_at": int(now * 1000),
        schema.TTL_ATTRIBUTE: int(now) + days * schema.DAY_SECONDS}))


def is_deleted(dynamodb, table: str, recording_id: str, consistent: bool = True) -> bool:
    """Was the recording deleted (its tombstone is there)? What a late writer asks after writing."""
    found = dynamodb.get_item(TableName=table, ConsistentRead=consistent, ProjectionExpression="pk",
                              Key=to_item({"pk": schema.deleted_pk(recording_id), "sk": schema.META_SK}))
    return "Item" in found


class DeletedRecordings:
    """``deleted(rec)``, cached per process: thread-safe, at most one read per recording per
    ``recheck_seconds``. When DynamoDB does not answer it says "not deleted": a frame is
    never refused for an outage (the delete's second sweep is the backstop)."""

    def __init__(self, dynamodb, table: str, recheck_seconds: float = RECHECK_SECONDS, clock=time.monotonic):
        self.dynamodb = dynamodb
        self.table = table
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[bool, float]] = {}  # recording -> (deleted, checked at)
        self._fetching: dict[str, threading.Lock] = {}

    def __call__(self, recording_id: str) -> bool:
        with self._lock:
            fetching = self._fetching.setdefault(recording_id, threading.Lock())
        # One read per recording at a time: a burst of a new recording's first frames (the
        # receiver stores up to 32 at once) waits for one GetItem instead of making 32.
        with fetching:
            now = self._clock()
            with self._lock:
                known = self._seen.get(recording_id)
            if known is not None and (known[0] or now - known[1] < self.recheck_seconds):
                return known[0]
            return self._fetch(recording_id, now)

    def _fetch(self, recording_id: str, now: float) -> bool:
        try:
            deleted = is_deleted(self.dynamodb, self.table, recording_id, consistent=True)
        except (ClientError, BotoCoreError) as exc:
            # Remembered as "not deleted" until the next recheck: in a DynamoDB outage a frame
            # must not wait for this read's retries (the spool is waiting for it).
            logger.warning("tombstone check failed", extra={"reason": "tombstone_check_failed",
                                                            "recording_id": recording_id, "detail": str(exc)[:200]})
            deleted = False
        with self._lock:
            if len(self._seen) >= _CACHE_LIMIT:
                self._seen.clear()
                self._fetching = {recording_id: self._fetching[recording_id]}
            self._seen[recording_id] = (deleted, now)
        return deleted
