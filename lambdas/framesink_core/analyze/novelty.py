"""Novelty: does a frame show something its stream has not shown yet?

Each stored frame (its "Frame Stored" event) gets a change score and a ``novel`` flag, written
onto its index item (``frames --novel``) and published as a "Frame Scored" event (the same
detail plus ``novel``, ``change``, ``novel_reason``) that consumers subscribe to for novel
frames only (``frames_pattern(novel_only=True)``).

The score is the slide analyzer's signature distance (analyze/slides.py: 32x18 box-filtered
grayscale thumbnails, mean absolute difference 0-255) between the frame and its stream's
*last novel frame*, not the frame just before it: a slow drift (a camera panning, a page
scrolling a line at a time) adds up to a novel frame instead of never crossing the threshold
between neighbours. A frame is novel when it is the stream's first (``first``), differs by
more than the threshold (``changed``), or when ``heartbeat`` seconds of meeting time passed
since the last novel frame (``heartbeat``), so a static screen still yields a frame.

The stream's last novel frame is one item (``NOVEL#<type>#<pid>`` in the recording's
partition). Becoming novel is a write of it conditional on it being the one the frame was
scored against (optimistic concurrency; a lost race reads again), and only forward in
meeting time, so concurrent invocations on one stream agree: at most one novel frame per
heartbeat on a static screen, whatever the concurrency or the order events arrive in.

Why a function on the events and not the receiver: decoding is most of the cost. Measured
(docs/performance.md): Pillow decode + thumbnail 4.9 ms for a 480x360 PNG and 22 ms for
1280x720 (zlib's inflate alone 2.4 / 12.7 ms), against ~2.4 ms of receiver CPU for storing
a frame. Storing never waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from botocore.exceptions import ClientError

from framesink_core.analyze.kit import Context, Frame
from framesink_core.analyze.slides import distance, image_signature
from framesink_core.ingest.outlet import FRAME_SCORED, Outlet
from framesink_core.ingest.tombstones import is_deleted
from framesink_core.read.feed import FrameRef
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.objects import error_code
from framesink_core.shared.settings import DEFAULT_NOVELTY_HEARTBEAT_SECONDS, DEFAULT_NOVELTY_THRESHOLD

FIRST, CHANGED, HEARTBEAT = "first", "changed", "heartbeat"
# Reads of the stream's state per frame when other frames of it keep becoming novel meanwhile.
CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class Score:
    novel: bool
    change: float | None  # distance from the stream's last novel frame; None for its first
    reason: str | None  # first / changed / heartbeat, or None when not novel

    def fields(self) -> dict:
        return {"novel": self.novel, "change_score": None if self.change is None else round(self.change, 2),
                "novel_reason": self.reason}


class NoveltyScorer:
    def __init__(self, bucket: str, table: str, s3, dynamodb, outlet: Outlet, *,
                 threshold: float = DEFAULT_NOVELTY_THRESHOLD,
                 heartbeat_seconds: float = DEFAULT_NOVELTY_HEARTBEAT_SECONDS,
                 frame_expiry_days: int = 0):
        self.frame_expiry_days = frame_expiry_days
        self.bucket, self.table, self.s3, self.dynamodb, self.outlet = bucket, table, s3, dynamodb, outlet
        self.threshold = threshold
        self.heartbeat_ms = int(heartbeat_seconds * 1000)

    def score(self, ref: FrameRef | Frame) -> Score:
        """Score the frame (a kit Frame, or a FrameRef read here), record the flag on its index
        item and publish "Frame Scored". Raises botocore's ClientError (a missing object:
        NoSuchKey) and the kit's UndecodableFrame; the runner decides what each means."""
        frame = ref if isinstance(ref, Frame) else Frame.from_ref(ref, self.s3)
        ref = frame.ref()
        mine = image_signature(frame.image())
        state_key = {"pk": schema.recording_pk(ref.recording_id),
                     "sk": schema.novelty_sk(ref.frame_type, ref.participant_id)}
        change, reason = None, None
        for _ in range(CLAIM_ATTEMPTS):
            found = self.dynamodb.get_item(TableName=self.table, Key=to_item(state_key), ConsistentRead=True)
            last = from_item(found["Item"]) if "Item" in found else None
            if last is None:
                change, reason = None, FIRST
            else:
                change = distance(mine, bytes.fromhex(last["signature"]))
                since = ref.relative_ms - int(last["relative_ms"])
                # Only forward in meeting time: a frame older than the last novel one came late
                # (frames are stored in parallel) and is never novel.
                reason = (None if since <= 0 else CHANGED if change > self.threshold
                          else HEARTBEAT if since >= self.heartbeat_ms else None)
            if reason is None:
                break
            claimed = self._claim(state_key, ref, mine, last)
            if claimed is not None:
                reason = reason if claimed else None
                break
            # Another frame of the stream became novel since the read: score against it instead.
        else:
            reason = None
        result = Score(reason is not None, change, reason)
        if not self._mark_frame(ref, result):
            return result  # the frame was deleted meanwhile: nothing to announce
        self.outlet.publish({**(ref.record or {}), **result.fields()}, FRAME_SCORED)
        return result

    def _claim(self, state_key: dict, ref: FrameRef, mine: bytes, last: dict | None) -> bool | None:
        """Make this frame the stream's last novel one if the last one is still the one it was
        scored against (optimistic: concurrent scorers of a stream cannot both win on one read).
        True: claimed; None: it changed, read again; False: the recording was deleted."""
        item = {**state_key, "kind": "novelty", "relative_ms": ref.relative_ms, "signature": mine.hex(),
                "s3_key": ref.key}
        stored_at = (ref.record or {}).get("stored_at")
        expires_at = schema.index_expires_at(stored_at if isinstance(stored_at, int) else None, self.frame_expiry_days)
        if expires_at is not None:  # it goes with the frames it stands for
            item[schema.TTL_ATTRIBUTE] = expires_at
        condition = ({"ConditionExpression": "attribute_not_exists(pk)"} if last is None else
                     {"ConditionExpression": "relative_ms = :read",
                      "ExpressionAttributeValues": to_item({":read": int(last["relative_ms"])})})
        try:
            self.dynamodb.put_item(TableName=self.table, Item=to_item(item), **condition)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        if is_deleted(self.dynamodb, self.table, ref.recording_id):  # written first, checked after (delete.py)
            self.dynamodb.delete_item(TableName=self.table, Key=to_item(state_key))
            return False
        return True

    def _mark_frame(self, ref: FrameRef, result: Score) -> bool:
        """``novel`` and ``change`` on the frame's index item (never re-creating a deleted one)."""
        key = {"pk": schema.recording_pk(ref.recording_id),
               "sk": schema.frame_sk(ref.relative_ms, ref.participant_id, ref.frame_type)}
        values: dict = {":n": result.novel}
        update = "SET novel = :n"
        if result.change is not None:  # a stream's first frame has nothing to differ from
            values[":c"] = Decimal(f"{result.change:.2f}")
            update += ", change_score = :c"
        try:
            self.dynamodb.update_item(TableName=self.table, Key=to_item(key), UpdateExpression=update,
                                      ConditionExpression="attribute_exists(pk)",
                                      ExpressionAttributeValues=to_item(values))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True


def score(frame: Frame, ctx: Context) -> dict:
    """Novelty as a kit function (framesink_handlers/novelty.py deploys it on every frame)."""
    scorer = ctx.cache.get("novelty")
    if scorer is None:
        s = ctx.settings
        scorer = ctx.cache["novelty"] = NoveltyScorer(
            ctx.bucket, ctx.table, ctx.s3, ctx.dynamodb, ctx.outlet, threshold=s.novelty_threshold,
            heartbeat_seconds=s.novelty_heartbeat_seconds, frame_expiry_days=ctx.frame_expiry_days)
    return scorer.score(frame).fields()
