"""The Recall bot simulator against real websocket servers on 127.0.0.1 (no AWS)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.asyncio.server import serve

from framesink.cli import main
from framesink.simulator import SimConfig, build_streams, simulate
from framesink.synthetic import make_png
from framesink_core.ingest.events import Frame, parse_message
from framesink_core.ingest.png import inspect_png

GUARD = 30  # seconds: a hang guard only


class Receiver:
    """A plain websockets server that keeps every message; optionally refuses or drops."""

    def __init__(self, *, max_size=None, refuse: int | None = None, drop_after: int | None = None):
        self.messages: list[str] = []
        self.max_size = max_size
        self.refuse = refuse
        self.drop_after = drop_after
        self.handshakes = 0

    async def __aenter__(self):
        async def handler(ws):
            async for message in ws:
                self.messages.append(message)
                if self.drop_after and len(self.messages) % self.drop_after == 0:
                    await ws.close(1011, "dropped by the test")

        def process_request(conn, request):
            self.handshakes += 1
            return conn.respond(self.refuse, "refused\n") if self.refuse else None

        self.server = await serve(handler, "127.0.0.1", 0, max_size=self.max_size, compression=None,
                                  process_request=process_request)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/live?token=t"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD))


def test_payloads_parse_as_recall_frames_and_fragments_respect_the_frame_limit():
    async def go():
        # max_size=(message, frame): a frame over 4 KB would close the connection with 1009.
        async with Receiver(max_size=(None, 4096)) as rx:
            report = await simulate(SimConfig(url=rx.url, participants=2, seconds=1.0, fps=4, screenshare=True,
                                              small=True, max_frame_bytes=4096, recording_id="rec-sim",
                                              reconnect_delay=0.05))
        return rx, report

    rx, report = run(go())
    assert report.closes == {"1000": 1} and report.frames_lost == 0
    assert len(rx.messages) == report.frames_sent == report.frames_generated == 3 * 4
    frames = [parse_message(m, 10**7) for m in rx.messages]
    assert all(isinstance(f, Frame) for f in frames)
    assert {(f.participant_id, f.frame_type, f.width, f.height) for f in frames} == {
        ("100", "webcam", 480, 360), ("200", "webcam", 480, 360), ("100", "screenshare", 1280, 720)}
    assert {f.recording_id for f in frames} == {"rec-sim"} and len({f.bot_id for f in frames}) == 1
    for stream in ("100", "200"):
        times = [f.relative_ms for f in frames if f.participant_id == stream and f.frame_type == "webcam"]
        assert times == sorted(times) and len(set(times)) == len(times)
    assert max(len(m) for m in rx.messages) > 4096  # so fragmentation was really exercised


def test_reconnects_after_a_drop_and_loses_only_the_frames_of_the_gap():
    async def go():
        async with Receiver(drop_after=3) as rx:
            report = await simulate(SimConfig(url=rx.url, participants=1, seconds=2.0, fps=5, small=True,
                                              reconnect_delay=0.3))
        return rx, report

    rx, report = run(go())
    assert report.reconnects >= 1 and report.closes.get("1011", 0) >= 1
    assert report.frames_lost >= 1  # a 0.3 s gap at 5 fps misses at least one frame
    assert report.frames_sent + report.frames_lost == report.frames_generated == 10
    assert len(rx.messages) == report.frames_sent


@pytest.mark.parametrize("refuse", [401, 403])
def test_gives_up_after_max_retries_of_refused_handshakes(refuse):
    async def go():
        async with Receiver(refuse=refuse) as rx:
            report = await simulate(SimConfig(url=rx.url, participants=1, seconds=5, small=True, reconnect_delay=0.01,
                                              max_retries=4))
        return rx, report

    rx, report = run(go())
    assert report.gave_up and report.connections == 0
    assert rx.handshakes == report.failed_connects == 4
    assert report.refused == {str(refuse): 4}
    assert report.frames_sent == 0 and report.frames_lost == report.frames_generated


def test_gives_up_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    report = run(simulate(SimConfig(url=f"ws://127.0.0.1:{port}/live", participants=2, seconds=5, small=True,
                                    reconnect_delay=0.01, max_retries=3)))
    assert report.gave_up and report.failed_connects == 3 and report.frames_sent == 0


def test_detailed_frames_are_camera_sized_and_reproducible():
    sizes = [len(make_png(480, 360, seed=s)) for s in range(4)]
    assert all(100 * 1024 <= n <= 320 * 1024 for n in sizes), sizes
    assert make_png(480, 360, seed=3) == make_png(480, 360, seed=3)
    small = build_streams(SimConfig(url="ws://unused", participants=2, small=True, seed=1))
    assert all(inspect_png(p).width == 480 and len(p) < 8 * 1024 for s in small for p in s.pool)
    assert [s.pool for s in small] == [s.pool for s in build_streams(SimConfig(url="ws://unused", participants=2,
                                                                               small=True, seed=1))]


def test_simulate_command_prints_a_json_report(capsys):
    async def serve_while(fn):
        async with Receiver() as rx:
            code = await asyncio.to_thread(fn, rx.url)
        return rx, code

    rx, code = run(serve_while(lambda url: main(["simulate", "--url", url, "--participants", "1", "--seconds",
                                                  "1", "--small", "--json", "--recording-id", "rec-cli"])))
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["recording_id"] == "rec-cli" and report["frames_sent"] == len(rx.messages) == 2
    assert "token" not in report["url"]


def test_a_run_that_cannot_connect_says_why_and_what_to_do(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    code = main(["simulate", "--url", f"ws://127.0.0.1:{port}/?token=x", "--seconds", "0.5"])
    out = capsys.readouterr().out
    assert code == 1
    assert "could not connect to ws://127.0.0.1" in out and "is `framesink local` running?" in out
    assert "Connection refused" in out or "ConnectionRefused" in out


@pytest.mark.slow
def test_the_local_defaults_store_every_frame_and_api_gateway_says_1009_with_what_to_do(tmp_path):
    """The issue: with the old defaults (`framesink local` emulating API Gateway, `simulate`
    sending real-size frames) 4 of 24 frames were stored and nothing said why. `framesink
    local` now runs the container receiver, as a deploy does: simulate's defaults store all;
    against --ingress apigw the report says what 1009 means and what to do."""
    import subprocess
    import sys
    import time

    def local(state: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "framesink", "local", "--port", "0", "--state-file", state,
                                 *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(GUARD * 10):
            if (tmp_path / state).exists():
                return proc
            time.sleep(0.1)
        raise AssertionError("framesink local did not start")

    def simulate(state: str) -> tuple[int, str, dict]:
        result = subprocess.run([sys.executable, "-m", "framesink", "simulate", "--state-file", state,
                                 "--participants", "2", "--seconds", "2"], capture_output=True, text=True,
                                timeout=GUARD * 2, cwd=tmp_path)
        return result.returncode, result.stdout, json.loads((tmp_path / state).read_text())

    default = local(str(tmp_path / "default.json"))
    try:
        code, out, state = simulate(str(tmp_path / "default.json"))
        for _ in range(50):  # the receiver writes the totals as the bot's connection closes
            recordings = subprocess.run([sys.executable, "-m", "framesink", "participants", "--local", "--state-file",
                                         str(tmp_path / "default.json"), "--recording",
                                         out.split()[1]], capture_output=True, text=True, timeout=GUARD)
            if recordings.stdout.count(" 4 ") >= 2:
                break
            time.sleep(0.1)
    finally:
        default.terminate()
        default.wait(GUARD)
    assert code == 0 and "8 sent, 0 lost of 8" in out and "note" not in out, out
    assert "/live" not in state["ws_url"]  # the receiver's URL, not API Gateway's stage
    assert recordings.returncode == 0 and recordings.stdout.count(" 4 ") >= 2, recordings.stdout

    apigw = local(str(tmp_path / "apigw.json"), "--ingress", "apigw")
    try:
        code, out, _ = simulate(str(tmp_path / "apigw.json"))
    finally:
        apigw.terminate()
        apigw.wait(GUARD)
    assert "closed with 1009 (message too big)" in out and "--small" in out, out
