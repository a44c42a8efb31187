"""FrameStore: S3 object + index, first write wins, participant aggregates, retries and failures."""

import io
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import unquote

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError
from PIL import Image

from framesink.synthetic import frame_event, make_png
from framesink_core.ingest import storage
from framesink_core.ingest.events import parse_message
from framesink_core.ingest.ingestor import Ingestor
from framesink_core.ingest.storage import FrameStore, StoreError
from framesink_core.shared import schema
from framesink_core.shared.items import from_item
from framesink_core.shared.settings import DEFAULT_FRAME_EXPIRY_DAYS


@pytest.fixture
def store(stack, aws):
    # totals_interval=0: participant totals are written at every frame, so tests can read
    # them right after put_frame (tests/unit/test_totals.py covers the interval itself).
    return FrameStore(stack.bucket, stack.table, aws["s3"], aws["dynamodb"], totals_interval=0)


def frame(png, **kw):
    kw.setdefault("recording_id", "rec")
    kw.setdefault("participant_id", 100)
    kw.setdefault("relative", 1.0)
    return parse_message(json.dumps(frame_event(png, **kw)), 10**7)


def solid(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


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
        TableName=stack.table, Key={"pk": {"S": "REC#rec"}, "sk": {"S": "0000002500#100#webcam"}})["Item"])
    assert "s3_key" not in item and item["bytes"] == len(png)  # the key is derived, not stored
    assert (item["width"], item["height"]) == (40, 30) and item["participant_name"] == 'Zoë "Z" O\'Neil'
    assert (item["gsi1pk"], item["gsi1sk"]) == ("PART#rec#100", "0000002500#webcam")
    assert "write-id" in meta  # tells a retry of this very write from a redelivery
    # the recording is listed under its bot
    rec = aws["dynamodb"].query(TableName=stack.table, KeyConditionExpression="pk = :p",
                                ExpressionAttributeValues={":p": {"S": "BOT#bot-7"}})["Items"]
    assert [from_item(i)["recording_id"] for i in rec] == ["rec"]
    # and in the list of all recordings (gsi1, RECORDINGS partition)
    listed = aws["dynamodb"].query(TableName=stack.table, IndexName=schema.GSI_PARTICIPANT,
                                   KeyConditionExpression="gsi1pk = :p",
                                   ExpressionAttributeValues={":p": {"S": "RECORDINGS"}})["Items"]
    assert [(from_item(i)["recording_id"], from_item(i)["bot_id"]) for i in listed] == [("rec", "bot-7")]


def test_connection_bot_id_wins_over_event_bot_id(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    key = store.put_frame(frame(png, bot_id="from-event"), bot_id="from-token").key
    assert aws["s3"].head_object(Bucket=stack.bucket, Key=key)["Metadata"]["bot-id"] == "from-token"


def test_duplicates_are_stored_once_and_counted_once(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    assert not store.put_frame(frame(png)).duplicate
    first = aws["s3"].head_object(Bucket=stack.bucket, Key="recordings/rec/participants/100/webcam/0000001000.png")
    assert store.put_frame(frame(png)).duplicate
    assert participant(aws, stack, "rec", "100")["frame_count"] == 1
    keys = aws["s3"].list_objects_v2(Bucket=stack.bucket)["KeyCount"]
    assert keys == 1
    # the duplicate did not rewrite the object (a rewrite would restart its lifecycle)
    again = aws["s3"].head_object(Bucket=stack.bucket, Key="recordings/rec/participants/100/webcam/0000001000.png")
    assert again["Metadata"] == first["Metadata"] and again["LastModified"] == first["LastModified"]


def test_different_bytes_on_a_stored_key_are_a_conflict_and_the_first_frame_stays(store, aws, stack, caplog_json):
    first, second = solid((10, 20, 30)), solid((10, 20, 31))
    assert len(first) == len(second) and first != second  # same size: the checksum decides
    key = store.put_frame(frame(first, name="First")).key
    item_before = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": "REC#rec"},
                                                                       "sk": {"S": "0000001000#100#webcam"}})["Item"]
    outcome = Ingestor(store, 10**6).store_frame(frame(second, name="Second"))
    assert outcome.status == "rejected" and outcome.reason == "conflicting_frame" and not outcome.stored
    assert aws["s3"].get_object(Bucket=stack.bucket, Key=key)["Body"].read() == first
    item_after = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": "REC#rec"},
                                                                      "sk": {"S": "0000001000#100#webcam"}})["Item"]
    assert item_after == item_before and from_item(item_after)["participant_name"] == "First"
    assert participant(aws, stack, "rec", "100")["frame_count"] == 1
    lines = caplog_json()
    [log] = [line for line in lines if line.get("message") == "message rejected"]
    assert log["reason"] == "conflicting_frame" and log["relative_ms"] == 1000
    assert any(line.get("MessageRejected") == [1.0] and line.get("reason") == "conflicting_frame" for line in lines)
    # a different size is a conflict too, without comparing checksums
    bigger = make_png(9, 8, seed=2, detailed=False)
    assert Ingestor(store, 10**6).store_frame(frame(bigger)).reason == "conflicting_frame"


def test_two_frames_rounding_to_the_same_millisecond_conflict(store, aws, stack):
    a, b = solid((1, 1, 1)), solid((2, 2, 2))
    assert not store.put_frame(frame(a, relative=1.0001)).duplicate
    with pytest.raises(storage.FrameConflict):
        store.put_frame(frame(b, relative=1.0004))


def test_an_object_written_without_a_checksum_is_compared_byte_for_byte(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    f = frame(png)
    record = storage.StoredFrame.from_frame(f, bot_id=None, connection_id=None, stored_at=1)
    # botocore adds a CRC32 to every PutObject unless told to add only required checksums
    plain = boto3.client("s3", region_name="us-east-1", config=Config(request_checksum_calculation="when_required"))
    plain.put_object(Bucket=stack.bucket, Key=f.s3_key, Body=png, Metadata=record.metadata())
    assert "ChecksumCRC32" not in aws["s3"].head_object(Bucket=stack.bucket, Key=f.s3_key, ChecksumMode="ENABLED")
    result = store.put_frame(f)
    assert result.duplicate and result.repaired  # same bytes; its missing index item written
    with pytest.raises(storage.FrameConflict):
        store.put_frame(frame(make_png(8, 8, seed=9, detailed=False)))


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


def test_index_failure_after_s3_write_is_reported_and_a_redelivery_repairs_it(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    calls = fail_calls(aws["dynamodb"], "PutItem", 6, status=None)  # every attempt of one PutItem
    with pytest.raises(StoreError) as err:
        store.put_frame(frame(png, relative=3.0))
    assert err.value.stage == "index" and calls["n"] == 6
    key = {"pk": {"S": "REC#rec"}, "sk": {"S": "0000003000#100#webcam"}}
    assert "Item" not in aws["dynamodb"].get_item(TableName=stack.table, Key=key)
    assert "Item" not in aws["dynamodb"].get_item(TableName=stack.table,
                                                  Key={"pk": {"S": "REC#rec"}, "sk": {"S": "PART#100"}})
    # Recall redelivers (or the bot reconnects and resends): S3 says duplicate, the item is written
    result = store.put_frame(frame(png, relative=3.0))
    assert result.duplicate and result.repaired
    item = from_item(aws["dynamodb"].get_item(TableName=stack.table, Key=key)["Item"])
    meta = aws["s3"].head_object(Bucket=stack.bucket, Key=result.key)["Metadata"]
    assert item["stored_at"] == int(meta["stored-at"])  # built from the first write's object
    assert not store.put_frame(frame(png, relative=3.0)).repaired  # once is enough


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
    """The recording's items: frames (base table and the GSI), participants, and its bot's
    recording item with the recording's META item (both say when the recording expires)."""
    ddb = aws["dynamodb"]

    def query(**kwargs):
        return [from_item(i) for i in ddb.query(TableName=stack.table, **kwargs)["Items"]]

    frames = query(KeyConditionExpression="pk = :p AND sk < :a",
                   ExpressionAttributeValues={":p": {"S": schema.recording_pk(rec)}, ":a": {"S": "A"}})
    by_participant = query(IndexName=schema.GSI_PARTICIPANT, KeyConditionExpression="gsi1pk = :p",
                           ExpressionAttributeValues={":p": {"S": schema.participant_gsi_pk(rec, "100")}})
    participants = query(KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
                         ExpressionAttributeValues={":p": {"S": schema.recording_pk(rec)}, ":s": {"S": "PART#"}})
    recording = query(KeyConditionExpression="pk = :p AND sk = :s",
                      ExpressionAttributeValues={":p": {"S": schema.recording_pk(rec)}, ":s": {"S": "META"}})
    bot = query(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": schema.bot_pk("bot-7")}})
    for f in frames + by_participant:
        f["s3_key"] = schema.frame_key(f["recording_id"], f["participant_id"], f["type"], int(f["relative_ms"]))
    return frames, by_participant, participants, bot + recording


def stored_at(aws, stack, key):
    return int(aws["s3"].head_object(Bucket=stack.bucket, Key=key)["Metadata"]["stored-at"])


def test_frame_participant_and_bot_items_expire_with_their_objects(store, aws, stack):
    assert store.frame_expiry_days == stack.frame_expiry_days == DEFAULT_FRAME_EXPIRY_DAYS
    png = make_png(8, 8, detailed=False)
    keys = [store.put_frame(frame(png, relative=rel, bot_id="bot-7")).key for rel in (1.0, 2.0)]
    expected = {k: schema.index_expires_at(stored_at(aws, stack, k), DEFAULT_FRAME_EXPIRY_DAYS) for k in keys}
    frames, by_participant, (part,), (bot, meta) = index_items(aws, stack)
    assert {f["s3_key"]: f[schema.TTL_ATTRIBUTE] for f in frames} == expected
    assert {f["s3_key"]: f[schema.TTL_ATTRIBUTE] for f in by_participant} == expected
    assert part[schema.TTL_ATTRIBUTE] == bot[schema.TTL_ATTRIBUTE] == meta[schema.TTL_ATTRIBUTE] == expected[keys[-1]]
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
    _, _, (part,), (bot, meta) = index_items(aws, stack)
    assert part[schema.TTL_ATTRIBUTE] == bot[schema.TTL_ATTRIBUTE] == meta[schema.TTL_ATTRIBUTE] == newest
    assert (part["first_ms"], part["last_ms"], part["frame_count"]) == (1000, 5000, 2)


def test_zero_expiry_days_writes_no_ttl_and_clears_an_old_one(store, aws, stack):
    png = make_png(8, 8, detailed=False)
    store.put_frame(frame(png, relative=1.0, bot_id="bot-7"))  # with the default expiry
    forever = FrameStore(stack.bucket, stack.table, aws["s3"], aws["dynamodb"], frame_expiry_days=0)
    forever.put_frame(frame(png, relative=2.0, bot_id="bot-7"))
    frames, _, (part,), (bot, meta) = index_items(aws, stack)
    assert [schema.TTL_ATTRIBUTE in f for f in sorted(frames, key=lambda f: f["relative_ms"])] == [True, False]
    # Frames are kept from now on: the participant and the recording are, too.
    assert all(schema.TTL_ATTRIBUTE not in item for item in (part, bot, meta))
    assert part["frame_count"] == 2
