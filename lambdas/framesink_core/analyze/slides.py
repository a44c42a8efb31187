"""Slide changes in screenshare frames: the logic of the example analyzer (docs/live-feed.md, "Write your
own analyzer"; the Lambda is framesink_handlers/slides.py).

The perceptual signature of a frame is a 32x18 grayscale thumbnail (box-filtered: every
thumbnail pixel is the mean of ~1,600 screen pixels, so sensor noise and compression
artefacts average out); the distance of two frames is the mean absolute difference of their
thumbnails, 0-255. Measured on generated decks (tests/unit/test_slides.py): frames of one
slide with noise are within 0.4 of each other, different slides at least 11 apart; a change
is a distance over ``DEFAULT_THRESHOLD`` (4). Hand-written on Pillow rather than imagehash:
imagehash's hashes (aHash, dHash, pHash) flip bits on flat slide backgrounds under noise (a
16x16 dHash measured up to 52 bits within one slide and 29 between two), and it would bring
numpy and scipy into the Lambda asset.

Stateless and order-free: a frame is a new slide when it differs from the participant's
previous screenshare frame *in meeting time* (one Query of the index), so events delivered
out of order or twice give the same slides. The first screenshare frame of a participant
is a slide. A slide that looks like an earlier one (the presenter went back) is still a
change, marked ``repeat_of_ms``; ``framesink export --slides`` writes each distinct one once.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain

from botocore.exceptions import ClientError

from framesink_core.analyze.kit import Context, Frame
from framesink_core.ingest.tombstones import is_deleted
from framesink_core.read.feed import FrameRef
from framesink_core.read.query import FrameIndex
from framesink_core.shared import schema
from framesink_core.shared.items import to_item
from framesink_core.shared.objects import error_code

THUMB = (32, 18)
DEFAULT_THRESHOLD = 4.0
LOOKBACK_MS = 10_000  # how far back S3 is listed for the previous frame (the index's fallback)
# How many of the recording's latest slide changes a new slide is compared with to find a
# repeat (a deck shown again, a slide revisited): one Query page, whatever the meeting's length.
LOOKALIKE_SLIDES = 50


def signature(png: bytes) -> bytes:
    """The frame's 32x18 grayscale thumbnail (576 bytes). Raises on an undecodable PNG."""
    from PIL import Image  # only the analyzers and the CLI decode pixels

    with Image.open(io.BytesIO(png)) as img:
        return image_signature(img)


def image_signature(img) -> bytes:
    """signature() of a Pillow image already open (a kit Frame's .image())."""
    from PIL import Image

    return img.convert("L").resize(THUMB, Image.Resampling.BOX).tobytes()


def distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two signatures, 0 (same) to 255."""
    if len(a) != len(b):
        return 255.0
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


@dataclass(frozen=True)
class Slide:
    recording_id: str
    participant_id: str
    relative_ms: int
    s3_key: str
    signature: bytes
    distance: float | None  # from the previous screenshare frame; None for the first
    repeat_of_ms: int | None = None

    def item(self, expires_at: int | None) -> dict:
        return {
            "pk": schema.recording_pk(self.recording_id),
            "sk": schema.slide_sk(self.relative_ms, self.participant_id),
            "kind": "slide", "recording_id": self.recording_id, "participant_id": self.participant_id,
            "relative_ms": self.relative_ms, "s3_key": self.s3_key, "hash": self.signature.hex(),
            "distance": None if self.distance is None else Decimal(f"{self.distance:.2f}"),
            "repeat_of_ms": self.repeat_of_ms, schema.TTL_ATTRIBUTE: expires_at,
        }


class SlideAnalyzer:
    """Reads a screenshare frame, decides whether it starts a slide, writes the slide item."""

    def __init__(self, bucket: str, table: str, s3, dynamodb, *, threshold: float = DEFAULT_THRESHOLD,
                 frame_expiry_days: int = 30, cache_size: int = 512):
        self.bucket, self.table, self.s3, self.dynamodb = bucket, table, s3, dynamodb
        self.threshold = threshold
        self.frame_expiry_days = frame_expiry_days
        self.index = FrameIndex(table, dynamodb)
        # A warm Lambda sees a stream's frames one after the other: keep their signatures so
        # the previous frame is rarely downloaded twice.
        self._signatures: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size

    def analyze(self, ref: FrameRef | Frame) -> Slide | None:
        """The slide this frame starts, written to the index; None if it is not a change
        (or not a screenshare frame). A kit Frame, or a FrameRef (read here)."""
        frame = ref if isinstance(ref, Frame) else Frame.from_ref(ref, self.s3)
        ref = frame.ref()
        if ref.frame_type != "screenshare":
            return None
        mine = self._remember(ref.key, image_signature(frame.image()))
        previous = self._previous_frame(ref)
        if previous is None:
            dist = None
        else:
            dist = distance(mine, self._signature_of(previous["s3_key"]))
            if dist <= self.threshold:
                return None
        slide = Slide(ref.recording_id, ref.participant_id, ref.relative_ms, ref.key, mine, dist,
                      self._earlier_look_alike(ref, mine))
        item = slide.item(schema.index_expires_at(frame.stored_at, self.frame_expiry_days))
        self.dynamodb.put_item(TableName=self.table, Item=to_item(item))
        if is_deleted(self.dynamodb, self.table, ref.recording_id):  # written first, checked after (delete.py)
            self.dynamodb.delete_item(TableName=self.table, Key=to_item({"pk": item["pk"], "sk": item["sk"]}))
            return None
        self._mark_later_repeats(slide)
        return slide

    def _mark_later_repeats(self, slide: Slide) -> None:
        """Frames' events may come out of order (the receiver stores several at once): a later
        slide analyzed before this one could not know it repeats this one. Mark it now (the
        next LOOKALIKE_SLIDES slides, one Query page), so repeats do not depend on the order."""
        origin = slide.repeat_of_ms if slide.repeat_of_ms is not None else slide.relative_ms
        for later in self.index.slides(slide.recording_id, with_signature=True, after_ms=slide.relative_ms,
                                       limit=LOOKALIKE_SLIDES):
            earlier = later.get("repeat_of_ms")
            if (later["participant_id"] == slide.participant_id and later.get("hash")
                    and (earlier is None or earlier > origin)
                    and distance(slide.signature, bytes.fromhex(later["hash"])) <= self.threshold):
                key = {"pk": schema.recording_pk(slide.recording_id),
                       "sk": schema.slide_sk(later["relative_ms"], later["participant_id"])}
                try:
                    self.dynamodb.update_item(TableName=self.table, Key=to_item(key),
                                              UpdateExpression="SET repeat_of_ms = :o",
                                              ConditionExpression="attribute_exists(pk)",
                                              ExpressionAttributeValues=to_item({":o": origin}))
                except ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":  # deleted meanwhile: fine
                        raise

    def _previous_frame(self, ref: FrameRef) -> dict | None:
        """The participant's screenshare frame just before this one in meeting time. S3 first
        (one LIST of the last LOOKBACK_MS): the event is sent when an object is written, a
        moment before its index item (the receiver batches those for up to 50 ms), so the
        index can still miss the frame just before this one and answer with an older one.
        Past the window (a paused share), the index, where older frames are surely written."""
        if ref.relative_ms == 0:
            return None
        folder = ref.key.rsplit("/", 1)[0] + "/"
        start = max(0, ref.relative_ms - LOOKBACK_MS)
        kwargs = {"Bucket": self.bucket, "Prefix": folder}
        if start:
            kwargs["StartAfter"] = folder + schema.relative_ms_text(start - 1) + ".png"
        previous = None
        pages = self.s3.get_paginator("list_objects_v2").paginate(**kwargs)
        for obj in chain.from_iterable(page.get("Contents", []) for page in pages):
            if obj["Key"] >= ref.key:
                break
            previous = obj["Key"]
        return {"s3_key": previous} if previous else self._previous_indexed(ref, start)

    def _previous_indexed(self, ref: FrameRef, before_ms: int) -> dict | None:
        if before_ms <= 0:
            return None
        for frame in self.index.iter_frames(ref.recording_id, participant_id=ref.participant_id,
                                            frame_type="screenshare", until=before_ms, newest_first=True, limit=1):
            return frame
        return None

    def _earlier_look_alike(self, ref: FrameRef, mine: bytes) -> int | None:
        """A repeat of one of the recording's last LOOKALIKE_SLIDES slide changes (one Query page,
        newest first): a bounded read per frame however long the presentation (reading every
        earlier slide made a long deck quadratic: 1.12 M items read over 1,500 frames)."""
        for slide in self.index.slides(ref.recording_id, with_signature=True, before_ms=ref.relative_ms,
                                       newest_first=True, limit=LOOKALIKE_SLIDES):
            if (slide["participant_id"] == ref.participant_id and slide.get("hash")
                    and distance(mine, bytes.fromhex(slide["hash"])) <= self.threshold):
                return slide.get("repeat_of_ms") or slide["relative_ms"]
        return None

    def _signature_of(self, key: str) -> bytes:
        cached = self._signatures.get(key)
        if cached is not None:
            self._signatures.move_to_end(key)
            return cached
        return self._remember(key, signature(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()))

    def _remember(self, key: str, sig: bytes) -> bytes:
        self._signatures[key] = sig
        if len(self._signatures) > self._cache_size:
            self._signatures.popitem(last=False)
        return sig



def analyze(frame: Frame, ctx: Context) -> dict | None:
    """The slide analyzer as a kit function (framesink_handlers/slides.py deploys it): writes
    its SLIDE# item itself (``framesink slides`` reads those), returns what it found."""
    analyzer = ctx.cache.get("slides")
    if analyzer is None:  # one per context: its signature cache spans the frames it sees
        analyzer = ctx.cache["slides"] = SlideAnalyzer(ctx.bucket, ctx.table, ctx.s3, ctx.dynamodb,
                                                       frame_expiry_days=ctx.frame_expiry_days)
    slide = analyzer.analyze(frame)
    if slide is None:
        return None
    return {"slide": True, "distance": slide.distance, "repeat_of_ms": slide.repeat_of_ms}
