"""The container receiver over real sockets: websockets clients -> framesink_receiver ->
the core -> S3 + DynamoDB (moto, in process). Each test runs its own receiver on a free port."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import threading
import time
import uuid

import pytest
from conftest import TOKEN, WHSEC
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from framesink.synthetic import frame_message, make_png
from framesink_core.access.auth import sign_headers
from framesink_core.service import Service
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.settings import DEFAULT_MAX_FRAME_BYTES
from framesink_receiver import Receiver, ReceiverConfig, max_message_bytes

GUARD = 60  # seconds: a hang guard only, never an assertion about speed


def rec_id() -> str:
    return f"rec-{uuid.uuid4().hex[:10]}"


def service_for(aws, settings, **changes) -> Service:
    return Service(dataclasses.replace(settings, **changes), s3=aws["s3"], dynamodb=aws["dynamodb"],
                   secrets=aws["secretsmanager"])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD))


def url(receiver: Receiver, token: str | None = TOKEN, path: str = "/") -> str:
    return f"ws://127.0.0.1:{receiver.port}{path}" + (f"?token={token}" if token is not None else "")


async def started(service: Service, **config) -> Receiver:
    receiver = Receiver(service, ReceiverConfig(host="127.0.0.1", port=0, **config))
    await receiver.start()
    return receiver


async def http_get(port: int, path: str) -> tuple[int, str]:
    """A plain HTTP GET, as the ALB health check sends it (in a thread: http.client blocks)."""

    def get():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    return await asyncio.to_thread(get)


async def wait_until(predicate, what: str) -> None:
    for _ in range(GUARD * 100):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def keys_under(aws, bucket: str, prefix: str) -> list[str]:
    pages = aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def participant_frames(aws, table: str, rec: str, pid: str) -> list[dict]:
    pages = aws["dynamodb"].get_paginator("query").paginate(
        TableName=table, IndexName=schema.GSI_PARTICIPANT, KeyConditionExpression="gsi1pk = :pk",
        ExpressionAttributeValues=to_item({":pk": schema.participant_gsi_pk(rec, pid)}))
    return [from_item(i) for page in pages for i in page.get("Items", [])]


def participant_item(aws, table: str, rec: str, pid: str) -> dict:
    item = aws["dynamodb"].get_item(
        TableName=table, Key=to_item({"pk": schema.recording_pk(rec), "sk": schema.participant_sk(pid)})
    ).get("Item")
    return from_item(item) if item else {}


def test_screenshare_frames_over_a_megabyte_are_stored_byte_identical(aws, stack):
    """1280x720 frames, far over API Gateway's 32 KB frame limit, arrive whole."""
    service = service_for(aws, stack, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES)
    rec = rec_id()
    pngs = [make_png(1280, 720, seed=seed, detailed=True) for seed in range(3)]
    messages = [frame_message(png, recording_id=rec, participant_id=7, relative=i * 0.5, frame_type="screenshare")
                for i, png in enumerate(pngs)]

    async def scenario():
        # One store at a time: moto (unlike DynamoDB) does not apply concurrent ADDs to the
        # participant item atomically, and this test checks that item's totals exactly.
        receiver = await started(service, max_in_flight=1)
        async with connect(url(receiver), max_size=None) as ws:
            for message in messages:
                await ws.send(message)
        await wait_until(lambda: receiver.stats.received == 3 and receiver.stats.held == 0, "3 frames handled")
        return await receiver.stop()

    summary = run(scenario())
    assert summary["outcomes"] == {"stored": 3}
    assert max(len(m) for m in messages) > 32 * 1024 * 8  # each message is a real-size frame
    for i, png in enumerate(pngs):
        key = schema.frame_key(rec, "7", "screenshare", i * 500)
        obj = aws["s3"].get_object(Bucket=stack.bucket, Key=key)
        assert obj["Body"].read() == png
        assert obj["ContentType"] == "image/png"
    item = participant_item(aws, stack.table, rec, "7")
    assert item["frame_count"] == 3 and item["bytes"] == sum(len(p) for p in pngs)


def test_fifty_concurrent_participant_streams_lose_nothing(aws, stack):
    service = service_for(aws, stack)
    rec = rec_id()
    streams, frames_each = 50, 3
    pngs = [make_png(64, 48, seed=s, detailed=False) for s in range(frames_each)]

    async def stream(receiver: Receiver, pid: int) -> None:
        async with connect(url(receiver), compression=None) as ws:
            for i in range(frames_each):
                await ws.send(frame_message(pngs[i], recording_id=rec, participant_id=pid, relative=i * 0.5,
                                            name=f"P{pid}"))

    async def scenario():
        receiver = await started(service)
        await asyncio.gather(*(stream(receiver, pid) for pid in range(streams)))
        await wait_until(lambda: receiver.stats.received == streams * frames_each and receiver.stats.held == 0
                         and receiver.stats.open == 0, "every stream handled and closed")
        return receiver, await receiver.stop()

    receiver, summary = run(scenario())
    assert summary["outcomes"] == {"stored": streams * frames_each}
    assert summary["connections"]["accepted"] == streams
    assert summary["closes"] == {"1000": streams}
    keys = keys_under(aws, stack.bucket, f"recordings/{rec}/")
    assert len(keys) == streams * frames_each
    for pid in range(streams):
        # Frame items, not the participant's frame_count: a connection's frames are stored
        # concurrently, and moto (unlike DynamoDB) does not apply concurrent ADDs atomically.
        frames = participant_frames(aws, stack.table, rec, str(pid))
        assert [f["relative_ms"] for f in frames] == [i * 500 for i in range(frames_each)]
        assert participant_item(aws, stack.table, rec, str(pid))["participant_name"] == f"P{pid}"
    assert receiver.stats.peak_open > 1  # the streams really overlapped


def test_slow_store_stops_reading_instead_of_buffering(aws, stack):
    """While the store is stuck, the receiver holds at most max_in_flight messages in the
    store plus one waiting message per connection: it stops reading, memory does not grow."""
    limit, connections, frames_each = 4, 3, 12
    service = service_for(aws, stack)
    gate = threading.Event()
    entered = []
    real_put = service.store.begin_put

    def slow_put(frame, **kwargs):  # a store that hangs until the test lets it go
        entered.append(frame.s3_key)
        gate.wait(GUARD)
        return real_put(frame, **kwargs)

    service.store.begin_put = slow_put
    rec = rec_id()
    png = make_png(160, 120, seed=3, detailed=True)  # ~30 KB: 36 of them are 5x the bound below

    async def stream(receiver: Receiver, pid: int) -> None:
        async with connect(url(receiver), compression=None) as ws:
            for i in range(frames_each):
                await ws.send(frame_message(png, recording_id=rec, participant_id=pid, relative=i * 0.5))

    async def scenario():
        receiver = await started(service, max_in_flight=limit)
        senders = [asyncio.create_task(stream(receiver, pid)) for pid in range(connections)]
        stats = receiver.stats
        await wait_until(lambda: stats.in_flight == limit and stats.held == limit + connections,
                         "the store saturated and every connection holding one message")
        received_when_saturated = stats.received
        await asyncio.sleep(0.3)  # the clients keep sending meanwhile; nothing more may be read
        seen = (received_when_saturated, stats.received, stats.held, stats.held_bytes, len(entered))
        gate.set()
        await asyncio.gather(*senders)
        await wait_until(lambda: stats.received == connections * frames_each and stats.held == 0, "all handled")
        return seen, await receiver.stop()

    try:
        (at_saturation, after_wait, held, held_bytes, in_store), summary = run(scenario())
    finally:
        gate.set()
    message_bytes = len(frame_message(png, recording_id=rec, participant_id=0, relative=0.0))
    assert at_saturation == after_wait == limit + connections  # reading stopped
    assert in_store == limit and held == limit + connections
    assert held_bytes <= (limit + connections) * (message_bytes + 64)
    assert summary["peak"]["in_flight"] == limit
    assert summary["peak"]["held"] <= limit + connections
    assert summary["outcomes"] == {"stored": connections * frames_each}
    assert len(keys_under(aws, stack.bucket, f"recordings/{rec}/")) == connections * frames_each


def test_missing_or_wrong_token_is_refused_at_the_handshake(aws, stack, caplog_json):
    service = service_for(aws, stack)

    async def status_of(target: str) -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(target):
                pass
        return refused.value.response.status_code

    async def scenario():
        receiver = await started(service)
        statuses = (await status_of(url(receiver, None)), await status_of(url(receiver, "not-the-token")),
                    await status_of(url(receiver, "")))
        return statuses, await receiver.stop()

    statuses, summary = run(scenario())
    assert statuses == (401, 403, 401)
    assert summary["connections"] == {"accepted": 0, "refused": {"401": 2, "403": 1}}
    refusals = [line for line in caplog_json() if line.get("message") == "connection refused"]
    assert sorted(line["reason"] for line in refusals) == ["missing_token", "missing_token", "wrong_token"]
    assert all(TOKEN not in json.dumps(line) for line in refusals)


def test_bot_token_connection_is_recorded_and_frames_carry_the_bot(aws, stack, small_png):
    service = service_for(aws, stack)
    bot_token = service.tokens.issue("bot-42", ttl_seconds=600)
    rec = rec_id()

    async def scenario():
        receiver = await started(service)
        async with connect(url(receiver, bot_token), additional_headers={"X-Forwarded-For": "198.51.100.9"}) as ws:
            await ws.send(frame_message(small_png, recording_id=rec, participant_id=1, relative=1.0))
        await wait_until(lambda: receiver.stats.outcomes["stored"] == 1 and receiver.stats.open == 0, "stored")
        await receiver.stop()

    run(scenario())
    frame = from_item(aws["dynamodb"].get_item(
        TableName=stack.table, Key=to_item(schema.frame_item_key(rec, "1", "webcam", 1000)),
    )["Item"])
    assert frame["bot_id"] == "bot-42"
    connection = service.connections.get(frame["connection_id"])
    assert connection["bot_id"] == "bot-42" and connection["auth_method"] == "bot_token"
    assert connection["source_ip"] == "198.51.100.9" and connection["close_code"] == 1000


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_an_open_connection_of_a_revoked_or_expired_bot_token_is_closed(aws, stack, small_png, how):
    """A token revoked (framesink revoke-bot) or expired after the handshake closes its open
    connections with 1008 within token_recheck; a static-token connection beside it goes on."""
    service = service_for(aws, stack)
    bot_token = service.tokens.issue("bot-revoked", ttl_seconds=600 if how == "revoked" else 2)
    rec = rec_id()

    async def scenario():
        receiver = await started(service, token_recheck=0.5)
        async with connect(url(receiver, bot_token)) as bot, connect(url(receiver)) as shared:
            await bot.send(frame_message(small_png, recording_id=rec, participant_id=1, relative=0.0))
            await wait_until(lambda: receiver.stats.outcomes["stored"] == 1, "the first frame stored")
            if how == "revoked":
                assert service.tokens.revoke("bot-revoked") == 1
            await asyncio.wait_for(bot.wait_closed(), GUARD)
            await shared.send(frame_message(small_png, recording_id=rec, participant_id=2, relative=0.0))
            await wait_until(lambda: receiver.stats.outcomes["stored"] == 2, "the shared token's frame stored")
            closed = (bot.close_code, bot.close_reason)
        await receiver.stop()
        return closed

    assert run(scenario()) == (1008, "token revoked or expired")
    assert keys_under(aws, stack.bucket, f"recordings/{rec}/") == [
        f"recordings/{rec}/participants/{pid}/webcam/0000000000.png" for pid in (1, 2)]


def test_one_bot_token_holds_at_most_max_connections_per_token(aws, stack, caplog_json):
    """Past the cap a handshake with that token is refused with 429 and a reason; the shared
    token is not capped, and a closed connection frees its place."""
    service = service_for(aws, stack)
    bot_token = service.tokens.issue("bot-capped", ttl_seconds=600)

    async def scenario():
        receiver = await started(service, max_connections_per_token=2)
        first, second = await connect(url(receiver, bot_token)), await connect(url(receiver, bot_token))
        with pytest.raises(InvalidStatus) as refused:
            await connect(url(receiver, bot_token))
        shared = [await connect(url(receiver)) for _ in range(3)]
        await first.close()
        await wait_until(lambda: receiver.stats.open == 4, "the first connection closed")
        third = await connect(url(receiver, bot_token))
        for ws in (second, third, *shared):
            await ws.close()
        await receiver.stop()
        return refused.value.response.status_code

    assert run(scenario()) == 429
    assert [line["reason"] for line in caplog_json() if line.get("message") == "connection refused"] == [
        "too_many_connections"]


async def send_all_then_stop(service, messages: list) -> dict:
    """One connection sends every message; the receiver stops once it handled them all."""
    receiver = await started(service)
    async with connect(url(receiver)) as ws:
        for message in messages:
            await ws.send(message)
    await wait_until(lambda: receiver.stats.received == len(messages) and receiver.stats.held == 0, "handled")
    return await receiver.stop()


def test_bad_messages_are_rejected_and_the_connection_stays_open(aws, stack, small_png, caplog_json):
    service = service_for(aws, stack)
    rec = rec_id()
    messages = [
        "not json",
        b"\x89PNG binary",
        json.dumps({"event": "transcript.partial_data", "data": {}}),
        frame_message(b"not a png at all", recording_id=rec, participant_id=1, relative=0.5),
        frame_message(small_png, recording_id="bad id!", participant_id=1, relative=0.5),
        frame_message(small_png, recording_id=rec, participant_id=1, relative=1.0),
    ]

    summary = run(send_all_then_stop(service, messages))
    assert summary["outcomes"] == {"rejected": 4, "ignored": 1, "stored": 1}
    assert summary["closes"] == {"1000": 1}  # the client closed; the receiver never did
    reasons = sorted(line["reason"] for line in caplog_json() if line.get("message") == "message rejected")
    assert reasons == ["bad_recording_id", "binary_message", "not_json", "not_png"]
    assert keys_under(aws, stack.bucket, f"recordings/{rec}/") == [schema.frame_key(rec, "1", "webcam", 1000)]


def test_message_over_the_maximum_closes_with_1009_and_smaller_oversize_frames_are_rejected(aws, stack):
    limit = 32 * 1024
    service = service_for(aws, stack, max_frame_bytes=limit)
    rec = rec_id()
    over_frame = make_png(240, 180, seed=0, detailed=True)  # ~68 KB: over the limit, under the message cap
    too_big = "x" * (max_message_bytes(limit) + 1)
    first = frame_message(over_frame, recording_id=rec, participant_id=1, relative=0.0)
    assert len(over_frame) > limit and len(first) < max_message_bytes(limit)

    async def scenario():
        receiver = await started(service)
        async with connect(url(receiver), max_size=None) as ws:
            await ws.send(first)
            await ws.send(too_big)
            with pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
        await wait_until(lambda: receiver.stats.open == 0 and receiver.stats.held == 0, "closed")
        return closed.value.rcvd.code, await receiver.stop()

    code, summary = run(scenario())
    assert code == 1009
    assert summary["outcomes"] == {"rejected": 1}
    assert summary["closes"] == {"1009": 1}


def test_health_is_200_then_503_while_draining_and_stop_closes_with_1001(aws, stack, small_png):
    service = service_for(aws, stack)
    rec = rec_id()

    async def scenario():
        receiver = await started(service, health_port=0)
        seen = {"healthy": await http_get(receiver.port, "/healthz"),
                "health_port": await http_get(receiver.health_port, "/healthz"),
                "unknown_path": await http_get(receiver.health_port, "/other")}
        async with connect(url(receiver)) as ws:
            await ws.send(frame_message(small_png, recording_id=rec, participant_id=1, relative=0.5))
            receiver.drain()
            seen["draining"] = await http_get(receiver.port, "/healthz")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url(receiver)):
                    pass
            seen["new_connection"] = refused.value.response.status_code
            # An open connection keeps streaming while the task drains.
            await ws.send(frame_message(small_png, recording_id=rec, participant_id=1, relative=1.0))
            await wait_until(lambda: receiver.stats.outcomes["stored"] == 2, "both frames stored")
            stopping = asyncio.create_task(receiver.stop())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            seen["close"] = closed.value.rcvd.code
        seen["summary"] = await stopping
        return seen

    seen = run(scenario())
    assert seen["healthy"] == (200, "ok\n") and seen["health_port"] == (200, "ok\n")
    assert seen["unknown_path"][0] == 404
    assert seen["draining"] == (503, "draining\n")
    assert seen["new_connection"] == 503
    assert seen["close"] == 1001
    assert seen["summary"]["outcomes"] == {"stored": 2}
    assert seen["summary"]["closes"] == {"1001": 1}


def test_plain_http_is_checked_and_never_recorded_as_a_connection(aws, stack):
    service = service_for(aws, stack)
    seen = []
    real_opened = service.connections.opened
    service.connections.opened = lambda *a, **kw: (seen.append(a), real_opened(*a, **kw))

    async def scenario():
        receiver = await started(service)
        answers = (await http_get(receiver.port, f"/?token={TOKEN}"), await http_get(receiver.port, "/"))
        return answers, await receiver.stop()

    ((with_token, _), (without, _)), summary = run(scenario())
    assert with_token == 426  # a good token, but no upgrade: websockets' own answer
    assert without == 401  # the token check runs first, whatever the request
    assert seen == [] and summary["connections"] == {"accepted": 0, "refused": {"401": 1}}


def test_a_connection_that_cannot_be_recorded_is_refused_with_500(aws, stack):
    service = service_for(aws, stack)

    def broken(*args, **kwargs):
        raise RuntimeError("DynamoDB unreachable")

    service.connections.opened = broken

    async def scenario():
        receiver = await started(service)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(receiver)):
                pass
        return refused.value.response.status_code, await receiver.stop()

    status, summary = run(scenario())
    assert status == 500
    assert summary["connections"] == {"accepted": 0, "refused": {"500": 1}}


def test_metrics_are_flushed_periodically_as_emf(aws, stack, small_png, capsys, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    service = service_for(aws, stack)
    rec = rec_id()

    async def scenario():
        receiver = await started(service, metrics_interval=0.05)
        async with connect(url(receiver)) as ws:
            await ws.send(frame_message(small_png, recording_id=rec, participant_id=1, relative=0.5))
        await wait_until(lambda: "FrameStored" in capsys.readouterr().out, "an EMF line with FrameStored")
        await receiver.stop()

    run(scenario())  # the wait above is the assertion: the line appears without any stop/flush call


def test_recall_signed_headers_are_verified_at_the_handshake(aws, signed_stack, small_png):
    service = service_for(aws, signed_stack)
    rec = rec_id()

    async def scenario():
        receiver = await started(service)
        statuses = []
        for headers in ({}, {**sign_headers(WHSEC, "msg_1", int(time.time())), "webhook-signature": "v1,Zm9v"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url(receiver), additional_headers=headers):
                    pass
            statuses.append(refused.value.response.status_code)
        async with connect(url(receiver), additional_headers=sign_headers(WHSEC, "msg_2", int(time.time()))) as ws:
            await ws.send(frame_message(small_png, recording_id=rec, participant_id=1, relative=0.5))
        await wait_until(lambda: receiver.stats.outcomes["stored"] == 1, "the signed connection's frame stored")
        return statuses, await receiver.stop()

    statuses, summary = run(scenario())
    assert statuses == [401, 403]  # no signature, wrong signature
    assert summary["connections"]["accepted"] == 1


def test_one_flooding_connection_cannot_take_every_store_slot(aws, stack):
    """A bot (or an attacker with a token) that floods slow-to-store messages holds at most
    max_in_flight_per_connection slots: an honest connection's frame is stored meanwhile."""
    service = service_for(aws, stack)
    gate = threading.Event()
    real_put = service.store.begin_put
    flood_rec, honest_rec = rec_id(), rec_id()

    def put(frame, **kwargs):
        if frame.recording_id == flood_rec:
            gate.wait(GUARD)  # the flood's stores hang until the honest frame is in
        return real_put(frame, **kwargs)

    service.store.begin_put = put
    png = make_png(32, 24, seed=5, detailed=False)

    async def scenario():
        receiver = await started(service, max_in_flight=16, max_in_flight_per_connection=4)
        async with connect(url(receiver), compression=None) as flood:
            for i in range(40):  # far more than every slot
                await flood.send(frame_message(png, recording_id=flood_rec, participant_id=1, relative=i / 2))
            await wait_until(lambda: receiver.stats.in_flight == 4, "the flood's share of the slots taken")
            async with connect(url(receiver), compression=None) as honest:
                await honest.send(frame_message(png, recording_id=honest_rec, participant_id=2, relative=1.0))
                await wait_until(lambda: receiver.stats.outcomes["stored"] == 1, "the honest frame stored")
            flood_in_flight = receiver.stats.in_flight
            gate.set()
        await wait_until(lambda: receiver.stats.held == 0 and receiver.stats.open == 0, "the flood stored")
        return flood_in_flight, await receiver.stop()

    try:
        flood_in_flight, summary = run(scenario())
    finally:
        gate.set()
    assert flood_in_flight == 4  # never more than its share, while the honest frame went through
    assert keys_under(aws, stack.bucket, f"recordings/{honest_rec}/")
    assert summary["outcomes"] == {"stored": 41}


def test_a_silent_peer_is_closed_with_1011_but_a_backlogged_one_is_not(aws, stack):
    """Pings every 0.2 s, pong deadline 0.5 s. A peer that completed the handshake and then
    never answers is closed with 1011. A peer whose pongs are stuck behind its own unread
    frames (the receiver is behind) is not, however long the backlog lasts."""
    service = service_for(aws, stack)
    gate = threading.Event()
    real_put = service.store.begin_put

    def slow_put(frame, **kwargs):
        gate.wait(GUARD)
        return real_put(frame, **kwargs)

    service.store.begin_put = slow_put
    png = make_png(64, 48, seed=2, detailed=True)
    rec = rec_id()

    async def silent_peer(receiver) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        writer.write((f"GET /?token={TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        received = b""
        while not reader.at_eof():  # read what the server sends (101, pings, its close) and never answer
            chunk = await reader.read(4096)
            if not chunk:
                break
            received += chunk
        writer.close()
        return received

    async def scenario():
        receiver = await started(service, ping_interval=0.2, ping_timeout=0.5, max_in_flight=2,
                                 max_in_flight_per_connection=2)
        silent = await asyncio.wait_for(silent_peer(receiver), GUARD)
        # Backlogged: the store is stuck, so this connection's socket stops being read and its
        # pongs queue behind frames; 3 s is six pong deadlines.
        async with connect(url(receiver), compression=None, ping_interval=None) as ws:
            for i in range(30):
                await ws.send(frame_message(png, recording_id=rec, participant_id=1, relative=i / 2))
            await asyncio.sleep(3)
            still_open = receiver.stats.open == 1
            gate.set()
            await wait_until(lambda: receiver.stats.outcomes["stored"] == 30, "the backlog stored")
        await wait_until(lambda: receiver.stats.open == 0, "closed")
        return silent, still_open, await receiver.stop()

    try:
        silent, still_open, summary = run(scenario())
    finally:
        gate.set()
    assert silent.startswith(b"HTTP/1.1 101")
    assert b"\x88" in silent and (1011).to_bytes(2, "big") in silent  # a close frame with code 1011
    assert still_open
    assert summary["closes"] == {"1000": 1, "1011": 1}


def test_a_deregistered_task_closes_its_connections_with_1001_and_keeps_serving(aws, stack, small_png):
    """Behind an ALB: health checks stop when ECS deregisters the task; the receiver moves its
    bots (1001) before the load balancer cuts them, and still accepts connections."""
    service = service_for(aws, stack)

    async def scenario():
        receiver = await started(service, deregistration_watch=0.5)
        assert (await http_get(receiver.port, "/healthz"))[0] == 200  # the ALB checks it once...
        async with connect(url(receiver), compression=None) as ws:
            await ws.send(frame_message(small_png, recording_id=rec_id(), participant_id=1, relative=1.0))
            with pytest.raises(ConnectionClosed) as closed:  # ...then stops: deregistered
                await asyncio.wait_for(ws.recv(), GUARD)
        async with connect(url(receiver), compression=None) as again:
            await again.send(frame_message(small_png, recording_id=rec_id(), participant_id=1, relative=1.0))
        await wait_until(lambda: receiver.stats.outcomes["stored"] == 2 and receiver.stats.open == 0, "stored")
        return closed.value, await receiver.stop()

    closed, summary = run(scenario())
    assert closed.rcvd.code == 1001 and closed.rcvd.reason == "target deregistered"
    assert summary["outcomes"] == {"stored": 2}


def test_on_one_connection_the_first_frame_sent_for_a_key_is_the_one_kept(aws, stack):
    """Two different frames for one key, back to back on one connection, while the first's S3
    write is slow: the second waits for the first instead of racing it to S3, so the first
    sent is stored and the second is the conflict (and the connection goes on)."""
    service = service_for(aws, stack)
    gate = threading.Event()
    real_put = service.store.begin_put
    started_puts = []

    def slow_first(frame, **kwargs):
        started_puts.append(frame.png)
        if len(started_puts) == 1:
            gate.wait(GUARD)  # the first frame's S3 write hangs until the second has arrived
        return real_put(frame, **kwargs)

    service.store.begin_put = slow_first
    rec = rec_id()
    first, second, later = (make_png(32, 24, seed=s, detailed=False) for s in (1, 2, 3))

    async def scenario():
        receiver = await started(service)
        async with connect(url(receiver), compression=None) as ws:
            await ws.send(frame_message(first, recording_id=rec, participant_id=1, relative=1.0))
            await ws.send(frame_message(second, recording_id=rec, participant_id=1, relative=1.0))
            await ws.send(frame_message(later, recording_id=rec, participant_id=1, relative=1.5))
            # The second is read and waits behind the first (the connection reads no further
            # meanwhile: a same-key redelivery is rare, and the wait is bounded by one store).
            await wait_until(lambda: receiver.stats.received == 2, "the second read")
            await asyncio.sleep(0.2)
            held_back = (len(started_puts), receiver.stats.received)
            gate.set()
            await wait_until(lambda: sum(receiver.stats.outcomes.values()) == 3, "all three finished")
        return held_back, await receiver.stop()

    try:
        held_back, summary = run(scenario())
    finally:
        gate.set()
    assert held_back == (1, 2)  # one S3 write started, the second message held
    assert summary["outcomes"] == {"stored": 2, "rejected": 1}
    key = f"recordings/{rec}/participants/1/webcam/{schema.relative_ms_text(1000)}.png"
    assert aws["s3"].get_object(Bucket=stack.bucket, Key=key)["Body"].read() == first


def test_every_connection_record_gets_its_close_and_a_burst_of_closes_is_batched(aws, stack):
    """The issue: 5 s after 2,000 connections closed, 1,223 records had no close. The receiver
    now puts each whole record with its close into the index batches (25 per BatchWriteItem,
    at most 50 ms later): 200 closes at once take a handful of requests, not 200."""
    service = Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"], secrets=aws["secretsmanager"],
                      batch_index_writes=True)
    conns, since_ms = 200, int(time.time() * 1000)

    def closes() -> list[dict]:
        pages = aws["dynamodb"].get_paginator("scan").paginate(
            TableName=stack.table, FilterExpression="kind = :k AND connected_at >= :t",
            ExpressionAttributeValues={":k": {"S": "connection"}, ":t": {"N": str(since_ms)}})
        return [from_item(i) for page in pages for i in page["Items"] if "disconnected_at" in from_item(i)]

    async def scenario():
        receiver = await started(service, ping_interval=None)
        sockets = [await connect(url(receiver), compression=None) for _ in range(conns)]
        await wait_until(lambda: receiver.stats.open == conns, "all open")
        batches = service.store.index_writer.batches
        await asyncio.gather(*(ws.close() for ws in sockets))
        await wait_until(lambda: receiver.stats.open == 0, "all closed")
        await wait_until(lambda: len(closes()) == conns, "every close recorded")
        batches = service.store.index_writer.batches - batches
        await receiver.stop()
        return batches

    batches = run(scenario())
    records = closes()
    assert len(records) == conns and {r["close_code"] for r in records} == {1000}
    assert all(r["auth_method"] and r["disconnected_at"] >= r["connected_at"] and r["expires_at"] for r in records)
    assert 0 < batches <= conns / 5  # batched: 25 per request when they close together


def test_participant_events_and_utterances_go_through_the_receivers_batched_writer(aws, stack):
    """The container path: context events are queued to the index writer from the event loop
    (no blocking call there), written in batches, and readable once the receiver stopped."""
    from framesink.synthetic import participant_event_message, spoken, transcript_message
    from framesink_core.read.query import FrameIndex

    service = service_for(aws, stack)
    rec = rec_id()
    messages = [participant_event_message("speech_on", recording_id=rec, participant_id=k % 3, relative=k)
                for k in range(30)]
    messages.append(transcript_message(spoken("all of this is stored", 2.0), recording_id=rec, participant_id=1))

    summary = run(send_all_then_stop(service, messages))
    assert summary["outcomes"] == {"recorded": 31}
    index = FrameIndex(stack.table, aws["dynamodb"])
    assert len(index.participant_events(rec)) == 30
    assert [u["text"] for u in index.transcript(rec)] == ["all of this is stored"]
