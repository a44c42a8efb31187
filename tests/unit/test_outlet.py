"""Frame events from the ingress (framesink_core/ingest/outlet.py), on moto's EventBridge:
one per frame made durable, none for what was not stored, the index item's fields in it,
batched in the receiver, retried when EventBridge refuses, and a refusal never loses the frame."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import boto3
import pytest

from framesink.synthetic import frame_message, make_png
from framesink_core.ingest.outlet import FRAME_STORED, SOURCE
from framesink_core.read.feed import FrameRef, frames_pattern
from framesink_core.service import Service
from framesink_core.shared import schema
from framesink_core.shared.items import to_item

REGION = "us-east-1"


@pytest.fixture
def feed(aws, stack):
    """The stack's frame bus with a rule sending every frame event to a queue; (settings, drain)."""
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    bus = f"{stack.bucket}-frames"
    events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=f"{stack.bucket}-all")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps(frames_pattern()))
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])

    def drain() -> list[dict]:
        got = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for m in messages:
                got.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return got

    return replace(stack, event_bus=bus), drain


def message(rec: str, k: int, seed: int | None = None, participant: int = 7) -> str:
    return frame_message(make_png(40, 30, seed=k if seed is None else seed, detailed=False), recording_id=rec,
                         participant_id=participant, relative=k / 2, name="Ada")


def test_one_event_per_frame_made_durable_and_none_for_the_rest(aws, feed):
    settings, drain = feed
    svc = Service(settings, s3=aws["s3"], dynamodb=aws["dynamodb"])
    outcomes = [svc.ingestor.handle(body, connection_id="c-1").status for body in (
        message("rec-e", 0),              # stored
        message("rec-e", 0),              # the same again: a duplicate
        message("rec-e", 0, seed=99),     # other bytes on that key: conflicting_frame
        "not json",                       # rejected
        json.dumps({"event": "transcript.partial_data", "data": {}}),  # ignored
        message("rec-e", 1),              # stored
    )]
    assert outcomes == ["stored", "duplicate", "rejected", "rejected", "ignored", "stored"]
    events = drain()
    assert sorted(e["detail"]["relative_ms"] for e in events) == [0, 500]
    assert {(e["source"], e["detail-type"]) for e in events} == {(SOURCE, FRAME_STORED)}
    # The event is the index item: what `frames --json` prints for the frame, and where its bytes are.
    indexed = {f["s3_key"]: f for f in svc.index.iter_frames("rec-e")}
    for event in events:
        ref = FrameRef.from_event(event)
        assert ref.frame_record() == indexed[ref.key]
        assert event["detail"]["bucket"] == settings.bucket
        assert event["detail"]["width"] == 40 and event["detail"]["participant_name"] == "Ada"


def test_a_redelivery_that_repairs_a_missing_index_item_is_announced(aws, feed):
    """Its first writer died between S3 and the index: no event went out then, so the frame
    is new to consumers once the redelivery writes its item."""
    settings, drain = feed
    svc = Service(settings, s3=aws["s3"], dynamodb=aws["dynamodb"])
    body = message("rec-r", 3)
    assert svc.ingestor.handle(body).status == "stored"
    (first,) = drain()
    (frame,) = svc.index.iter_frames("rec-r")
    key = schema.frame_item_key("rec-r", "7", "webcam", frame["relative_ms"])
    aws["dynamodb"].delete_item(TableName=settings.table, Key=to_item(key))
    assert svc.ingestor.handle(body).status == "duplicate"
    (again,) = drain()
    assert again["detail"]["key"] == first["detail"]["key"]
    assert len(list(svc.index.iter_frames("rec-r"))) == 1


def test_the_receiver_batches_up_to_ten_events_per_call_and_sends_them_all(aws, feed):
    settings, drain = feed
    svc = Service(settings, s3=aws["s3"], dynamodb=aws["dynamodb"], batch_index_writes=True)
    futures = [svc.ingestor.begin(message("rec-b", k)) for k in range(35)]
    assert all(f.result(timeout=30).status == "stored" for f in futures)
    svc.store.close()
    svc.outlet.close()
    events = drain()
    assert sorted(e["detail"]["relative_ms"] for e in events) == [k * 500 for k in range(35)]
    assert math.ceil(35 / 10) <= svc.outlet.requests < 35


class Refusing:
    """EventBridge answering PutEvents with every entry failed (throttled) ``times`` times,
    then as moto does. The shape of a partial failure is PutEvents' own."""

    def __init__(self, real, times: int):
        self.real, self.times, self.calls = real, times, 0

    def put_events(self, Entries):  # noqa: N803 - boto3's name
        self.calls += 1
        if self.calls <= self.times:
            return {"FailedEntryCount": len(Entries),
                    "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"} for _ in Entries]}
        return self.real.put_events(Entries=Entries)


def test_a_refused_event_is_sent_again_and_a_lost_one_never_costs_the_frame(aws, feed, caplog_json):
    from framesink_core.ingest.outlet import DirectOutlet

    settings, drain = feed
    real = boto3.client("events", region_name=REGION)
    svc = Service(settings, s3=aws["s3"], dynamodb=aws["dynamodb"])
    svc.store.outlet = DirectOutlet(Refusing(real, times=2), settings.event_bus, sleep=lambda _: None)
    assert svc.ingestor.handle(message("rec-f", 0)).status == "stored"
    assert len(drain()) == 1  # the third try went through
    svc.store.outlet = DirectOutlet(Refusing(real, times=99), settings.event_bus, sleep=lambda _: None)
    assert svc.ingestor.handle(message("rec-f", 1)).status == "stored"
    assert drain() == []
    assert len(list(svc.index.iter_frames("rec-f"))) == 2  # stored and indexed all the same
    lines = [line for line in caplog_json() if line.get("message") == "frame event not published"]
    assert [(line["reason"], line["s3_key"]) for line in lines] == [
        ("event_publish_failed", "recordings/rec-f/participants/7/webcam/0000000500.png")]
    assert "ThrottlingException" in lines[0]["detail"]


def test_the_meetings_context_goes_on_the_bus_and_frame_rules_do_not_hear_it(aws, feed):
    """A participant event, a final utterance and an audio object, once durable, are "Meeting
    Event" / "Audio Stored" events on the same bus; the frame rule (frames_pattern) hears only
    the frame. A rule on the new types receives them with the stored item's fields."""
    from framesink.synthetic import audio_message, participant_event_message, spoken, transcript_message
    from framesink_core.ingest.audio import audio_key
    from framesink_core.ingest.outlet import AUDIO_STORED, MEETING_EVENT

    settings, drain = feed
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=f"{settings.bucket}-context")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="context", EventBusName=settings.event_bus, EventPattern=json.dumps(
        {"source": [SOURCE], "detail-type": [MEETING_EVENT, AUDIO_STORED]}))
    events.put_targets(Rule="context", EventBusName=settings.event_bus, Targets=[{"Id": "q", "Arn": arn}])
    svc = Service(settings, s3=aws["s3"], dynamodb=aws["dynamodb"])
    outcomes = [svc.ingestor.handle(body).status for body in (
        participant_event_message("speech_on", recording_id="rec-c", participant_id=7, relative=-0.5),
        transcript_message(spoken("hello there", 1.0), recording_id="rec-c", participant_id=7),
        audio_message(b"\1\0" * 1600, recording_id="rec-c", relative=1.0, participant_id=7),
        audio_message(b"\1\0" * 1600, recording_id="rec-c", relative=1.0, participant_id=7),  # a duplicate: no event
        message("rec-c", 0),
    )]
    assert outcomes == ["recorded", "recorded", "recorded", "recorded", "stored"]
    assert [e["detail-type"] for e in drain()] == [FRAME_STORED]
    got = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        got += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    by_type = sorted(((e["detail-type"], e["detail"].get("kind")) for e in got), key=str)
    assert by_type == [(AUDIO_STORED, None), (MEETING_EVENT, "participant_event"), (MEETING_EVENT, "utterance")]
    detail = {e["detail"].get("kind", "audio"): e["detail"] for e in got}
    assert (detail["participant_event"]["event"], detail["participant_event"]["relative_ms"]) == ("speech_on", -500)
    assert detail["utterance"]["text"] == "hello there"
    assert (detail["audio"]["key"], detail["audio"]["duration_ms"]) == (audio_key("rec-c", "7", 1000), 100)
