"""Novelty (framesink_core/analyze/novelty.py, framesink_handlers/novelty.py) over moto: every slide
change of a generated deck is novel and nothing else is; a static screen yields one novel frame
per heartbeat, also scored concurrently and out of order; the flag lands on the index item
(`frames --novel`) and a "Frame Scored" event carries it; a deleted frame is skipped. The
webcam fraction is printed (pytest -s), not asserted."""

from __future__ import annotations

import json
import math
import random
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from framesink.synthetic import frame_message, make_png, make_slide
from framesink_core.analyze.novelty import CHANGED, FIRST, HEARTBEAT, NoveltyScorer
from framesink_core.ingest.outlet import FRAME_SCORED, FRAME_STORED, SOURCE, DirectOutlet, Outlet
from framesink_core.read.feed import FrameRef, frames_pattern
from framesink_core.service import Service
from framesink_core.shared.items import BOTO_CONFIG

SIZE = (480, 270)
HEARTBEAT_S = 10.0


@pytest.fixture(scope="module")
def deck():
    return {i: [make_slide(i, *SIZE, noise_seed=s) for s in range(3)] for i in range(6)}


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


def store(svc, rec: str, pngs: list[bytes], *, step_s: float = 0.5, frame_type: str = "screenshare",
          pid: int = 1) -> list[FrameRef]:
    refs = []
    for k, png in enumerate(pngs):
        outcome = svc.ingestor.handle(frame_message(png, recording_id=rec, participant_id=pid, relative=k * step_s,
                                                    frame_type=frame_type), connection_id="c")
        assert outcome.status == "stored"
        ref = FrameRef.from_key(svc.settings.bucket, outcome.key)
        refs.append(FrameRef(ref.bucket, ref.key, ref.recording_id, ref.participant_id, ref.frame_type,
                             ref.relative_ms, record={
                                 "bucket": ref.bucket, "key": ref.key, "recording_id": ref.recording_id,
                                 "participant_id": ref.participant_id, "type": ref.frame_type,
                                 "relative_ms": ref.relative_ms, "stored_at": 1_800_000_000_000}))
    return refs


def scorer(svc, outlet: Outlet | None = None) -> NoveltyScorer:
    return NoveltyScorer(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb, outlet or Outlet(),
                         heartbeat_seconds=HEARTBEAT_S)


def test_every_slide_change_is_novel_and_nothing_else(svc, deck):
    shown = [s for s in range(6) for _ in range(random.Random(s).randrange(2, 6))]  # each 2-5 frames, noisy
    refs = store(svc, "rec-deck", [deck[s][k % 3] for k, s in enumerate(shown)])
    scores = [scorer(svc).score(ref) for ref in refs]
    changes = [k for k, s in enumerate(shown) if k == 0 or shown[k - 1] != s]
    assert [k for k, score in enumerate(scores) if score.novel] == changes
    assert scores[0].reason == FIRST and {scores[k].reason for k in changes[1:]} == {CHANGED}
    # The flag is on the index items: `frames --novel` is exactly the changes.
    novel = [f["relative_ms"] for f in svc.index.iter_frames("rec-deck", novel=True)]
    assert novel == [refs[k].relative_ms for k in changes]
    assert all("novel" in f for f in svc.index.iter_frames("rec-deck"))


def test_a_static_screen_gives_one_novel_frame_per_heartbeat(svc, deck):
    refs = store(svc, "rec-static", [deck[0][k % 3] for k in range(120)])  # 60 s at 2 fps
    novel = [ref.relative_ms for ref in refs if scorer(svc).score(ref).novel]
    assert novel == [0, 10_000, 20_000, 30_000, 40_000, 50_000]


def test_concurrent_out_of_order_scoring_keeps_at_most_one_per_heartbeat(svc, deck):
    """Lambda scores a stream's frames in parallel and in any order: the state item's
    conditional write keeps novel frames a heartbeat apart on a static screen."""
    refs = store(svc, "rec-race", [deck[1][k % 3] for k in range(80)])  # 40 s
    order = refs[:]
    random.Random(7).shuffle(order)
    with ThreadPoolExecutor(8) as pool:
        scores = dict(zip(order, pool.map(scorer(svc).score, order)))
    novel = sorted(ref.relative_ms for ref, score in scores.items() if score.novel)
    assert novel  # the stream's first scored frame is novel (maybe not the one at 0: it may come later)
    assert all(b - a >= HEARTBEAT_S * 1000 for a, b in zip(novel, novel[1:])), novel
    assert len(novel) <= 4  # 40 s: at most one per 10 s window
    assert {s.reason for s in scores.values() if s.novel} <= {FIRST, HEARTBEAT}


def test_frame_scored_event_carries_the_flag_and_novel_only_patterns_select_it(svc, deck, aws):
    events = boto3.client("events", region_name="us-east-1", config=BOTO_CONFIG)
    sqs = boto3.client("sqs", region_name="us-east-1", config=BOTO_CONFIG)
    events.create_event_bus(Name="b")
    queues = {}
    for name, pattern in (("novel", frames_pattern(novel_only=True)), ("stored", frames_pattern())):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventBusName="b", EventPattern=json.dumps(pattern))
        events.put_targets(Rule=name, EventBusName="b", Targets=[{"Id": "q", "Arn": arn}])
        queues[name] = url
    refs = store(svc, "rec-events", [deck[2][0], deck[2][1], deck[3][0]])
    for ref in refs:
        scorer(svc, DirectOutlet(events, "b")).score(ref)
    got = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queues["novel"], MaxNumberOfMessages=10)
           .get("Messages", [])]
    assert {e["detail-type"] for e in got} == {FRAME_SCORED} and {e["source"] for e in got} == {SOURCE}
    assert sorted((e["detail"]["key"], e["detail"]["novel_reason"]) for e in got) == sorted(
        [(refs[0].key, FIRST), (refs[2].key, CHANGED)])
    assert all(e["detail"]["novel"] is True and "change_score" in e["detail"] for e in got)
    # A scored event reads back as its frame, with the flag in its record.
    ref = FrameRef.from_event(got[0])
    assert ref is not None and ref.frame_record()["novel"] is True
    # "Frame Stored" rules do not see scored events (no loop through the novelty rule).
    assert not sqs.receive_message(QueueUrl=queues["stored"]).get("Messages")
    assert frames_pattern()["detail-type"] == [FRAME_STORED]


def test_handler_skips_a_deleted_frame_and_other_events(svc, deck, lambda_context, caplog_json):
    from framesink_handlers import novelty

    (ref,) = store(svc, "rec-gone", [deck[4][0]])
    svc.s3.delete_object(Bucket=ref.bucket, Key=ref.key)
    event = {"source": SOURCE, "detail-type": FRAME_STORED,
             "detail": {"bucket": ref.bucket, "key": ref.key, "recording_id": ref.recording_id,
                        "participant_id": ref.participant_id, "type": ref.frame_type}}
    assert novelty.handler(event, lambda_context) == {"novel": None}
    assert novelty.handler({**event, "detail-type": FRAME_SCORED}, lambda_context) == {"novel": None}
    reasons = [line.get("reason") for line in caplog_json() if line.get("message") == "frame not analyzed"]
    assert reasons == ["deleted", "not_a_frame"]


def talking_head(k: int) -> bytes:
    """A camera-like frame: a detailed background, a head that sways a few pixels, sensor noise."""
    import io

    from PIL import Image, ImageDraw

    base = Image.open(io.BytesIO(make_png(*SIZE, seed=3, detailed=True))).convert("RGB")
    x = SIZE[0] // 2 + int(6 * math.sin(k / 3)) + (40 if 30 <= k < 45 else 0)  # leans aside for 7.5 s
    ImageDraw.Draw(base).ellipse((x - 60, 40, x + 60, 200), fill=(205, 170, 140))
    noise = Image.effect_noise(SIZE, 24).convert("RGB")
    out = io.BytesIO()
    Image.blend(base, noise, 0.06).save(out, "PNG")
    return out.getvalue()


def test_webcam_fraction_is_measured(svc):
    """A talking head for 30 s at 2 fps: printed, not asserted beyond the floor the heartbeat
    guarantees: the fraction depends on the threshold and on the video."""
    refs = store(svc, "rec-cam", [talking_head(k) for k in range(60)], frame_type="webcam")
    scores = [scorer(svc).score(ref) for ref in refs]
    novel = [(ref.relative_ms, s.reason, s.change) for ref, s in zip(refs, scores) if s.novel]
    assert len(novel) >= 3  # the first, and one per heartbeat over 30 s at least
    print(f"talking-head webcam stream: {len(novel)} of {len(refs)} frames novel: {novel}")
