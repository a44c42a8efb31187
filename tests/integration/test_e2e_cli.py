"""The `framesink local` and `framesink demo` commands as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from framesink.cli import main
from framesink.synthetic import frame_message, make_png

GUARD = 60  # seconds: hang guards only


def framesink(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AWS_ENDPOINT_URL", None)
    return subprocess.Popen([sys.executable, "-m", "framesink", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def wait_for_state(proc: subprocess.Popen, path: Path) -> dict:
    deadline = time.monotonic() + GUARD
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"framesink local exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("framesink local did not write its state file")
        time.sleep(0.05)
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("ingress", ["apigw", "direct"])
def test_sigterm_stops_local_cleanly_after_storing_every_frame_it_received(tmp_path, ingress):
    state_file = tmp_path / "state" / "local.json"
    proc = framesink("local", "--port", "0", "--state-file", str(state_file), "--token", "tok-e2e-cli",
                     "--ingress", ingress)
    try:
        state = wait_for_state(proc, state_file)
        assert set(state) == {"ws_url", "endpoint_url", "bucket", "table", "token", "region", "frame_queue_url",
                              "export_queue_url", "event_bus",
                              "webhook_url", "webhook_secret"}
        assert state["webhook_secret"].startswith("whsec_") and state["webhook_url"].endswith("/recall/events")
        assert state["token"] == "tok-e2e-cli" and state["ws_url"].endswith("?token=tok-e2e-cli")
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"
        sent = 8

        async def send_then_sigterm():
            async with connect(state["ws_url"], compression=None) as ws:
                for i in range(sent):
                    await ws.send(frame_message(make_png(32, 24, seed=i, detailed=False), recording_id="sigterm",
                                                participant_id=1, relative=i / 2))
                proc.send_signal(signal.SIGTERM)  # with frames possibly still in flight
                await ws.wait_closed()
                return ws.close_code

        close_code = asyncio.run(asyncio.wait_for(send_then_sigterm(), GUARD))
        out, err = proc.communicate(timeout=GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert close_code == 1001  # "going away", as API Gateway closes
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["framesink_local"] == "stopped"
    assert summary["received"] == sent
    assert summary["outcomes"] == {"stored": sent}
    assert summary["closes"] == {"1001": 1}


def test_local_refuses_a_busy_port_with_a_clear_error(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["local", "--port", str(busy.getsockname()[1]), "--state-file", "/nonexistent/never-written"])
    assert code == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_stores_every_frame_shows_the_limits_the_live_feed_and_the_meetings_end():
    proc = framesink("demo", "--seconds", "2", "--burst-seconds", "1.5", "--slides", "2")
    out, err = proc.communicate(timeout=GUARD * 2)
    assert proc.returncode == 0, out + err
    assert "every frame sent was stored exactly once" in out
    table = out.split("closed with 1009", 1)[1].splitlines()
    apigw = table[2].split("(emulated)")[1].split()
    due, sent, refused, lost, stored = map(int, apigw[:5])
    assert refused >= 1 and stored == 0 and sent + lost == due
    direct = table[3].split("receiver")[1].split()
    due, sent, refused, lost, stored = map(int, direct[:5])
    assert refused == lost == 0 and stored == sent == due
    # part 3: every frame of the shared deck reached `framesink watch`; both slides were found
    assert "slides shown: 2; slide changes the analyzer found: 2 at" in out
    watched = re.search(r"(\d+) frames sent \(.*\n.*`framesink watch` saw (\d+)", out)
    assert watched and watched[1] == watched[2]
    # part 4: the webhooks made the recording done and the export wrote one MP4 per participant
    assert "recording status: done; timeline: joining_call -> in_call_recording -> call_ended -> done" in out
    assert "forged signature is answered 401" in out
    mp4s = re.findall(r"exports/demo-[0-9a-f]+/(\d+)/webcam\.mp4\s+480x360\s+h264\s+(\d+)", out)
    assert len(mp4s) == 3 and all(int(frames) == 4 for _, frames in mp4s)  # 2 s at 2 fps each
    # part 5: the face counter ran through the kit on part 1's 12 webcam frames, results read back
    faces = re.search(r"framesink results: (\d+) results; exactly one face in (\d+) of them", out)
    assert faces and int(faces[1]) == 12 and int(faces[2]) >= 10
