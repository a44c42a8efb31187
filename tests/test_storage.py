"""FrameStore: S3 object + index, idempotency, participant aggregates, retries and failures."""

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError

from framesink.synthetic import frame_event, make_png
from framesink_core import schema, storage
from framesink_core.events import parse_message
from framesink_core.ingest import Ingestor
from framesink_core.settings import DEFAULT_FRAME_EXPIRY_DAYS
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


# -- index expiry (DynamoDB TTL) matching the bucket's lifecycle expiry ---------------------

def s3_expiry(created: datetime, days: int) -> datetime:
    """When S3 lifecycle expires an object: creation + days, rounded up to midnight UTC."""
    due = created + timedelta(days=days)
    midnight = due.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == due else midnight + timedelta(days=1)


def test_index_expiry_is_the_day_after_s3_expires_the_object():
    created = datetime(2026, 11, 23, 19, 0, 2, 500000, tzinfo=timezone.utc)
    assert schema.index_expires_at(int(created.timestamp() * 1000), 30) == int(
        (s3_expiry(created, 30) + timedelta(days=1)).timestamp())
    assert schema.index_expires_at(int(created.timestamp() * 1000), 0) is None
    assert schema.index_expires_at(None, 30) is None
    # Never before S3 deletes the object, even when its LastModified lands hours after our
    # clock read stored-at (across midnight too), and at most two days after.
    for minutes in range(0, 3 * 24 * 60, 37):
        stored = created + timedelta(minutes=minutes)
        expires = datetime.fromtimestamp(schema.index_expires_at(int(stored.timestamp() * 1000), 7), timezone.utc)
        for lag in (timedelta(0), timedelta(seconds=1), timedelta(hours=23)):
            assert expires >= s3_expiry(stored + lag, 7)
        assert expires - s3_expiry(stored, 7) <= timedelta(days=2)


def index_items(aws, stack, rec="rec"):
    """Every item of the recording: frames (base table and both GSIs), participants, bot item."""
    ddb = aws["dynamodb"]
    frames = ddb.query(TableName=stack.table, IndexName=schema.GSI_RECORDING, KeyConditionExpression="gsi2pk = :p",
                       ExpressionAttributeValues={":p": {"S": schema.recording_gsi_pk(rec)}})["Items"]
    by_participant = ddb.query(TableName=stack.table, IndexName=schema.GSI_PARTICIPANT,
                               KeyConditionExpression="gsi1pk = :p",
                               ExpressionAttributeValues={":p": {"S": schema.participant_gsi_pk(rec, "100")}})["Items"]
    participants = ddb.query(TableName=stack.table, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": {"S": schema.recording_pk(rec)}})["Items"]
    bot = ddb.query(TableName=stack.table, KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": {"S": schema.bot_pk("bot-7")}})["Items"]
    return ([from_item(i) for i in frames], [from_item(i) for i in by_participant],
            [from_item(i) for i in participants], [from_item(i) for i in bot])


def stored_at(aws, stack, key):
    return int(aws["s3"].head_object(Bucket=stack.bucket, Key=key)["Metadata"]["stored-at"])


def test_frame_participant_and_bot_items_expire_with_their_objects(store, aws, stack):
    assert store.frame_expiry_days == stack.frame_expiry_days == DEFAULT_FRAME_EXPIRY_DAYS
    png = make_png(8, 8, detailed=False)
    keys = [store.put_frame(frame(png, relative=rel, bot_id="bot-7")).key for rel in (1.0, 2.0)]
    expected = {k: schema.index_expires_at(stored_at(aws, stack, k), DEFAULT_FRAME_EXPIRY_DAYS) for k in keys}
    frames, by_participant, (part,), (bot,) = index_items(aws, stack)
    assert {f["s3_key"]: f[schema.TTL_ATTRIBUTE] for f in frames} == expected
    assert {f["s3_key"]: f[schema.TTL_ATTRIBUTE] for f in by_participant} == expected
    assert part[schema.TTL_ATTRIBUTE] == bot[schema.TTL_ATTRIBUTE] == expected[keys[-1]]
    # The TTL is the object's own (LastModified) expiry or later.
    modified = aws["s3"].head_object(Bucket=stack.bucket, Key=keys[0])["LastModified"]
    assert datetime.fromtimestamp(expected[keys[0]], timezone.utc) >= s3_expiry(modified, DEFAULT_FRAME_EXPIRY_DAYS)


def test_participant_and_bot_items_follow_their_newest_frame(store, aws, stack, monkeypatch):
    png = make_png(8, 8, detailed=False)
    clock = {"now": datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc).timestamp()}
    monkeypatch.setattr(storage, "time", SimpleNamespace(time=lambda: clock["now"]))  # storage's clock only
    first = store.put_frame(frame(png, relative=5.0, bot_id="bot-7")).key
    clock["now"] += 3 * 86400  # a day-long meeting, or a late frame stored days later
    late = store.put_frame(frame(png, relative=1.0, bot_id="bot-7")).key  # older in meeting time
    newest = schema.index_expires_at(stored_at(aws, stack, late), DEFAULT_FRAME_EXPIRY_DAYS)
    assert newest > schema.index_expires_at(stored_at(aws, stack, first), DEFAULT_FRAME_EXPIRY_DAYS)
    _, _, (part,), (bot,) = index_items(aws, stack)
    assert part[schema.TTL_ATTRIBUTE] == bot[schema.TTL_ATTRIBUTE] == newest
    assert (part["first_ms"], part["last_ms"], part["frame_count"]) == (1000, 5000, 2)


def test_zero_expiry_days_writes_no_ttl_and_clears_an_old_one(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    store.put_frame(frame(png, relative=1.0, bot_id="bot-7"))  # with the default expiry
    forever = FrameStore(stack.bucket, stack.table, aws["s3"], aws["dynamodb"], frame_expiry_days=0)
    forever.put_frame(frame(png, relative=2.0, bot_id="bot-7"))
    frames, _, (part,), (bot,) = index_items(aws, stack)
    assert [schema.TTL_ATTRIBUTE in f for f in sorted(frames, key=lambda f: f["relative_ms"])] == [True, False]
    # Frames are kept from now on: the participant and the recording are, too.
    assert schema.TTL_ATTRIBUTE not in part and schema.TTL_ATTRIBUTE not in bot
    assert part["frame_count"] == 2
