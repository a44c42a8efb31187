"""`framesink receive` as a real process against a moto server that outlives it: SIGTERM in
the middle of three streams loses no frame the receiver read.

"Acknowledged" here means read from the socket: Recall gets no per-message reply, so the
guarantee is that every message the receiver took off a connection is in S3 (or counted
failed) before it exits, and each connection was closed with 1001 so Recall reconnects.
Messages still in flight on the network when the close frame went out were never read and
are not counted; Recall loses those in any reconnect, as it would with API Gateway.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from procs import FAKE_AWS, GUARD, TOKEN, VENV_BIN, Moto, ReceiverProcess, _json  # noqa: F401
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from framesink.synthetic import frame_message, make_png

@pytest.fixture(scope="module")
def moto():
    # Its own process: the saturated run's clients (here) answer pings without waiting for the
    # GIL behind moto storing their frames; a late pong from a starved client is a correct 1011.
    server = Moto(own_process=True)
    yield server
    server.stop()


def receiver_cli(moto: Moto) -> ReceiverProcess:
    return ReceiverProcess([str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", "0"],
                           moto.env({"POWERTOOLS_SERVICE_NAME": "framesink-receiver-test"}))


def test_sigterm_mid_stream_stores_every_frame_read_and_closes_with_1001(moto):
    rec = f"rec-{uuid.uuid4().hex[:10]}"
    pngs = [make_png(64, 48, seed=s, detailed=False) for s in range(4)]
    streams = 3
    receiver = receiver_cli(moto)
    try:
        port = receiver.wait_ready()
        sent = [0] * streams
        close_codes: list[int | None] = [None] * streams

        async def stream(pid: int):
            async with connect(f"ws://127.0.0.1:{port}/?token={TOKEN}", compression=None) as ws:
                try:
                    for i in range(100_000):  # until the receiver closes the connection
                        await ws.send(frame_message(pngs[i % 4], recording_id=rec, participant_id=pid,
                                                    relative=i * 0.5))
                        sent[pid] += 1
                        await asyncio.sleep(0.01)  # pacing, like a bot's 2 fps (faster)
                except ConnectionClosed as closed:
                    close_codes[pid] = closed.rcvd.code if closed.rcvd else None

        async def scenario():
            tasks = [asyncio.create_task(stream(pid)) for pid in range(streams)]
            for _ in range(GUARD * 20):  # mid-stream: once some frames of every stream are stored
                keys = await asyncio.to_thread(moto.keys, f"recordings/{rec}/")
                if all(sum(f"/participants/{pid}/" in k for k in keys) >= 3 for pid in range(streams)):
                    break
                await asyncio.sleep(0.05)
            receiver.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), GUARD)

        asyncio.run(scenario())
        assert receiver.proc.wait(GUARD) == 0
    finally:
        receiver.close()

    summary = receiver.summary()
    assert close_codes == [1001] * streams
    assert summary["outcomes"] == {"stored": summary["received"]}  # every message read was stored
    assert summary["closes"] == {"1001": streams}
    total = 0
    for pid in range(streams):
        keys = moto.keys(f"recordings/{rec}/participants/{pid}/")
        stored = sorted(int(Path(k).stem) for k in keys)
        # Read in order, all stored: exactly the first len(stored) frames, no gap.
        assert stored == [i * 500 for i in range(len(stored))]
        assert 3 <= len(stored) <= sent[pid]
        total += len(stored)
    assert total == summary["received"]
    assert receiver.logs("receiver stopped")  # the structured log line, besides the summary


@pytest.mark.slow
def test_sigterm_at_saturation_stores_every_frame_read_with_no_1011_and_exits_within_the_grace(moto):
    """16 connections of real-size frames sent as fast as the receiver reads them (it stores
    far fewer per second than they send), keepalive pings every second with a 2 s timeout,
    then SIGTERM. Before: pings timed out behind unread frames (1011), shutdown took up to
    120 s and frames read were lost. Now: every frame read is stored, only 1001 closes, and
    the process exits well inside the grace."""
    rec = f"sat-{uuid.uuid4().hex[:8]}"
    pngs = [make_png(480, 360, seed=s, detailed=True) for s in range(4)]  # ~200-300 KB each
    connections = 16
    grace = 60.0
    receiver = ReceiverProcess(
        [str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", "0", "--ping-interval", "1",
         "--ping-timeout", "2", "--shutdown-grace", str(grace)],
        moto.env({"POWERTOOLS_SERVICE_NAME": "framesink-saturation-test", "LOG_LEVEL": "WARNING"}))
    sent = [0] * connections
    codes: list[int | None] = [None] * connections
    try:
        port = receiver.wait_ready()

        async def stream(pid: int):
            # The client's own keepalive is off: this tests the server's. Recall's bot is not
            # known to ping; a client that does would need its own tolerance for a slow peer.
            async with connect(f"ws://127.0.0.1:{port}/?token={TOKEN}", compression=None,
                               ping_interval=None, max_size=None, close_timeout=GUARD) as ws:
                try:
                    for i in range(100_000):
                        await ws.send(frame_message(pngs[i % 4], recording_id=rec, participant_id=pid, relative=i * 0.5))
                        sent[pid] += 1
                except ConnectionClosed as closed:
                    codes[pid] = closed.rcvd.code if closed.rcvd else None

        async def scenario() -> float:
            tasks = [asyncio.create_task(stream(pid)) for pid in range(connections)]
            await asyncio.sleep(6)  # saturated: pings are due every second, pongs wait behind frames
            started = time.monotonic()
            receiver.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
            await asyncio.to_thread(receiver.proc.wait, GUARD)
            return time.monotonic() - started

        took = asyncio.run(scenario())
        assert receiver.proc.returncode == 0
    finally:
        receiver.close()
    summary = receiver.summary()
    outcomes = summary["outcomes"]
    print(f"\nsaturation: {sum(sent)} sent, {summary['received']} read, {outcomes} stored; exit {took:.1f} s "
          f"after SIGTERM; closes {summary['closes']}")
    assert summary["unfinished"] == 0 and outcomes == {"stored": summary["received"]}  # read => stored
    assert summary["closes"] == {"1001": connections} and codes == [1001] * connections  # no 1011
    assert took < grace
    assert len(moto.keys(f"recordings/{rec}/")) == summary["received"]
    assert summary["peak"]["in_flight"] > 1  # it was saturated: stores ran in parallel


def test_cli_health_check_and_refusal_in_a_process(moto):
    """`framesink receive` answers the ALB health check and refuses a wrong token with 403."""
    import http.client

    from websockets.exceptions import InvalidStatus

    receiver = receiver_cli(moto)
    try:
        port = receiver.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        health = conn.getresponse()
        assert (health.status, health.read()) == (200, b"ok\n")
        conn.close()

        async def refused() -> int:
            with pytest.raises(InvalidStatus) as exc:
                async with connect(f"ws://127.0.0.1:{port}/?token=wrong"):
                    pass
            return exc.value.response.status_code

        assert asyncio.run(refused()) == 403
        receiver.proc.send_signal(signal.SIGTERM)
        assert receiver.proc.wait(GUARD) == 0
    finally:
        receiver.close()
    assert receiver.summary()["connections"]["refused"] == {"403": 1}
    assert all(TOKEN not in line and "token=wrong" not in line for line in receiver.lines)


def test_missing_settings_is_a_clear_error():
    result = subprocess.run([str(VENV_BIN / "framesink"), "receive", "--port", "0"], capture_output=True, text=True,
                            env={"PATH": os.environ.get("PATH", ""), **FAKE_AWS}, timeout=GUARD)
    assert result.returncode == 2
    assert "FRAMESINK_BUCKET and FRAMESINK_TABLE must be set" in result.stderr

