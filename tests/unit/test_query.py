"""Core queries (framesink_core.read.query) over frames stored by the real Ingestor, in moto."""

import base64
import io

import pytest
from PIL import Image

from framesink.synthetic import frame_message, make_png
from framesink_core.ingest.stored_frame import StoredFrame
from framesink_core.read.query import FrameIndex, Page, QueryError, encode_cursor
from framesink_core.service import Service
from framesink_core.shared import schema

NAME = 'Zoë "Z" O\'Neil 山田 <script>'


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


def ingest(svc, *, rec="rec-1", pid=100, ms=0, frame_type="webcam", name="Ada", bot="bot-1", seed=0, **kw):
    png = make_png(16 + seed % 5, 12, seed=seed, detailed=False)
    outcome = svc.ingestor.handle(frame_message(
        png, recording_id=rec, participant_id=pid, relative=ms / 1000, frame_type=frame_type,
        name=name, bot_id=bot, **kw))
    assert outcome.status == "stored", outcome
    return {"participant_id": str(pid), "type": frame_type, "relative_ms": ms, "bytes": len(png)}


# Three streams with frames on whole half-seconds, so boundaries land exactly on frames.
STREAMS = [(100, "webcam"), (200, "webcam"), (200, "screenshare")]
TIMES = range(0, 3000, 500)


@pytest.fixture
def meeting(svc):
    stored = []
    seed = 0
    for ms in TIMES:
        for pid, frame_type in STREAMS:
            seed += 1
            stored.append(ingest(svc, pid=pid, ms=ms, frame_type=frame_type, seed=seed,
                                 name=NAME if pid == 200 else "Ada", is_host=pid == 100))
    ingest(svc, rec="other-rec", pid=100, ms=500)  # must never show up in rec-1's answers
    return stored


def view(items):
    return [(i["relative_ms"], i["participant_id"], i["type"]) for i in items]


def expected(stored, participant=None, frame_type=None, since=None, until=None):
    rows = [
        s for s in stored
        if (participant is None or s["participant_id"] == participant)
        and (frame_type is None or s["type"] == frame_type)
        and (since is None or s["relative_ms"] >= since)
        and (until is None or s["relative_ms"] < until)
    ]
    # time order; within one ms the recording index orders by participant id then type
    return sorted((r["relative_ms"], r["participant_id"], r["type"]) for r in rows)


FILTERS = [
    {},  # recording index (gsi2)
    {"participant_id": "200"},  # participant index (gsi1)
    {"participant_id": "200", "frame_type": "screenshare"},  # base table stream
    {"frame_type": "webcam"},  # recording index + filter
]
WINDOWS = [(None, None), (500, 1500), (500, None), (None, 1000), (1000, 1001), (999, 1000),
           (1000, 1000), (1500, 500), (0, 1), (2500, 10**12)]


@pytest.mark.parametrize("filters", FILTERS, ids=["recording", "participant", "stream", "type"])
def test_time_range_is_since_inclusive_until_exclusive(svc, meeting, filters):
    index = svc.index
    for since, until in WINDOWS:
        got = list(index.iter_frames("rec-1", since=since, until=until, **filters))
        want = expected(meeting, filters.get("participant_id"), filters.get("frame_type"), since, until)
        assert view(got) == [(ms, pid, t) for ms, pid, t in want], (since, until)
    # the boundaries themselves, spelled out
    at = list(index.iter_frames("rec-1", since=1000, until=1500, **filters))
    assert at and {f["relative_ms"] for f in at} == {1000}


def test_frame_records_carry_the_contract_fields(svc, meeting, stack, aws):
    [frame] = svc.index.frames("rec-1", participant_id="200", frame_type="screenshare", since=1500, until=2000).items
    assert frame["participant_name"] == NAME and frame["bot_id"] == "bot-1"
    assert frame["s3_key"] == schema.frame_key("rec-1", "200", "screenshare", 1500)
    assert frame["absolute"] == "2026-11-23T19:00:01.500Z"
    body = aws["s3"].get_object(Bucket=stack.bucket, Key=frame["s3_key"])["Body"].read()
    assert frame["bytes"] == len(body)
    assert Image.open(io.BytesIO(body)).size == (frame["width"], frame["height"])
    assert all(isinstance(frame[k], int) for k in ("relative_ms", "bytes", "width", "height", "stored_at"))


def test_pagination_across_several_pages_loses_and_repeats_nothing(svc, meeting):
    for filters in FILTERS:
        pages, cursor, seen = 0, None, []
        while True:
            page = svc.index.frames("rec-1", limit=4, cursor=cursor, since=500, **filters)
            pages += 1
            assert len(page.items) <= 4
            seen += page.items
            if page.cursor is None:
                break
            cursor = page.cursor
        want = expected(meeting, filters.get("participant_id"), filters.get("frame_type"), since=500)
        assert view(seen) == want and pages >= 2, filters
        assert len(set(view(seen))) == len(seen)


def test_cursors_are_validated(svc, meeting):
    page = svc.index.frames("rec-1", limit=2)
    assert page.cursor
    deep = base64.urlsafe_b64encode(b"[" * 760 + b"]" * 760).decode().rstrip("=")  # fits the 2 KB cap
    deep_obj = base64.urlsafe_b64encode(b'{"a":' * 300 + b"1" + b"}" * 300).decode().rstrip("=")
    for bad in ("", "not base64!", "e30", "W10", "x" * 5000, encode_cursor({"pk": {"S": "a"}, "sk": {"S": "b"}}),
                deep, deep_obj):
        with pytest.raises(QueryError) as err:
            svc.index.frames("rec-1", cursor=bad)
        assert err.value.param == "cursor" and err.value.reason == "bad_cursor"
    # a cursor of one query does not fit another: other recording, other index, other range
    for kwargs in ({"recording_id": "other-rec"}, {"recording_id": "rec-1", "participant_id": "100"},
                   {"recording_id": "rec-1", "since": 1}, {"recording_id": "rec-1", "frame_type": "screenshare", "participant_id": "200"}):
        with pytest.raises(QueryError):
            svc.index.frames(cursor=page.cursor, **kwargs)
    # and the real one continues where the first page ended
    nxt = svc.index.frames("rec-1", limit=2, cursor=page.cursor)
    assert view(page.items + nxt.items) == expected(meeting)[:4]


@pytest.mark.parametrize("kwargs, param", [
    ({"recording_id": "bad id"}, "recording"),
    ({"recording_id": "r" * 129}, "recording"),
    ({"recording_id": "rec-1", "participant_id": "1/2"}, "participant"),
    ({"recording_id": "rec-1", "frame_type": "audio"}, "type"),
    ({"recording_id": "rec-1", "since": "-1"}, "since"),
    ({"recording_id": "rec-1", "since": "1.5"}, "since"),
    ({"recording_id": "rec-1", "until": "soon"}, "until"),
    ({"recording_id": "rec-1", "limit": "0"}, "limit"),
    ({"recording_id": "rec-1", "limit": 1001}, "limit"),
])
def test_bad_parameters_are_refused_by_name(svc, kwargs, param):
    with pytest.raises(QueryError) as err:
        svc.index.frames(**kwargs)
    assert err.value.param == param


def test_empty_and_unknown_recordings(svc, meeting):
    assert svc.index.frames("no-such-rec") == Page([], None)
    assert svc.index.participants("no-such-rec") == []
    assert not svc.index.has_recording("no-such-rec") and svc.index.has_recording("rec-1")
    assert svc.index.latest_frame("no-such-rec", "100") is None
    assert svc.index.frames("rec-1", participant_id="999").items == []


def test_participants_aggregate_what_was_stored(svc, meeting):
    parts = {p["participant_id"]: p for p in svc.index.participants("rec-1")}
    assert set(parts) == {"100", "200"}
    for pid, part in parts.items():
        mine = [s for s in meeting if s["participant_id"] == pid]
        assert part["frame_count"] == len(mine)
        assert part["bytes"] == sum(s["bytes"] for s in mine)
        assert (part["first_ms"], part["last_ms"]) == (min(TIMES), max(TIMES))
        assert part["recording_id"] == "rec-1" and part["bot_id"] == "bot-1"
        assert part["platform"] == "desktop"
    assert parts["200"]["participant_name"] == NAME and parts["200"]["is_host"] is False
    assert parts["100"]["is_host"] is True


def test_recordings_of_a_bot(svc, meeting):
    ingest(svc, rec="rec-2", bot="bot-2")
    assert sorted(r["recording_id"] for r in svc.index.recordings("bot-1")) == ["other-rec", "rec-1"]
    assert [r["recording_id"] for r in svc.index.recordings("bot-2")] == ["rec-2"]
    assert all(isinstance(r["first_seen"], int) for r in svc.index.recordings("bot-1"))
    assert svc.index.recordings("bot-3") == []


def test_latest_frame_per_participant(svc, meeting):
    ingest(svc, pid=100, ms=100)  # late-arriving old frame does not become "latest"
    latest = svc.index.latest_frame("rec-1", "200")
    assert (latest["relative_ms"], latest["type"]) == (max(TIMES), "webcam")  # gsi1sk: ms#type
    assert svc.index.latest_frame("rec-1", "200", "screenshare")["type"] == "screenshare"
    assert svc.index.latest_frame("rec-1", "100")["relative_ms"] == max(TIMES)


def test_unicode_names_survive_the_s3_metadata_round_trip(svc, meeting, stack, aws):
    key = schema.frame_key("rec-1", "200", "webcam", 1000)
    head = aws["s3"].head_object(Bucket=stack.bucket, Key=key)
    rebuilt = StoredFrame.from_object(key, head["Metadata"], head["ContentLength"])
    assert rebuilt.participant_name == NAME and rebuilt.is_host is False and rebuilt.platform == "desktop"
    assert all(v.isascii() for v in head["Metadata"].values())  # headers: quoted, not raw


def test_presigned_urls_are_sigv4_with_the_configured_expiry(svc, meeting, stack):
    import requests  # moto's mock answers requests' HTTP calls too (the server test uses real HTTP)

    from framesink_core.read.query import presigned_get_url

    frame = svc.index.frames("rec-1", limit=1).items[0]
    url = presigned_get_url(svc.presigner, stack.bucket, frame["s3_key"], 120)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=120" in url
    assert requests.get(url, timeout=10).content == svc.s3.get_object(
        Bucket=stack.bucket, Key=frame["s3_key"])["Body"].read()
    for bad in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(QueryError):
            presigned_get_url(svc.presigner, stack.bucket, frame["s3_key"], bad)


def test_index_is_usable_without_a_service(stack, aws, meeting):
    index = FrameIndex(stack.table, aws["dynamodb"])
    assert len(list(index.iter_frames("rec-1", limit=5))) == len(meeting)


def test_items_past_their_expiry_are_not_listed(svc, stack, aws):
    """DynamoDB's TTL deletes an expired item only within days, after its S3 object is gone:
    queries hide it from the second it expires. Items with no expires_at are kept."""
    from framesink_core.shared.items import to_item

    for ms in (0, 500, 1000):
        ingest(svc, rec="rec-ttl", pid=100, ms=ms, seed=ms)
    ingest(svc, rec="rec-ttl", pid=300, ms=0)
    ddb, past = aws["dynamodb"], {":past": {"N": "1"}}

    def expire(key: dict) -> None:
        ddb.update_item(TableName=stack.table, Key=to_item(key), UpdateExpression="SET expires_at = :past",
                        ExpressionAttributeValues=past)

    expire(schema.frame_item_key("rec-ttl", "100", "webcam", 0))
    expire(schema.frame_item_key("rec-ttl", "300", "webcam", 0))
    expire({"pk": schema.recording_pk("rec-ttl"), "sk": schema.participant_sk("300")})
    index = svc.index

    assert view(index.frames("rec-ttl").items) == [(500, "100", "webcam"), (1000, "100", "webcam")]
    assert view(index.frames("rec-ttl", participant_id="100", frame_type="webcam").items) == [
        (500, "100", "webcam"), (1000, "100", "webcam")]
    assert view(index.frames("rec-ttl", frame_type="webcam").items)[0] == (500, "100", "webcam")
    assert [p["participant_id"] for p in index.participants("rec-ttl")] == ["100"]
    assert index.latest_frame("rec-ttl", "300") is None
    assert index.latest_frame("rec-ttl", "100")["relative_ms"] == 1000

    # frameExpiryDays 0: no expires_at at all, listed forever.
    ddb.update_item(TableName=stack.table,
                    Key=to_item({"pk": schema.recording_pk("rec-ttl"), "sk": schema.participant_sk("300")}),
                    UpdateExpression="REMOVE expires_at")
    assert [p["participant_id"] for p in index.participants("rec-ttl")] == ["100", "300"]
