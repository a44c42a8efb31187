"""The example analyzer (framesink_core.analyze.slides, framesink_handlers/slides.py): on a generated
deck of N distinct slides, each shown for several frames with noise, it finds exactly N
changes; a slide the presenter returns to is a change marked as a repeat; the result does not
depend on the order events arrive in; an undecodable frame is skipped with a reason."""

from __future__ import annotations

import json
import random

import pytest

from framesink.synthetic import frame_message, make_slide
from framesink_core.analyze.slides import DEFAULT_THRESHOLD, SlideAnalyzer, distance, signature
from framesink_core.ingest.outlet import FRAME_STORED, SOURCE
from framesink_core.read.feed import FrameRef
from framesink_core.service import Service

SIZE = (480, 270)  # smaller than a real screenshare: generating 1280x720 noise is slow, the logic is the same


@pytest.fixture(scope="module")
def deck():
    return {i: [make_slide(i, *SIZE, noise_seed=s) for s in range(3)] for i in range(6)}


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


def store_show(svc, deck, rec: str, shown: list[int], pid: int = 1) -> list[FrameRef]:
    refs = []
    for k, slide in enumerate(shown):
        message = frame_message(deck[slide][k % 3], recording_id=rec, participant_id=pid, relative=k * 0.5,
                                frame_type="screenshare")
        outcome = svc.ingestor.handle(message, connection_id="c")
        assert outcome.status == "stored"
        refs.append(FrameRef.from_key(svc.settings.bucket, outcome.key))
    return refs


def analyzer(svc) -> SlideAnalyzer:
    return SlideAnalyzer(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb)


def test_noise_stays_under_the_threshold_and_slides_are_far_over_it(deck):
    sigs = {i: [signature(p) for p in pngs] for i, pngs in deck.items()}
    within = max(distance(a, b) for s in sigs.values() for a in s for b in s)
    between = min(distance(sigs[i][0], sigs[j][0]) for i in sigs for j in sigs if i < j)
    assert within < DEFAULT_THRESHOLD / 4 and between > DEFAULT_THRESHOLD * 2, (within, between)


def test_a_deck_of_n_slides_shown_with_repeats_and_noise_gives_exactly_n_changes(svc, deck):
    shown = [s for s in range(6) for _ in range(random.Random(s).randrange(2, 6))]  # each 2-5 frames
    refs = store_show(svc, deck, "rec-deck", shown)
    found = [analyzer(svc).analyze(ref) for ref in refs]
    changes = [ref.relative_ms for ref, slide in zip(refs, found) if slide is not None]
    firsts = [k * 500 for k, s in enumerate(shown) if k == 0 or shown[k - 1] != s]
    assert changes == firsts and len(changes) == 6
    listed = svc.index.slides("rec-deck")
    assert [s["relative_ms"] for s in listed] == firsts and all(s["repeat_of_ms"] is None for s in listed)
    assert listed[0]["distance"] is None and all(s["distance"] > DEFAULT_THRESHOLD for s in listed[1:])


def test_going_back_to_a_slide_is_a_change_marked_as_a_repeat(svc, deck):
    shown = [0, 0, 1, 1, 0, 0, 2]
    refs = store_show(svc, deck, "rec-back", shown)
    a = analyzer(svc)
    for ref in refs:
        a.analyze(ref)
    assert [(s["relative_ms"], s["repeat_of_ms"]) for s in svc.index.slides("rec-back")] == [
        (0, None), (1000, None), (2000, 0), (3000, None)]


def test_the_order_events_arrive_in_does_not_matter(svc, deck):
    shown = [3, 3, 3, 4, 4, 5, 5, 5]
    refs = store_show(svc, deck, "rec-order", shown)
    shuffled = refs[:]
    random.Random(7).shuffle(shuffled)
    a = SlideAnalyzer(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb, cache_size=0)
    for ref in shuffled + shuffled[:3]:  # out of order, and some delivered twice
        a.analyze(ref)
    assert [s["relative_ms"] for s in svc.index.slides("rec-order")] == [0, 1500, 2500]


def test_a_repeat_analyzed_before_its_original_is_marked_when_the_original_comes(svc, deck):
    """The receiver stores several frames at once, so a later slide's event can come first: the
    repeat is marked once the slide it repeats is analyzed (it was order-dependent: a local
    run missed 1 in 5)."""
    shown = [0, 0, 1, 1, 0, 0, 2]
    refs = store_show(svc, deck, "rec-late-original", shown)
    a = analyzer(svc)
    for ref in [refs[k] for k in (4, 2, 0, 1, 3, 5, 6)]:  # the return to slide 0 first, its original later
        a.analyze(ref)
    assert [(s["relative_ms"], s["repeat_of_ms"]) for s in svc.index.slides("rec-late-original")] == [
        (0, None), (1000, None), (2000, 0), (3000, None)]


def frame_event(bucket: str, key: str, **detail) -> dict:
    """A "Frame Stored" event as the ingress publishes it (ingest/outlet.py), for ``key``."""
    parts = key.split("/")
    ids = ({"recording_id": parts[1], "participant_id": parts[3], "type": parts[4]} if len(parts) == 6 else {})
    return json.loads(json.dumps({"source": SOURCE, "detail-type": FRAME_STORED, "time": "2026-11-23T19:00:12Z",
                                  "detail": {"bucket": bucket, "key": key, **ids, **detail}}))


def test_the_handler_skips_what_it_cannot_use(svc, deck, lambda_context, caplog_json, aws, stack):
    from framesink_handlers import slides

    slides._runner.cache_clear()
    assert slides.handler(frame_event(stack.bucket, "notes/readme.txt"), lambda_context) == {"slide": False}
    # a screenshare object whose pixels cannot be decoded (it would not pass ingest; say it got there)
    key = "recordings/rec-bad/participants/1/screenshare/0000000000.png"
    aws["s3"].put_object(Bucket=stack.bucket, Key=key, Body=b"\x89PNG\r\n\x1a\n not really")
    assert slides.handler(frame_event(stack.bucket, key), lambda_context) == {"slide": False}
    lines = caplog_json()
    assert [line["reason"] for line in lines if line.get("message") == "frame not analyzed"] == [
        "not_a_frame", "undecodable"]
    # and a good one goes through the same entry point
    ref = store_show(svc, deck, "rec-handler", [2])[0]
    assert slides.handler(frame_event(stack.bucket, ref.key), lambda_context) == {"slide": True}
    # a frame deleted before its event was handled (framesink delete): skipped, not retried
    gone = store_show(svc, deck, "rec-gone", [1])[0]
    aws["s3"].delete_object(Bucket=stack.bucket, Key=gone.key)
    assert slides.handler(frame_event(stack.bucket, gone.key), lambda_context) == {"slide": False}
    assert [line["reason"] for line in caplog_json() if line.get("message") == "frame not analyzed"][-1] == "deleted"
    slides._runner.cache_clear()


def test_frame_refs_from_events_follow_the_storage_contract():
    key = "recordings/r-1/participants/100/webcam/0000012500.png"
    event = frame_event("b", key, bytes=9, relative_ms=12500, participant_name="Ada")
    ref = FrameRef.from_event(event)
    assert (ref.recording_id, ref.participant_id, ref.frame_type, ref.relative_ms, ref.size) == ("r-1", "100", "webcam",
                                                                                                  12500, 9)
    assert ref.frame_record()["participant_name"] == "Ada" and ref.frame_record()["s3_key"] == key
    assert ref.matches("r-1", "100", "webcam") and not ref.matches("r-2")
    s3_event = {"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": "b"},
                                                                                 "object": {"key": key}}}
    disagreeing = frame_event("b", key)
    disagreeing["detail"]["recording_id"] = "r-2"  # ids that are not the key's: not trusted
    for bad in ({}, s3_event, {**event, "source": "someone.else"}, frame_event("b", "exports/r-1/100/webcam.mp4"),
                disagreeing, {**event, "detail": "text"}, "not a dict"):
        assert FrameRef.from_event(bad) is None


def test_a_frame_whose_predecessor_is_not_indexed_yet_finds_it_in_s3(svc, deck, aws):
    """The event comes when the object is written, a moment before its index item (the
    receiver batches those): the previous frame is then listed from S3, and a held slide is
    not taken for a new one."""
    refs = store_show(svc, deck, "rec-race", [2, 2, 2, 3])
    # the index items of the last three frames are "not written yet"
    for ref in refs[1:]:
        aws["dynamodb"].delete_item(TableName=svc.settings.table, Key={
            "pk": {"S": "REC#rec-race"}, "sk": {"S": f"{ref.relative_ms:010d}#1#screenshare"}})
    found = [analyzer(svc).analyze(ref) for ref in refs]
    assert [ref.relative_ms for ref, slide in zip(refs, found) if slide is not None] == [0, 1500]
    # the frame just before, though the index holds only an older one
    assert analyzer(svc)._previous_frame(refs[3])["s3_key"] == refs[2].key


def test_after_a_pause_longer_than_the_listing_the_index_gives_the_previous_frame(svc, deck):
    message = lambda slide, seconds: frame_message(deck[slide][0], recording_id="rec-pause", participant_id=1,  # noqa: E731
                                                   relative=seconds, frame_type="screenshare")
    first = svc.ingestor.handle(message(4, 1.0), connection_id="c")
    later = svc.ingestor.handle(message(4, 61.0), connection_id="c")  # a minute later, same slide
    ref = FrameRef.from_key(svc.settings.bucket, later.key)
    assert analyzer(svc)._previous_frame(ref)["s3_key"] == first.key
    assert analyzer(svc).analyze(ref) is None  # not a change


def test_a_long_presentation_costs_a_bounded_read_per_frame(svc, deck, aws):
    """Finding a repeat reads the recording's last LOOKALIKE_SLIDES slide changes, not all of
    them: with 300 earlier slides the analysis of one more frame reads at most that many slide
    items (it read all 300 before, growing with the square of a deck's length overall)."""
    from framesink_core.analyze.slides import LOOKALIKE_SLIDES, Slide
    from framesink_core.shared.items import to_item

    refs = store_show(svc, deck, "rec-long", [0, 1])
    dark = bytes(len(signature(deck[0][0])))  # an all-black thumbnail: far from every slide of the deck
    for k in range(300):  # slides from long before, at 1 s .. 300 s before the frames below
        early = Slide("rec-long", "2", k, f"recordings/rec-long/participants/2/screenshare/{k:010d}.png", dark, 9.0, None)
        aws["dynamodb"].put_item(TableName=svc.settings.table, Item=to_item(early.item(None)))
    read, query = [], svc.dynamodb.query

    def counting_query(**kwargs):  # the index's Queries (its paginators look the method up here)
        answer = query(**kwargs)
        if "SLIDE#" in json.dumps(kwargs.get("ExpressionAttributeValues")):
            read.append(answer["Count"])
        return answer

    svc.dynamodb.query = counting_query
    try:
        a = analyzer(svc)
        found = [a.analyze(ref) for ref in refs]
    finally:
        del svc.dynamodb.query
    assert found[1] is not None  # slide 0 -> 1 is still a change
    assert read and max(read) <= LOOKALIKE_SLIDES, read


def test_a_slide_found_while_its_recording_is_deleted_is_removed_again(svc, deck, monkeypatch):
    """The analyzer writes its slide item, then looks for the recording's tombstone: a delete
    that ran meanwhile wins (before, a PART#/SLIDE# item could come back after a delete)."""
    from framesink_core.read.delete import delete_recording

    refs = store_show(svc, deck, "rec-analyze-deleted", [0, 1])
    a = analyzer(svc)
    assert a.analyze(refs[0]) is not None
    look_alike = a._earlier_look_alike

    def deleted_meanwhile(ref, mine):
        delete_recording(svc.s3, svc.dynamodb, svc.settings.bucket, svc.settings.table, ref.recording_id,
                         dry_run=False, settle_seconds=0)
        return look_alike(ref, mine)

    monkeypatch.setattr(a, "_earlier_look_alike", deleted_meanwhile)
    assert a.analyze(refs[1]) is None
    assert svc.index.recording("rec-analyze-deleted") is None  # no slide (or anything) came back
