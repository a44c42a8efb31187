"""A meeting's end over the local stack, as a user runs it: `framesink simulate --webhooks`
(a real process: a bot over a real websocket, then Recall's status webhooks signed with the
state file's secret over real HTTP), then `framesink recording --local` and `framesink
recordings --local` (real processes) show the status, the timeline and the exports written by
the export job, whose MP4s read back with PyAV; a forged delivery is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from framesink.local import LocalConfig, background_stack
from framesink_core.read.video import probe

pytestmark = pytest.mark.slow

GUARD = 120
FRAMESINK = [sys.executable, "-m", "framesink"]


@pytest.fixture
def local(tmp_path):
    config = LocalConfig.isolated("meet", state_file=tmp_path / "local.json", export_quiet_seconds=2)
    with background_stack(config, timeout=GUARD) as stack:
        yield stack


def cli(local, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*FRAMESINK, *args, "--state-file", str(local.config.state_file)], capture_output=True,
                          text=True, timeout=GUARD)


def test_simulated_webhooks_end_the_meeting_and_the_cli_shows_the_exports(local, tmp_path):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    sim = cli(local, "simulate", "--small", "--webhooks", "--participants", "2", "--seconds", "3",
              "--recording-id", rec, "--json")
    assert sim.returncode == 0, sim.stderr
    report = json.loads(sim.stdout)
    assert [e for e, _ in report["webhooks"]] == ["bot.joining_call", "bot.in_call_recording", "bot.call_ended",
                                                  "bot.done"]
    assert all(status == 200 for _, status in report["webhooks"])
    local.run(local.wait_idle(exports=True), GUARD)

    shown = cli(local, "recording", "--local", rec, "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["meta"]["status"] == "done" and found["meta"]["bot_id"] == report["bot_id"]
    assert [e["status"] for e in found["bot"]["timeline"]] == ["joining_call", "in_call_recording", "call_ended",
                                                               "done"]
    assert found["frames"] == report["frames_sent"] == 12
    assert sorted(e["participant_id"] for e in found["exports"]) == ["100", "200"]
    for export in found["exports"]:
        path = tmp_path / f"{export['participant_id']}.mp4"
        with urllib.request.urlopen(export["url"], timeout=30) as response:  # the presigned URL works
            path.write_bytes(response.read())
        info = probe(path)
        assert (info.frames, info.width, info.height, info.codec) == (6, 480, 360, "h264")

    listed = cli(local, "recordings", "--local", "--status", "done", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["recording_id"] for line in listed.stdout.splitlines()] == [rec]

    # a delivery signed with another secret changes nothing
    request = urllib.request.Request(local.state["webhook_url"], method="POST", data=b'{"event": "bot.fatal"}',
                                     headers={"webhook-id": "msg_x", "webhook-timestamp": "1",
                                              "webhook-signature": "v1,AAAA"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401


def test_export_job_starts_the_export_of_a_meeting_without_webhooks_and_reruns_only_when_asked(local):
    """No bot.done ever came (webhooks not configured): `framesink export-job` starts the
    stack's export job; a second call refuses a finished job unless --again."""
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    sim = cli(local, "simulate", "--small", "--participants", "2", "--seconds", "2", "--recording-id", rec)
    assert sim.returncode == 0, sim.stderr
    local.run(local.wait_idle(), GUARD)
    started = cli(local, "export-job", "--local", "--recording", rec)
    assert started.returncode == 0, started.stderr
    assert f"export job of {rec} queued" in started.stdout
    local.run(local.wait_idle(exports=True), GUARD)
    found = json.loads(cli(local, "recording", "--local", rec, "--json").stdout)
    assert sorted(e["participant_id"] for e in found["exports"]) == ["100", "200"]

    again = cli(local, "export-job", "--local", "--recording", rec)
    assert again.returncode == 1 and "is done: not restarted (add --again" in again.stderr
    rerun = cli(local, "export-job", "--local", "--recording", rec, "--again")
    assert rerun.returncode == 0, rerun.stderr
    local.run(local.wait_idle(exports=True), GUARD)
    # the job's files, downloaded in one command; the MP4s read back with PyAV
    out = local.config.state_file.parent / "job-out"
    fetched = cli(local, "export", "--local", "--recording", rec, "--all", "--from-job", "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    for pid in ("100", "200"):
        info = probe(out / pid / "webcam.mp4")
        assert (info.frames, info.codec) == (4, "h264")
        assert (out / pid / "webcam-contact-sheet.png").stat().st_size > 0
    unknown = cli(local, "export-job", "--local", "--recording", "rec-never-seen")
    assert unknown.returncode == 1 and "not in the index" in unknown.stderr
