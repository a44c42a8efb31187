"""The live feed over the local stack: the receiver's frame events -> EventBridge -> SQS in
moto, as in AWS.

One event per stored frame and none for a rejected, duplicate or conflicting one; `framesink
watch` (a real process) sees every frame of a stream, in order, each within 2 s, from the
queue and from the index; --exec runs per frame with the record on stdin; the analyzer the
local stack runs finds a deck's slides, listed by `framesink slides` and written by
`framesink export --slides`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hostile import png_bytes
from websockets.asyncio.client import connect

from framesink.local import LocalConfig, background_stack
from framesink.synthetic import frame_message, make_png, make_slide
from framesink_core.read.feed import FrameRef

pytestmark = pytest.mark.slow

GUARD = 120
FRAMESINK = [sys.executable, "-m", "framesink"]


@pytest.fixture
def local(tmp_path):
    config = LocalConfig.isolated("feed", ingress="direct", state_file=tmp_path / "local.json", frame_queue=True)
    with background_stack(config, timeout=GUARD) as stack:
        yield stack


def send(local, messages: list[str]) -> None:
    async def go():
        async with connect(local.state["ws_url"], max_size=None, compression=None) as ws:
            for message in messages:
                await ws.send(message)
    local.run(go(), GUARD)
    local.run(local.wait_idle(), GUARD)


def drain(local, queue_url: str) -> list[FrameRef]:
    sqs, refs = local.client("sqs"), []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return refs
        for m in messages:
            refs.append(FrameRef.from_event(json.loads(m["Body"])))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_one_event_per_stored_frame_and_none_for_the_rest(local):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    first, other = png_bytes(color=(1, 2, 3)), png_bytes(color=(1, 2, 4))
    good = [frame_message(make_png(24, 16, seed=k, detailed=False), recording_id=rec, participant_id=7, relative=k)
            for k in range(3)]
    send(local, [
        *good,
        good[1],  # a redelivery: S3 refuses it (412), nothing created
        frame_message(first, recording_id=rec, participant_id=8, relative=1.0),
        frame_message(other, recording_id=rec, participant_id=8, relative=1.0),  # a conflict: refused too
        frame_message(b"not a png", recording_id=rec, participant_id=9, relative=1.0),  # rejected: never reaches S3
        "not json",
    ])
    refs = drain(local, local.state["frame_queue_url"])
    assert sorted((r.participant_id, r.relative_ms) for r in refs if r.recording_id == rec) == [
        ("7", 0), ("7", 1000), ("7", 2000), ("8", 1000)]
    outcomes = local.receiver.stats.outcomes
    assert (outcomes["stored"], outcomes["duplicate"], outcomes["rejected"]) == (4, 1, 3)


def watch(local, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*FRAMESINK, "watch", "--local", "--state-file", str(local.config.state_file), "--json",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("source", ["queue", "index"])
def test_watch_sees_every_frame_of_a_stream_in_order_within_two_seconds(local, source):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    n = 8
    proc = watch(local, "--recording", rec, "--participant", "5", "--source", source, "--max-frames", str(n),
                 "--idle-exit", "30")
    time.sleep(1.5)  # watch is up (it needs no frame to exist first)

    async def stream():  # a participant at 2 fps, plus another participant watch must not show
        async with connect(local.state["ws_url"], compression=None) as ws:
            for k in range(n):
                await ws.send(frame_message(make_png(32, 24, seed=k, detailed=False), recording_id=rec,
                                            participant_id=5, relative=k / 2))
                await ws.send(frame_message(make_png(32, 24, seed=k, detailed=False), recording_id=rec,
                                            participant_id=6, relative=k / 2))
                await asyncio.sleep(0.5)

    local.run(stream(), GUARD)
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["relative_ms"] for r in records] == [k * 500 for k in range(n)]  # every frame, in order
    assert {r["participant_id"] for r in records} == {"5"} and all(r["recording_id"] == rec for r in records)
    assert all(0 <= r["lag_ms"] < 2000 for r in records), [r["lag_ms"] for r in records]
    assert f"{n} frames seen" in err


def test_watch_skips_frames_deleted_before_it_read_them_and_goes_on(local, tmp_path):
    """Queued events of frames deleted before watch read them (framesink delete, expiry): one
    line each, and the frames stored after them are shown (they made every run exit 1). The
    event carries the frame's record, so a watch that reads the bytes (--out, --exec) is the
    one that finds a frame gone."""
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    early = [frame_message(make_png(32, 24, seed=k, detailed=False), recording_id=rec, participant_id=3, relative=k)
             for k in range(3)]
    send(local, early)
    s3 = local.client("s3")
    for k in range(3):
        s3.delete_object(Bucket=local.state["bucket"], Key=f"recordings/{rec}/participants/3/webcam/{k * 1000:010d}.png")
    late = [frame_message(make_png(32, 24, seed=k, detailed=False), recording_id=rec, participant_id=3, relative=k)
            for k in range(10, 12)]
    send(local, late)
    # Every event is already queued: watch reads them all, then stops after 3 s without a new one.
    proc = watch(local, "--recording", rec, "--source", "queue", "--idle-exit", "3", "--out", str(tmp_path))
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    # (a standard queue keeps no order: the two were stored together)
    assert sorted(json.loads(line)["relative_ms"] for line in out.splitlines()) == [10_000, 11_000]
    assert err.count("no longer exists (deleted after it was stored)") == 3
    assert "2 frames seen, 3 skipped (deleted)" in err


def test_watch_exec_runs_per_frame_with_the_record_on_stdin(local, tmp_path):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    out_dir = tmp_path / "frames"
    proc = watch(local, "--recording", rec, "--max-frames", "3", "--idle-exit", "30", "--out", str(out_dir),
                 "--exec", "sh -c 'cat > \"$1.json\"' sh")
    time.sleep(1.5)
    pngs = [make_png(32, 24, seed=k, detailed=False) for k in range(3)]
    send(local, [frame_message(p, recording_id=rec, participant_id=4, relative=k) for k, p in enumerate(pngs)])
    _, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    for k, png in enumerate(pngs):
        path = out_dir / "4" / "webcam" / f"{k * 1000:010d}.png"
        assert path.read_bytes() == png
        record = json.loads(Path(f"{path}.json").read_text())
        assert record["s3_key"].endswith(f"/4/webcam/{k * 1000:010d}.png") and record["path"] == str(path)


EXEC_SCRIPT = r"""
import json, os, sys, time
path = sys.argv[1]
record = json.load(sys.stdin)
log = os.environ["WATCH_LOG"]
with open(log, "a") as f:
    f.write(json.dumps({"key": record["s3_key"], "start": time.time()}) + "\n")
time.sleep(0.8)
marker = path + ".tried"
first = not os.path.exists(marker)
open(marker, "w").close()
with open(log, "a") as f:
    f.write(json.dumps({"key": record["s3_key"], "end": time.time(), "ok": not first}) + "\n")
sys.exit(1 if first else 0)  # fails the first time for each frame
"""


def test_watch_runs_commands_at_once_and_tries_a_failed_one_again(local, tmp_path, monkeypatch):
    """4 frames, a command that takes 0.8 s and fails once per frame: with --exec-workers 4
    the runs overlap, each failed frame's event stays on the queue and comes back, and every
    frame ends handled once successfully; nothing reaches the dead-letter queue."""
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    script, log = tmp_path / "model.py", tmp_path / "runs.jsonl"
    script.write_text(EXEC_SCRIPT)
    monkeypatch.setenv("WATCH_LOG", str(log))
    send(local, [frame_message(make_png(32, 24, seed=k, detailed=False), recording_id=rec, participant_id=5,
                               relative=k) for k in range(4)])
    proc = watch(local, "--recording", rec, "--source", "queue", "--idle-exit", "6", "--out", str(tmp_path / "out"),
                 "--exec", f"{sys.executable} {script}", "--exec-workers", "4", "--retry-seconds", "1")
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    starts = sorted(r["start"] for r in runs if "start" in r)
    ends = sorted(r["end"] for r in runs if "end" in r)
    assert len(starts) == 8  # every frame twice: failed, then tried again
    assert sum(1 for t in starts if t < ends[0]) >= 2  # a second run started before the first ended
    assert sorted(r["key"] for r in runs if r.get("ok")) == sorted(
        f"recordings/{rec}/participants/5/webcam/{k * 1000:010d}.png" for k in range(4))
    assert "4 frames seen" in err and "4 failed command runs (tried again)" in err
    dead = local.client("sqs").get_queue_url(QueueName=f"{local.config.bucket}-frames-dead-letters")["QueueUrl"]
    assert drain(local, dead) == []


def test_a_frame_whose_command_keeps_failing_ends_in_the_dead_letter_queue(local, tmp_path):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    send(local, [frame_message(make_png(32, 24, seed=1, detailed=False), recording_id=rec, participant_id=5,
                               relative=0)])
    proc = watch(local, "--recording", rec, "--source", "queue", "--idle-exit", "4", "--exec", "false",
                 "--retry-seconds", "0")
    _, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    assert "0 frames seen" in err and "5 failed command runs (tried again)" in err  # the queue's 5 receives
    dead = local.client("sqs").get_queue_url(QueueName=f"{local.config.bucket}-frames-dead-letters")["QueueUrl"]
    (parked,) = drain(local, dead)
    assert parked.recording_id == rec


def test_watch_all_follows_every_recording_with_one_record_shape(local, tmp_path):
    """--all takes every recording's frames from the queue; a queue record and an index record
    of the same frame carry the same fields (the event holds the index item)."""
    recs = [f"rec-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    send(local, [frame_message(make_png(32, 24, seed=k, detailed=False), recording_id=r, participant_id=6,
                               relative=k) for r in recs for k in range(2)])
    proc = watch(local, "--all", "--source", "queue", "--idle-exit", "3")
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    from_queue = [json.loads(line) for line in out.splitlines()]
    assert sorted((r["recording_id"], r["relative_ms"]) for r in from_queue) == sorted(
        (r, k * 1000) for r in recs for k in range(2))
    proc = watch(local, "--recording", recs[0], "--source", "index", "--idle-exit", "2")
    out, err = proc.communicate(timeout=GUARD)
    from_index = [json.loads(line) for line in out.splitlines()]
    by_key = {r["s3_key"]: r for r in from_queue}
    for record in from_index:
        twin = by_key[record["s3_key"]]
        assert set(record) == set(twin)
        # The queue's "Frame Stored" event left before the novelty function scored the frame
        # (its fields are null there); the index may have the score by the time it is read.
        ignored = ("seen_at", "lag_ms", "novel", "change_score")
        assert {k: v for k, v in record.items() if k not in ignored} == {
            k: v for k, v in twin.items() if k not in ignored}
        assert twin["novel"] is None


def test_the_local_analyzer_finds_the_slides_and_export_writes_the_distinct_ones(local, tmp_path):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    deck = {i: [make_slide(i, 480, 270, noise_seed=s) for s in range(2)] for i in range(3)}
    shown = [0, 0, 0, 1, 1, 0, 2, 2]
    send(local, [frame_message(deck[s][k % 2], recording_id=rec, participant_id=3, relative=k / 2,
                               frame_type="screenshare") for k, s in enumerate(shown)])
    local.run(local.wait_idle(analyzer=True), GUARD)
    state = ["--local", "--state-file", str(local.config.state_file)]
    listed = subprocess.run([*FRAMESINK, "slides", "--recording", rec, "--json", *state], capture_output=True,
                            text=True, timeout=GUARD)
    assert listed.returncode == 0, listed.stderr
    slides = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(s["relative_ms"], s["repeat_of_ms"]) for s in slides] == [(0, None), (1500, None), (2500, 0), (3000, None)]
    exported = subprocess.run([*FRAMESINK, "export", "--recording", rec, "--participant", "3", "--out",
                               str(tmp_path / "out"), "--slides", "--no-contact-sheet", *state],
                              capture_output=True, text=True, timeout=GUARD)
    assert exported.returncode == 0, exported.stderr
    written = sorted(p.name for p in (tmp_path / "out" / "3" / "slides").iterdir())
    assert written == ["0000000000.png", "0000001500.png", "0000003000.png"]  # 3 distinct: the repeat is not
    assert (tmp_path / "out" / "3" / "slides" / "0000001500.png").read_bytes() == deck[1][1]
