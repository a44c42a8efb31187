"""The receiver killed mid-meeting (SIGKILL: no drain, no close frames) while a simulated bot
reconnects like Recall (every 3 s, 30 tries), then a replacement started on the same port, as
ECS would behind the ALB. Measured and printed (docs/security.md, "Operating it"): frames sent, stored,
lost while disconnected, lost in flight at the kill, and the time until frames flow again.

Asserted, not timed: the bot reconnects by itself, every frame sent after the replacement is
up is stored exactly once, and what is missing is exactly what was sent while no receiver
held the connection (lost by the bot's count, or in flight at the kill)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid

import pytest

from framesink.simulator import SimConfig, simulate
from procs import GUARD, TOKEN, VENV_BIN, Moto, ReceiverProcess

pytestmark = pytest.mark.slow
KILL_AT = 5.0  # seconds into the meeting
REPLACEMENT_AFTER = 2.0  # seconds the port stays dead (ECS: a new task, about 1-2 minutes)


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_receiver(moto: Moto, port: int) -> ReceiverProcess:
    receiver = ReceiverProcess([str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", str(port)],
                               moto.env({"POWERTOOLS_SERVICE_NAME": "framesink-crash-test"}))
    receiver.wait_ready()
    return receiver


def test_sigkill_mid_meeting_loses_only_the_gap_and_frames_flow_again(moto):
    port, recording = free_port(), f"crash-{uuid.uuid4().hex[:8]}"
    receivers = [start_receiver(moto, port)]
    config = SimConfig(url=f"ws://127.0.0.1:{port}/?token={TOKEN}", participants=3, seconds=14.0,
                       recording_id=recording, small=True)
    timeline: dict[str, float] = {}

    async def scenario():
        bot = asyncio.create_task(simulate(config))
        started = time.monotonic()
        await asyncio.sleep(KILL_AT)
        receivers[0].proc.send_signal(signal.SIGKILL)
        timeline["killed"] = time.monotonic() - started
        await asyncio.sleep(REPLACEMENT_AFTER)
        receivers.append(await asyncio.to_thread(start_receiver, moto, port))
        timeline["replacement ready"] = time.monotonic() - started
        report = await asyncio.wait_for(bot, GUARD)
        return report

    try:
        report = asyncio.run(scenario())
    finally:
        for receiver in receivers:
            receiver.close()
    keys = moto.keys(f"recordings/{recording}/")
    stored = len(keys)
    assert len(set(keys)) == stored  # exactly once
    assert report.reconnects >= 1 and not report.gave_up
    in_flight = report.frames_sent - stored  # written to a socket the killed process never read
    assert 0 <= in_flight <= 3 * 2 * 2, "more lost in flight than ~2 s of frames: the bot should notice the drop"
    assert report.frames_lost + report.frames_sent == report.frames_generated
    # Frames after the replacement is up all arrive: the first stored frame time after the kill.
    resumed_ms = min(int(k.rsplit("/", 1)[1][:-4]) for k in keys
                     if int(k.rsplit("/", 1)[1][:-4]) > timeline["killed"] * 1000 + 100)
    result = {"generated": report.frames_generated, "sent": report.frames_sent, "stored": stored,
              "lost while disconnected": report.frames_lost, "lost in flight at the kill": in_flight,
              "failed connects": report.failed_connects, "reconnects": report.reconnects,
              "killed at s": round(timeline["killed"], 2), "replacement ready at s": round(timeline["replacement ready"], 2),
              "first frame after the kill at s": resumed_ms / 1000,
              "gap s": round(resumed_ms / 1000 - timeline["killed"], 2)}
    print("crash run:", json.dumps(result))


def test_rotating_the_shared_token_keeps_open_connections_and_moves_new_handshakes(moto):
    """docs/security.md, "Operating it": put-secret-value on the shared token. The connection opened
    with the old token keeps storing; once the secret cache expires (5 min in a deploy, 1 s
    here) a new handshake needs the new token and the old one gets 403."""
    from websockets.asyncio.client import connect

    from framesink.synthetic import frame_message, make_png
    from framesink_core.access.probe import handshake

    receiver = ReceiverProcess([str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", "0"],
                               moto.env({"FRAMESINK_SECRET_MAX_AGE_SECONDS": "1"}))
    recording, new_token = f"rotate-{uuid.uuid4().hex[:8]}", "rotated-token-" + uuid.uuid4().hex
    try:
        port = receiver.wait_ready()
        url = f"ws://127.0.0.1:{port}/"
        png = make_png(64, 48, seed=1, detailed=False)

        async def scenario():
            async with connect(f"{url}?token={TOKEN}", compression=None) as ws:
                await ws.send(frame_message(png, recording_id=recording, participant_id=1, relative=0.0))
                moto.client("secretsmanager").put_secret_value(SecretId=moto.settings.token_secret_id,
                                                               SecretString=new_token)
                await asyncio.sleep(1.5)  # past the receiver's secret cache
                refused = await asyncio.to_thread(handshake, url, TOKEN)
                accepted = await asyncio.to_thread(handshake, url, new_token)
                await ws.send(frame_message(png, recording_id=recording, participant_id=1, relative=1.0))
                await asyncio.sleep(0.5)
                return refused.status, accepted.status

        statuses = asyncio.run(scenario())
        for _ in range(GUARD * 10):
            if len(moto.keys(f"recordings/{recording}/")) == 2:
                break
            time.sleep(0.1)
    finally:
        receiver.close()
        moto.client("secretsmanager").put_secret_value(SecretId=moto.settings.token_secret_id, SecretString=TOKEN)
    assert statuses == (403, 101)
    assert len(moto.keys(f"recordings/{recording}/")) == 2  # the old connection went on storing


def test_a_killed_receivers_connection_records_are_closed_by_the_next_receivers_sweep(moto):
    """Issue 21, item 8: a task that crashes never records its connections' ends. Its lease
    (the connections it holds, renewed every interval) runs out after 3 intervals and the next
    receiver's sweep closes those records with 1006 receiver_lost. Interval 0.5 s here (60 s
    deployed: closed within 4 minutes while any receiver runs)."""
    from websockets.asyncio.client import connect

    from framesink.synthetic import frame_message, make_png
    from framesink_core.shared.items import from_item

    interval = 0.5
    env = moto.env({"FRAMESINK_LEASE_INTERVAL_SECONDS": str(interval)})
    argv = [str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", "0"]
    dynamodb = moto.client("dynamodb")

    def record(cid: str) -> dict:
        item = dynamodb.get_item(TableName=moto.table, Key={"pk": {"S": f"CONN#{cid}"}, "sk": {"S": "META"}})
        return from_item(item["Item"]) if "Item" in item else {}

    def leased() -> set[str]:
        items = dynamodb.query(TableName=moto.table, KeyConditionExpression="pk = :pk",
                               ExpressionAttributeValues={":pk": {"S": "RECEIVERS"}})["Items"]
        return {cid for item in items for cid in from_item(item).get("open", [])}

    earlier = leased()  # the module's other tests leave receivers' leases of their own
    crashed, replacement = ReceiverProcess(argv, env), None
    try:
        port = crashed.wait_ready()

        async def hold_a_connection_and_kill():
            async with connect(f"ws://127.0.0.1:{port}/?token={TOKEN}", compression=None) as ws:
                await ws.send(frame_message(make_png(64, 48, seed=2, detailed=False),
                                            recording_id=f"lease-{uuid.uuid4().hex[:8]}", participant_id=1,
                                            relative=0.0))
                for _ in range(GUARD * 10):  # the lease lists it within a second of the open
                    if leased() - earlier:
                        break
                    await asyncio.sleep(0.1)
                crashed.proc.send_signal(signal.SIGKILL)
                crashed.proc.wait(GUARD)
                return time.monotonic()

        killed_at = asyncio.run(hold_a_connection_and_kill())
        (cid,) = leased() - earlier
        assert record(cid) and "disconnected_at" not in record(cid)  # as a crash leaves it
        replacement = ReceiverProcess(argv, env)
        replacement.wait_ready()
        for _ in range(GUARD * 10):
            if "disconnected_at" in record(cid):
                break
            time.sleep(0.1)
        closed_after = time.monotonic() - killed_at
        lost = record(cid)
        assert lost.get("close_code") == 1006 and lost["close_reason"].startswith("receiver_lost")
        assert cid not in leased()  # the lost lease is gone; the replacement's lists nothing open
        print(f"lease sweep: record closed {closed_after:.2f} s after the kill (interval {interval} s)")
    finally:
        for receiver in (crashed, replacement):
            if receiver is not None:
                receiver.close()
