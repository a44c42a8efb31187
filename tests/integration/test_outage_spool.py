"""A storage outage loses nothing the receiver has read (framesink_core/ingest/spool.py).

The receiver runs as a process (`framesink receive`) whose every AWS call (obstore's S3 puts,
botocore's DynamoDB and Secrets Manager) goes through a TCP proxy in front of moto; the proxy is
taken down for a span, so connections are refused as with S3 and DynamoDB unreachable.
Recall's protocol has no acknowledgement and no resend: what the receiver read during the span
is on its disk and stored once the proxy is back, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import pytest

from framesink.simulator import SimConfig, simulate
from framesink.synthetic import frame_message, make_png
from framesink_core.read.query import FrameIndex
from procs import GUARD, TOKEN, VENV_BIN, Moto, ReceiverProcess
from tests.faultproxy import OutageProxy

pytestmark = pytest.mark.slow
# The issue measured 20 s and 60 s; CI runs 20 (FRAMESINK_OUTAGE_SECONDS=60 for the other).
OUTAGE_SECONDS = float(os.environ.get("FRAMESINK_OUTAGE_SECONDS", "20"))


@pytest.fixture(scope="module")
def moto():
    server = Moto(own_process=True)
    yield server
    server.stop()


def start_receiver(moto: Moto, proxy: OutageProxy, spool_dir, *args: str) -> ReceiverProcess:
    receiver = ReceiverProcess(
        [str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", "0", "--spool-dir", str(spool_dir),
         *args],
        moto.env({"AWS_ENDPOINT_URL": proxy.url, "POWERTOOLS_SERVICE_NAME": "framesink-spool-test",
                  "FRAMESINK_TOTALS_FLUSH_SECONDS": "1"}))
    receiver.wait_ready()
    return receiver


def stop(receiver: ReceiverProcess) -> dict:
    receiver.proc.send_signal(signal.SIGTERM)
    assert receiver.proc.wait(GUARD) == 0
    time.sleep(0.2)  # the reader thread takes the last lines
    return receiver.summary()


def stored(moto: Moto, recording: str) -> tuple[list[str], dict]:
    keys = moto.keys(f"recordings/{recording}/")
    items = {i["s3_key"]: i for i in FrameIndex(moto.table, moto.client("dynamodb")).iter_frames(recording)}
    return keys, items


def wait_for(moto: Moto, recording: str, frames: int, guard: float = GUARD) -> None:
    deadline = time.monotonic() + guard
    while time.monotonic() < deadline and len(moto.keys(f"recordings/{recording}/")) < frames:
        time.sleep(0.25)


def test_an_outage_of_s3_and_dynamodb_loses_no_frame(moto, tmp_path):
    """The issue's case: 3 participants at 2 fps, every AWS connection refused for 20 s. Before
    the spool 118 of 327 frames were lost; now every frame is stored exactly once, the spooled
    ones after the outage, and the bot's connection never drops."""
    proxy = OutageProxy(moto.endpoint_url)
    receiver = start_receiver(moto, proxy, tmp_path / "spool")
    recording = f"outage-{uuid.uuid4().hex[:8]}"
    config = SimConfig(url=f"ws://127.0.0.1:{receiver.port}/?token={TOKEN}", participants=3, seconds=OUTAGE_SECONDS + 10,
                       recording_id=recording, small=True)

    async def scenario():
        bot = asyncio.create_task(simulate(config))
        await asyncio.sleep(5.0)
        proxy.down()
        await asyncio.sleep(OUTAGE_SECONDS)
        proxy.up()
        return await asyncio.wait_for(bot, GUARD)

    try:
        report = asyncio.run(scenario())
        wait_for(moto, recording, report.frames_sent)
        summary = stop(receiver)
    finally:
        receiver.close()
        proxy.stop()
    keys, items = stored(moto, recording)
    outcomes = summary["outcomes"]
    print("outage run:", json.dumps({"outage_s": OUTAGE_SECONDS, "sent": report.frames_sent, "outcomes": outcomes, "spool": summary["spool"]}))
    assert report.frames_lost == 0 and report.connections == 1 and report.reconnects == 0
    assert outcomes.get("spooled", 0) >= OUTAGE_SECONDS * 6 * 0.8  # the outage's frames went to disk...
    assert "failed" not in outcomes and outcomes["stored"] + outcomes["spooled"] == report.frames_sent
    assert summary["spool"] == {"drained": outcomes["spooled"], "left": 0}  # ...and came back
    assert len(keys) == len(set(keys)) == report.frames_sent  # every frame, exactly once
    assert set(items) == set(keys)  # each indexed
    assert not list((tmp_path / "spool").iterdir())
    assert receiver.logs("frame spooled") and receiver.logs("spool drained")
    assert not receiver.logs("frame not stored")


def send_frames(port: int, recording: str, count: int, start: float = 0.0, then=None,
                hold: float = 1.0) -> int | None:
    """One connection (the handshake reads the token from Secrets Manager); ``then()`` runs once
    it is open (the outage starts), then ``count`` frames 0.5 s apart in stream time; then it
    waits up to ``hold`` s for the server to close it. Returns the server's close code, if any."""
    from websockets.asyncio.client import connect

    png = make_png(64, 48, seed=3, detailed=False)

    async def go():
        async with connect(f"ws://127.0.0.1:{port}/?token={TOKEN}", compression=None) as ws:
            if then is not None:
                then()
            for n in range(count):
                await ws.send(frame_message(png, recording_id=recording, participant_id=1, relative=start + n / 2))
            try:
                await asyncio.wait_for(ws.wait_closed(), hold)
            except TimeoutError:
                return None
            return ws.close_code

    return asyncio.run(go())


def test_the_spool_survives_a_restart_and_a_sigterm_reports_what_it_kept(moto, tmp_path):
    """Frames spooled while the store is down stay on disk across a SIGTERM (reported in the
    summary and a log line, never silently dropped) and a SIGKILL, and the next receiver
    started on the same disk with the store back stores them."""
    spool_dir = tmp_path / "spool"
    proxy = OutageProxy(moto.endpoint_url)
    recording = f"restart-{uuid.uuid4().hex[:8]}"
    first = start_receiver(moto, proxy, spool_dir, "--shutdown-grace", "3")
    try:
        send_frames(first.port, recording, 6, then=proxy.down)
        summary = stop(first)
    finally:
        first.close()
    assert summary["outcomes"] == {"spooled": 6} and summary["spool"]["left"] == 6
    assert first.logs("frames left in the spool at exit")[0]["frames"] == 6
    assert len(list(spool_dir.glob("*.frame"))) == 6

    second = start_receiver(moto, proxy, spool_dir)  # still down: its drain keeps failing
    try:
        time.sleep(2.0)
        second.proc.send_signal(signal.SIGKILL)
        second.proc.wait(GUARD)
    finally:
        second.close()
    assert second.logs("spool holds frames from an earlier run")[0]["frames"] == 6
    assert len(list(spool_dir.glob("*.frame"))) == 6  # a crash loses no spooled frame
    assert moto.keys(f"recordings/{recording}/") == []

    proxy.up()
    third = start_receiver(moto, proxy, spool_dir)
    try:
        wait_for(moto, recording, 6)
        summary = stop(third)
    finally:
        third.close()
        proxy.stop()
    keys, items = stored(moto, recording)
    assert len(keys) == 6 and set(items) == set(keys)
    assert summary["spool"] == {"drained": 6, "left": 0}


def test_a_full_spool_closes_connections_with_1013_and_refuses_handshakes_until_it_has_room(moto, tmp_path):
    """Past the spool's size the frame is lost: counted (spool_full), every connection closed
    with 1013 so the outage shows as reconnects, handshakes refused (503) until it drains."""
    from framesink_core.access.probe import handshake

    proxy = OutageProxy(moto.endpoint_url)
    recording = f"full-{uuid.uuid4().hex[:8]}"
    # Each small spooled frame is ~1 KB: room for a few.
    receiver = start_receiver(moto, proxy, tmp_path / "spool", "--spool-max-bytes", "4000")
    url = f"ws://127.0.0.1:{receiver.port}/"
    try:
        # The first frame's retries run out, the rest join the spool until it is full.
        closed_with = send_frames(receiver.port, recording, 12, then=proxy.down, hold=GUARD)
        refused = handshake(url, TOKEN).status
        proxy.up()
        wait_for(moto, recording, 1)
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline and handshake(url, TOKEN).status != 101:
            time.sleep(0.2)
        accepted = handshake(url, TOKEN).status
        summary = stop(receiver)
    finally:
        receiver.close()
        proxy.stop()
    outcomes = summary["outcomes"]
    assert closed_with == 1013 and refused == 503 and accepted == 101
    assert outcomes.get("failed", 0) >= 1 and outcomes["spooled"] >= 1
    assert summary["closes"].get("1013") == 1
    assert summary["spool"] == {"drained": outcomes["spooled"], "left": 0}
    keys, _ = stored(moto, recording)
    # In-flight frames whose retries outlasted the outage are stored directly.
    assert len(keys) == outcomes["spooled"] + outcomes.get("stored", 0) == 12 - outcomes["failed"]
    lost = [line for line in receiver.logs("frame not stored") if line["reason"] == "spool_full"]
    assert len(lost) == outcomes["failed"]
    assert receiver.logs("spool full: closing connections until the store answers")


def test_sigterm_during_a_flood_keeps_every_frame_it_read(moto, tmp_path):
    """The issue: SIGTERM during a flood of tiny frames left 47,659 read and unfinished at the
    exit. With a 3 s grace, what the store has not taken by the end goes to the spool (the
    summary's ``spool.left``), and the next receiver on that disk stores it: every frame the
    receiver read is stored exactly once."""
    spool_dir = tmp_path / "spool"
    proxy = OutageProxy(moto.endpoint_url)
    recording = f"flood-{uuid.uuid4().hex[:8]}"
    first = start_receiver(moto, proxy, spool_dir, "--shutdown-grace", "3")
    png = make_png(16, 16, seed=4, detailed=False)

    async def flood():
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        sent = 0
        try:
            async with connect(f"ws://127.0.0.1:{first.port}/?token={TOKEN}", compression=None) as ws:
                while sent < 3000:  # enough to outlast the grace on this box, few enough to drain soon
                    await ws.send(frame_message(png, recording_id=recording, participant_id=1, relative=sent / 1000))
                    sent += 1
                    if sent == 1000:
                        first.proc.send_signal(signal.SIGTERM)
                await ws.wait_closed()
        except ConnectionClosed:
            pass
        return sent

    try:
        sent = asyncio.run(asyncio.wait_for(flood(), GUARD))
        assert first.proc.wait(GUARD) == 0
        time.sleep(0.2)
        summary = first.summary()
    finally:
        first.close()
    outcomes = summary["outcomes"]
    print("sigterm flood:", json.dumps({"sent": sent, "received": summary["received"], "outcomes": outcomes,
                                        "unfinished": summary["unfinished"], "spool": summary["spool"]}))
    assert summary["unfinished"] == 0 and "failed" not in outcomes
    assert outcomes.get("stored", 0) + outcomes.get("spooled", 0) == summary["received"]
    left = summary["spool"]["left"]
    assert len(list(spool_dir.glob("*.frame"))) == left

    second = start_receiver(moto, proxy, spool_dir)
    try:
        wait_for(moto, recording, summary["received"], GUARD * 3)
        stop(second)
    finally:
        second.close()
        proxy.stop()
    keys, items = stored(moto, recording)
    assert len(keys) == len(set(keys)) == summary["received"] and set(items) == set(keys)
