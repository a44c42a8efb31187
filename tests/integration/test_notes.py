"""Slide notes for a simulated meeting (framesink_core/read/notes.py, `framesink notes`) over the
local stack: the bot shares a 3-slide deck (a slide every 2 s) while its participants speak in
2 s turns, so each slide has exactly one known utterance and speaker; the notes say so, the
slide PNGs are the stored frames, and meeting text cannot inject Markdown."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from framesink.local import LocalConfig, background_stack
from framesink.simulator import SENTENCES, SimConfig, simulate
from framesink_core.read.notes import _escape, build_notes

pytestmark = pytest.mark.slow

GUARD = 180


def test_notes_put_each_utterance_under_the_slide_it_was_said_over(tmp_path):
    config = LocalConfig.isolated("notes", ingress="direct", state_file=tmp_path / "local.json")
    with background_stack(config, timeout=GUARD) as stack:
        sim = SimConfig(url=stack.state["ws_url"], participants=3, seconds=6.0, small=True, slides=3, speech=True,
                        recording_id="notes-rec", seed=4)
        report = stack.run(simulate(sim), GUARD)
        stack.run(stack.wait_idle(analyzer=True), GUARD)
        assert [u[2] for u in report.utterances] == list(SENTENCES[:3])
        notes = build_notes(stack.index(), "notes-rec")
        out = tmp_path / "notes"
        cli = subprocess.run([sys.executable, "-m", "framesink", "notes", "--recording", "notes-rec", "--out",
                              str(out), "--local", "--state-file", str(config.state_file)],
                             capture_output=True, text=True, timeout=GUARD)
        s3_bytes = [stack.client("s3").get_object(Bucket=config.bucket, Key=n.s3_key)["Body"].read() for n in notes]
    assert cli.returncode == 0, cli.stderr
    assert [n.number for n in notes] == [1, 2, 3]
    assert [[s["text"] for s in n.said] for n in notes] == [[SENTENCES[0]], [SENTENCES[1]], [SENTENCES[2]]]
    # the speaker over each slide: the simulator's turns go 100, 200, 300
    assert [n.speakers[0]["participant_id"] for n in notes] == ["100", "200", "300"]
    assert all(1000 <= n.speakers[0]["ms"] <= 2000 for n in notes)
    text = (out / "notes.md").read_text()
    for n, sentence in enumerate(SENTENCES[:3], start=1):
        assert f"## Slide {n}:" in text and f"![Slide {n}](slide-{n:02d}.png)" in text and sentence in text
    assert [(out / f"slide-{n:02d}.png").read_bytes() for n in (1, 2, 3)] == s3_bytes
    assert [s["number"] for s in json.loads((out / "notes.json").read_text())["slides"]] == [1, 2, 3]


def test_meeting_text_cannot_inject_markdown_or_html():
    assert _escape("<script>alert(1)</script> [x](javascript:y) **b**\nnext") == (
        "\\<script\\>alert\\(1\\)\\</script\\> \\[x\\]\\(javascript:y\\) \\*\\*b\\*\\* next")


def audio_track(path) -> tuple[float, float, float]:
    """(audio seconds, video seconds, loudest audio sample) of an MP4, read back with PyAV."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        a, v = container.streams.audio[0], container.streams.video[0]
        seconds = float(a.duration * a.time_base), float(v.duration * v.time_base)
        loudest = max(float(np.abs(f.to_ndarray()).max()) for f in container.decode(a))
    return *seconds, loudest


def test_the_export_job_writes_the_notes_and_the_sound_beside_the_mp4s(tmp_path):
    """The simulated bot also sends each speaker's audio and the mix over the receiver: the
    export job's webcam MP4s carry their participant's voice and the screenshare MP4 the mix,
    each as long as its video (within one AAC frame)."""
    config = LocalConfig.isolated("notes-export", ingress="direct", state_file=tmp_path / "local.json",
                                  export_quiet_seconds=2)
    with background_stack(config, timeout=GUARD) as stack:
        sim = SimConfig(url=stack.state["ws_url"], participants=2, seconds=4.0, small=True, slides=2, speech=True,
                        audio=True, recording_id="notes-export", seed=5, webhook_url=stack.state["webhook_url"],
                        webhook_secret=stack.state["webhook_secret"])
        report = stack.run(simulate(sim), GUARD)
        stack.run(stack.wait_idle(analyzer=True, exports=True), GUARD)
        s3 = stack.client("s3")
        listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=config.bucket,
                                                             Prefix="exports/notes-export/").get("Contents", []))
        notes = s3.get_object(Bucket=config.bucket, Key="exports/notes-export/notes/notes.md")["Body"].read().decode()
        audio = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=config.bucket,
                                                            Prefix="recordings/notes-export/").get("Contents", [])
                       if o["Key"].endswith(".wav"))
        for key in listed:
            if key.endswith(".mp4"):
                s3.download_file(config.bucket, key, str(tmp_path / key.replace("/", "_")))
    assert "exports/notes-export/notes/slide-01.png" in listed and "exports/notes-export/notes/notes.json" in listed
    assert SENTENCES[0] in notes and SENTENCES[1] in notes and "## Slide 2" in notes
    assert report.audio_sent > 0 and report.audio_lost == 0
    # 4 s: each speaker's one turn and the mix, each shorter than an object: one object each
    assert [k.split("/", 2)[2] for k in audio] == ["mixed/audio/0000000000.wav",
                                                  "participants/100/audio/0000000200.wav",
                                                  "participants/200/audio/0000002200.wav"]
    mp4s = {p.name.split("_", 2)[2]: p for p in tmp_path.glob("exports_*.mp4")}
    assert sorted(mp4s) == ["100_screenshare.mp4", "100_webcam.mp4", "200_webcam.mp4"]
    for name, path in mp4s.items():
        audio_s, video_s, loudest = audio_track(path)
        assert abs(audio_s - video_s) <= 1024 / 16000, name
        assert loudest > 0.1, name  # a voice, not silence
