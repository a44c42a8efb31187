"""End to end over real sockets: websockets client -> API Gateway emulator -> the real Lambda
handlers -> S3 + DynamoDB in a moto server. One local stack serves the whole module; each
test uses its own recording id."""

from __future__ import annotations

import json
import uuid

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from framesink.local import APIGW_MAX_FRAME_BYTES, APIGW_MAX_MESSAGE_BYTES, LocalConfig, background_stack
from framesink.simulator import SimConfig, simulate
from framesink.synthetic import frame_message, make_png
from framesink_core.access.connections import ConnectionRegistry
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item

GUARD = 30  # seconds: only a hang guard, never an assertion about speed


@pytest.fixture(scope="module")
def local():
    """A LocalStack running in an event loop on a background thread; ``local.run(coro)``."""
    with background_stack(LocalConfig.isolated("e2e", max_frame_bytes=512 * 1024), timeout=GUARD) as stack:
        stack.s3, stack.ddb = stack.client("s3"), stack.client("dynamodb")
        yield stack


def rec_id() -> str:
    return f"rec-{uuid.uuid4().hex[:10]}"


async def send_all(url: str, messages, **kwargs) -> None:
    async with connect(url, compression=None, **kwargs) as ws:
        for message in messages:
            await ws.send(message)


def deliver(local, messages, **kwargs) -> None:
    """Send, close normally, and wait until the emulator has handled every message."""
    local.run(send_all(local.state["ws_url"], messages, **kwargs))
    local.run(local.wait_idle())


def keys_under(local, prefix: str) -> list[str]:
    pages = local.s3.get_paginator("list_objects_v2").paginate(Bucket=local.config.bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def query(local, **kwargs) -> list[dict]:
    pages = local.ddb.get_paginator("query").paginate(TableName=local.config.table, **kwargs)
    return [from_item(i) for page in pages for i in page.get("Items", [])]


def participant_frames(local, rec: str, pid: str) -> list[dict]:
    return query(local, IndexName=schema.GSI_PARTICIPANT, KeyConditionExpression="gsi1pk = :pk",
                 ExpressionAttributeValues=to_item({":pk": schema.participant_gsi_pk(rec, pid)}))


def participant_item(local, rec: str, pid: str) -> dict:
    item = local.ddb.get_item(TableName=local.config.table,
                              Key=to_item({"pk": schema.recording_pk(rec), "sk": schema.participant_sk(pid)}))
    return from_item(item["Item"])


def test_every_frame_sent_is_stored_once_byte_identical_under_the_contract_key(local):
    rec = rec_id()
    sent = []
    for i, (pid, ftype, rel) in enumerate([(100, "webcam", 0.0), (100, "webcam", 0.5), (200, "webcam", 0.012),
                                           (200, "webcam", 0.517), (100, "screenshare", 0.25)]):
        png = make_png(64 + i, 48, seed=i, detailed=False)
        sent.append((str(pid), ftype, round(rel * 1000), png))
    deliver(local, [frame_message(png, recording_id=rec, participant_id=int(pid), relative=ms / 1000,
                                  frame_type=ftype) for pid, ftype, ms, png in sent])

    assert sorted(keys_under(local, schema.recording_prefix(rec))) == sorted(
        schema.frame_key(rec, pid, ftype, ms) for pid, ftype, ms, _ in sent)
    for pid, ftype, ms, png in sent:
        key = schema.frame_key(rec, pid, ftype, ms)
        obj = local.s3.get_object(Bucket=local.config.bucket, Key=key)
        assert obj["Body"].read() == png
        assert obj["ContentType"] == "image/png"
        item = local.ddb.get_item(TableName=local.config.table, Key=to_item(schema.frame_item_key(rec, pid, ftype, ms)))
        assert from_item(item["Item"])["bytes"] == len(png)
    assert len(participant_frames(local, rec, "100")) == 3
    assert len(participant_frames(local, rec, "200")) == 2


def test_redelivered_frames_leave_one_object_and_one_index_item(local):
    rec = rec_id()
    png = make_png(32, 32, seed=7, detailed=False)
    message = frame_message(png, recording_id=rec, participant_id=5, relative=1.5)
    deliver(local, [message, message])
    deliver(local, [message])  # again on a new connection, as after a Recall reconnect

    assert keys_under(local, schema.recording_prefix(rec)) == [schema.frame_key(rec, "5", "webcam", 1500)]
    assert len(participant_frames(local, rec, "5")) == 1
    assert participant_item(local, rec, "5")["frame_count"] == 1


def test_out_of_order_frames_are_all_stored_and_indexed_in_time_order(local):
    rec = rec_id()
    rels = [3.0, 1.0, 2.0, 0.5]
    deliver(local, [frame_message(make_png(16, 16, seed=i, detailed=False), recording_id=rec, participant_id=9,
                                  relative=r) for i, r in enumerate(rels)])

    stored = query(local, KeyConditionExpression="pk = :pk AND sk < :a",
                   ExpressionAttributeValues=to_item({":pk": schema.recording_pk(rec), ":a": "A"}))
    assert [i["relative_ms"] for i in stored] == sorted(round(r * 1000) for r in rels)
    assert len(keys_under(local, schema.recording_prefix(rec))) == len(rels)
    part = participant_item(local, rec, "9")
    assert (part["first_ms"], part["last_ms"], part["frame_count"]) == (500, 3000, 4)


def test_bad_input_is_rejected_and_the_connection_keeps_storing(local):
    rec = rec_id()
    png = make_png(16, 16, seed=3, detailed=False)
    deliver(local, [
        "not json",
        json.dumps({"event": "transcript.partial_data", "data": {}}),
        frame_message(b"\x89PNG but not really", recording_id=rec, participant_id=1, relative=0.0),
        frame_message(png, recording_id="bad/id", participant_id=1, relative=0.5),
        frame_message(png, recording_id=rec, participant_id=1, relative=1.0),
    ])
    assert keys_under(local, schema.recording_prefix(rec)) == [schema.frame_key(rec, "1", "webcam", 1000)]


@pytest.mark.parametrize("query_string, status", [("", 401), ("?token=", 401), ("?token=wrong", 403)])
def test_missing_or_wrong_token_is_refused_at_the_handshake(local, query_string, status):
    with pytest.raises(InvalidStatus) as refused:
        local.run(send_all(local.emulator.url + query_string, []))
    assert refused.value.response.status_code == status


def test_unknown_stage_is_refused(local):
    token = local.state["token"]
    with pytest.raises(InvalidStatus) as refused:
        local.run(send_all(f"ws://127.0.0.1:{local.emulator.port}/prod?token={token}", []))
    assert refused.value.response.status_code == 403


async def send_and_wait_for_close(url: str, payload):
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.send(payload)
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()  # the server sends nothing: this returns only when it closes
    return closed.value.rcvd


def test_a_frame_over_32_kb_closes_with_1009_but_the_same_message_in_32_kb_fragments_is_stored(local):
    rec = rec_id()
    png = make_png(240, 180, seed=4, detailed=True)
    message = frame_message(png, recording_id=rec, participant_id=3, relative=2.0)
    assert APIGW_MAX_FRAME_BYTES < len(message) < APIGW_MAX_MESSAGE_BYTES

    rcvd = local.run(send_and_wait_for_close(local.state["ws_url"], message))
    assert rcvd.code == 1009
    local.run(local.wait_idle())
    assert keys_under(local, schema.recording_prefix(rec)) == []

    fragments = [message[i:i + APIGW_MAX_FRAME_BYTES] for i in range(0, len(message), APIGW_MAX_FRAME_BYTES)]
    deliver(local, [fragments])
    key = schema.frame_key(rec, "3", "webcam", 2000)
    assert keys_under(local, schema.recording_prefix(rec)) == [key]
    assert local.s3.get_object(Bucket=local.config.bucket, Key=key)["Body"].read() == png


def test_a_message_over_128_kb_closes_with_1009_even_in_small_fragments(local):
    message = frame_message(make_png(480, 360, seed=5, detailed=True), recording_id=rec_id(), participant_id=3,
                            relative=0.0)
    assert len(message) > APIGW_MAX_MESSAGE_BYTES
    fragments = [message[i:i + 16 * 1024] for i in range(0, len(message), 16 * 1024)]
    assert local.run(send_and_wait_for_close(local.state["ws_url"], fragments)).code == 1009


def test_a_binary_frame_closes_with_1003(local):
    assert local.run(send_and_wait_for_close(local.state["ws_url"], b"\x89PNG")).code == 1003


def test_idle_timeout_closes_an_idle_connection_with_1001(local):
    async def idle():
        async with connect(local.state["ws_url"], ping_interval=None) as ws:
            await ws.wait_closed()
            return ws.close_code

    local.emulator.idle_timeout = 0.3
    try:
        assert local.run(idle()) == 1001
    finally:
        local.emulator.idle_timeout = LocalConfig.idle_timeout


def test_events_have_api_gateway_shapes_and_disconnect_records_the_close_code(local):
    seen: list[dict] = []
    real = dict(local.emulator._handlers)
    local.emulator._handlers = {route: (lambda fn: lambda event, ctx: (seen.append(event), fn(event, ctx))[1])(fn)
                                for route, fn in real.items()}
    try:
        rec = rec_id()
        png = make_png(16, 16, seed=1, detailed=False)
        local.run(send_and_wait_for_close(
            local.state["ws_url"] + "&extra=1",
            frame_message(png, recording_id=rec, participant_id=1, relative=0.0) + " " * APIGW_MAX_FRAME_BYTES))
        deliver(local, [frame_message(png, recording_id=rec, participant_id=1, relative=0.0)],
                additional_headers={"X-Test": "a"})
    finally:
        local.emulator._handlers = real

    events = [APIGatewayWebSocketEvent(e) for e in seen]
    assert [e.request_context.route_key for e in events] == [
        "$connect", "$disconnect", "$connect", "$default", "$disconnect"]
    assert [e.request_context.event_type for e in events] == [
        "CONNECT", "DISCONNECT", "CONNECT", "MESSAGE", "DISCONNECT"]
    for e in events:
        ctx = e.request_context
        assert ctx.stage == "live" and ctx.api_id == local.emulator.api_id
        assert ctx.domain_name and ctx.request_id and ctx.identity.source_ip == "127.0.0.1"
        assert ctx.connected_at <= ctx.request_time_epoch
        assert e.is_base64_encoded is False
    first, second = events[0], events[2]
    assert first.query_string_parameters == {"token": local.state["token"], "extra": "1"}
    assert first.multi_value_query_string_parameters["extra"] == ["1"]
    assert second.headers["X-Test"] == "a" and second.multi_value_headers["X-Test"] == ["a"]
    assert events[1].request_context.connection_id == first.request_context.connection_id
    assert events[3].request_context.message_id and events[3].body.startswith("{")
    assert events[1].request_context.disconnect_status_code == 1009
    assert events[4].request_context.disconnect_status_code == 1000
    record = ConnectionRegistry(local.config.table, local.ddb, 60).get(first.request_context.connection_id)
    assert record["close_code"] == 1009


def test_the_simulator_reconnects_after_a_drop_and_the_frames_after_it_are_stored(local):
    local.emulator.max_age = 1.0  # API Gateway's 2 h limit, shortened: the server drops the bot
    try:
        report = local.run(simulate(SimConfig(url=local.state["ws_url"], participants=2, seconds=3.0, fps=4,
                                              small=True, reconnect_delay=0.3, recording_id=rec_id())))
        local.run(local.wait_idle())
    finally:
        local.emulator.max_age = LocalConfig.max_age

    assert report.closes.get("1001", 0) >= 1 and report.reconnects >= 1
    assert report.frames_sent + report.frames_lost == report.frames_generated
    keys = keys_under(local, schema.recording_prefix(report.recording_id))
    assert len(keys) == report.frames_sent
    last_ms = max(int(schema.FRAME_KEY_PATTERN.fullmatch(k)["relative_ms"]) for k in keys)
    assert last_ms > 1000 + 300  # stored frames come from after the drop and the reconnect delay


def test_the_container_receiver_on_the_same_stack_stores_real_size_frames(local):
    rec = rec_id()
    png = make_png(480, 360, seed=6, detailed=True)
    message = frame_message(png, recording_id=rec, participant_id=4, relative=1.0)
    assert len(message) > APIGW_MAX_MESSAGE_BYTES  # what API Gateway closes with 1009

    url = local.run(local.start_direct())
    local.run(send_all(url, [message], max_size=None))
    local.run(local.wait_idle())
    key = schema.frame_key(rec, "4", "webcam", 1000)
    assert local.s3.get_object(Bucket=local.config.bucket, Key=key)["Body"].read() == png
    assert len(participant_frames(local, rec, "4")) == 1


def test_participant_totals_are_exact_once_the_lambda_has_stored_the_frames(local):
    """The issue's user case on `framesink local`'s default ingress: 60 frames stored showed as
    34 ("12/11/11") a minute later, because a Lambda instance flushed its counts only when a
    later message reached it. The Lambda ingress now writes them with each frame: the totals
    are exact as soon as the emulator has run the handlers, with no flush from outside."""
    from framesink_core.read.query import FrameIndex

    rec = rec_id()
    report = local.run(simulate(SimConfig(url=local.state["ws_url"], participants=3, seconds=10, small=True,
                                          recording_id=rec)), GUARD)
    local.run(local.emulator.wait_idle(), GUARD)  # the handlers are done; nobody flushes totals
    index = FrameIndex(local.config.table, local.ddb)
    parts = index.participants(rec)
    frames = list(index.iter_frames(rec))
    assert report.frames_sent == len(frames) == 60
    assert sum(p["frame_count"] for p in parts) == 60
    for part in parts:
        mine = [f for f in frames if f["participant_id"] == part["participant_id"]]
        assert part["frame_count"] == len(mine)
        assert (part["first_ms"], part["last_ms"]) == (min(int(f["relative_ms"]) for f in mine),
                                                       max(int(f["relative_ms"]) for f in mine))
