"""FrameStore: S3 object + index, idempotency, participant aggregates, retries and failures."""

import json
from urllib.parse import unquote

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError

from framesink.synthetic import frame_event, make_png
from framesink_core import schema
from framesink_core.events import parse_message
from framesink_core.ingest import Ingestor
from framesink_core.storage import FrameStore, StoreError, from_item


@pytest.fixture
def store(stack, aws):
    return FrameStore(stack.bucket, stack.table, aws["s3"], aws["dynamodb"])


def frame(png, **kw):
    kw.setdefault("recording_id", "rec")
    kw.setdefault("participant_id", 100)
    kw.setdefault("relative", 1.0)
    return parse_message(json.dumps(frame_event(png, **kw)), 10**7)


def participant(aws, stack, rec, pid):
    item = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": f"REC#{rec}"}, "sk": {"S": f"PART#{pid}"}})
    return from_item(item["Item"])


def test_object_metadata_and_index_item(store, aws, stack):
    png = make_png(40, 30, seed=1, detailed=False)
    f = frame(png, name='Zoë "Z" O\'Neil', bot_id="bot-7", relative=2.5)
    result = store.put_frame(f, connection_id="c1")
    assert not result.duplicate and result.key == "recordings/rec/participants/100/webcam/0000002500.png"
    obj = aws["s3"].get_object(Bucket=stack.bucket, Key=result.key)
    assert obj["Body"].read() == png and obj["ContentType"] == "image/png"
    meta = obj["Metadata"]
    assert meta["absolute"] == "2026-11-23T19:00:02.500Z" and meta["bot-id"] == "bot-7"
    assert unquote(meta["participant-name"]) == 'Zoë "Z" O\'Neil'
    item = from_item(aws["dynamodb"].get_item(
        TableName=stack.table,
        Key={"pk": {"S": schema.stream_pk("rec", "100", "webcam")}, "sk": {"S": "0000002500"}})["Item"])
    assert item["s3_key"] == result.key and item["bytes"] == len(png)
    assert (item["width"], item["height"]) == (40, 30) and item["participant_name"] == 'Zoë "Z" O\'Neil'
    assert item["gsi1pk"] == "PART#rec#100" and item["gsi2pk"] == "REC#rec"
    # the recording is listed under its bot
    rec = aws["dynamodb"].query(TableName=stack.table, KeyConditionExpression="pk = :p",
                                ExpressionAttributeValues={":p": {"S": "BOT#bot-7"}})["Items"]
    assert [from_item(i)["recording_id"] for i in rec] == ["rec"]


def test_connection_bot_id_wins_over_event_bot_id(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    key = store.put_frame(frame(png, bot_id="from-event"), bot_id="from-token").key
    assert aws["s3"].head_object(Bucket=stack.bucket, Key=key)["Metadata"]["bot-id"] == "from-token"


def test_duplicates_are_stored_once_and_counted_once(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    assert not store.put_frame(frame(png)).duplicate
    assert store.put_frame(frame(png)).duplicate
    assert participant(aws, stack, "rec", "100")["frame_count"] == 1
    keys = aws["s3"].list_objects_v2(Bucket=stack.bucket)["KeyCount"]
    assert keys == 1


def test_out_of_order_frames_widen_first_and_last(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    for rel in (5.0, 3.0, 9.5, 4.0, 1.0):
        store.put_frame(frame(png, relative=rel))
    p = participant(aws, stack, "rec", "100")
    assert (p["first_ms"], p["last_ms"], p["frame_count"], p["bytes"]) == (1000, 9500, 5, 5 * len(png))


class _Body:
    def __init__(self, data=b""):
        self.data = data

    def stream(self, **_):
        yield self.data


def fail_calls(client, operation, times, status=503):
    """Make the next `times` attempts of an operation fail (botocore before-send hook).

    ``status=None`` fails the connection before the request is sent. With a status, moto
    still processes the request (its stubber runs too) and the response is replaced by the
    error: the write landed but the caller saw a failure, the case retries must survive.
    """
    calls = {"n": 0}

    def hook(**kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            if status is None:
                raise ConnectTimeoutError(endpoint_url=kwargs["request"].url)
            return AWSResponse(kwargs["request"].url, status, {}, _Body())
        return None

    client.meta.events.register(f"before-send.{client.meta.service_model.service_name}.{operation}", hook)
    return calls


@pytest.mark.parametrize("status", [None, 500, 503])
def test_transient_s3_and_dynamodb_failures_are_retried(store, aws, stack, status):
    png = make_png(8, 8, detailed=False)
    s3_calls = fail_calls(aws["s3"], "PutObject", 2, status)
    ddb_calls = fail_calls(aws["dynamodb"], "PutItem", 2, status)
    update_calls = fail_calls(aws["dynamodb"], "UpdateItem", 1, status)
    result = store.put_frame(frame(png))
    assert not result.duplicate  # a retried write of our own is not a duplicate
    assert (s3_calls["n"], ddb_calls["n"]) == (3, 3) and update_calls["n"] >= 2
    assert aws["s3"].get_object(Bucket=stack.bucket, Key=result.key)["Body"].read() == png
    # a lost UpdateItem response that had landed is counted twice: the index's counters
    # are at-least-once (reindex recomputes them); the frame itself is stored once.
    assert participant(aws, stack, "rec", "100")["frame_count"] in ((1,) if status is None else (1, 2))
    assert store.put_frame(frame(png)).duplicate


def test_persistent_s3_failure_is_reported_not_stored(store, aws, stack, caplog_json):
    png = make_png(8, 8, detailed=False)
    calls = fail_calls(aws["s3"], "PutObject", 99)
    outcome = Ingestor(store, 10**6).store_frame(frame(png))
    assert outcome.status == "failed" and not outcome.stored and outcome.reason == "s3_write_failed"
    assert calls["n"] == 6  # standard retry mode: 1 attempt + max_attempts (5) retries
    lines = caplog_json()
    [log] = [l for l in lines if l.get("message") == "frame not stored"]
    assert log["reason"] == "s3_write_failed" and log["recording_id"] == "rec"
    assert any(l.get("FrameStoreFailed") == [1.0] and l.get("reason") == "s3_write_failed" for l in lines)
    # nothing is indexed for a frame that never reached S3
    assert "Item" not in aws["dynamodb"].get_item(
        TableName=stack.table, Key={"pk": {"S": "REC#rec"}, "sk": {"S": "PART#100"}})


def test_index_failure_after_s3_write_is_reported(store, aws):
    png = make_png(8, 8, detailed=False)
    fail_calls(aws["dynamodb"], "PutItem", 99)
    with pytest.raises(StoreError) as err:
        store.put_frame(frame(png))
    assert err.value.stage == "index"
