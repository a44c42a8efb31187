"""The analyzer kit over the local stack (moto's EventBridge routes the receiver's frame events to
the analyzer's own queue, as in AWS): `framesink analyze` as a real process with the reference
face-count analyzer, results read back with `framesink results`; the worker pool's retries and
dead-letter path, --latest-only under a slow model, --novel-only, replay, and what is skipped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from framesink import target
from framesink.subscription import Subscription
from framesink.local import LocalConfig, background_stack
from framesink.synthetic import frame_message, make_png, make_slide
from framesink_core.analyze.kit import Context, Runner
from framesink_core.analyze.worker import AnalyzerPool
from framesink_core.read.feed import frames_pattern

pytestmark = pytest.mark.slow

GUARD = 120
ROOT = Path(__file__).resolve().parents[2]
FRAMESINK = [sys.executable, "-m", "framesink"]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    state = tmp_path_factory.mktemp("kit") / "local.json"
    config = LocalConfig.isolated("kit", ingress="direct", state_file=state)
    with background_stack(config, timeout=GUARD) as stack:
        yield stack


def where(local) -> target.Target:
    s = local.state
    return target.Target(local=True, region=s["region"], endpoint_url=s["endpoint_url"], bucket=s["bucket"],
                         table=s["table"], state=s)


def send(local, messages: list[str], pause: float = 0.0) -> None:
    async def go():
        async with connect(local.state["ws_url"], max_size=None, compression=None) as ws:
            for message in messages:
                await ws.send(message)
                if pause:
                    await asyncio.sleep(pause)
    local.run(go(), GUARD)
    local.run(local.wait_idle(), GUARD)


def webcam(rec: str, pid: int, k: int, detailed: bool = False) -> str:
    return frame_message(make_png(160, 120, seed=pid * 1000 + k, detailed=detailed), recording_id=rec,
                         participant_id=pid, relative=k / 2)


def pool_on(local, name: str, fn, *, pattern: dict | None = None, tries: int = 5, **kwargs):
    w = where(local)
    sub = Subscription(w, local.state["event_bus"], name, [pattern or frames_pattern()], tries)
    ctx = Context(w.bucket, w.table, w.client("s3"), w.client("dynamodb"), 30)
    return sub, AnalyzerPool(Runner(name, fn, ctx), retry_seconds=0, **kwargs)


def run_in_background(pool, sub, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=pool.run_queue, args=(sub.sqs, sub.url), kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_framesink_analyze_runs_the_face_counter_live_and_results_reads_it_back(local):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])}
    proc = subprocess.Popen([*FRAMESINK, "analyze", "faces:analyze", "--local", "--state-file",
                             str(local.config.state_file), "--recording", rec, "--workers", "3", "--json",
                             "--idle-exit", "4"], cwd=ROOT / "analyzers" / "faces", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # subscribed: frames sent from now on reach it
        assert "subscribed" in line, line + proc.stderr.read()
        faces = [frame_message(make_png(480, 360, seed=pid * 7 + k, detailed=True, face=True), recording_id=rec,
                               participant_id=pid, relative=k / 2) for pid in (100, 200, 300) for k in range(4)]
        slides = [frame_message(make_slide(k, 640, 360), recording_id=rec, participant_id=100, relative=k / 2,
                                frame_type="screenshare") for k in range(2)]
        send(local, faces + slides)
        out, err = proc.communicate(timeout=GUARD)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    frames = [x for x in lines if "summary" not in x]
    summary = next(x["summary"] for x in lines if "summary" in x)
    # every frame reached the function once; screenshares got None (the analyzer counts webcams)
    assert sorted((f["participant_id"], f["type"], f["relative_ms"]) for f in frames) == sorted(
        [(str(p), "webcam", k * 500) for p in (100, 200, 300) for k in range(4)]
        + [("100", "screenshare", k * 500) for k in range(2)])
    assert summary["results"] == 12 and summary["nothing"] == 2 and summary["dead_letters"] == 0
    assert all(f["lag_ms"] is not None and f["lag_ms"] >= 0 for f in frames)
    results = subprocess.run([*FRAMESINK, "results", "--recording", rec, "--analyzer", "faces", "--json", "--local",
                              "--state-file", str(local.config.state_file)], capture_output=True, text=True,
                             env=env, timeout=GUARD)
    assert results.returncode == 0, results.stderr
    stored = [json.loads(x) for x in results.stdout.splitlines()]
    assert len(stored) == 12 and {r["analyzer"] for r in stored} == {"faces"}
    # the drawn faces are found (one each: analyzers/faces and framesink.synthetic.draw_face)
    assert sum(r["result"]["faces"] == 1 for r in stored) >= 11  # 195 of 200 generated frames give one
    # the frame's own item got its expiry: results go with their frames
    item = local.client("dynamodb").get_item(TableName=local.state["table"], Key={
        "pk": {"S": f"REC#{rec}"}, "sk": {"S": f"RESULT#faces#{0:010d}#100#webcam"}})["Item"]
    assert int(item["expires_at"]["N"]) > time.time() + 29 * 86400
    # the subscription went with the process
    rules = local.client("events").list_rules(EventBusName=local.state["event_bus"])["Rules"]
    assert not [r for r in rules if "analyze-faces" in r["Name"]]


def test_a_failing_function_is_retried_then_dead_lettered_and_the_others_go_on(local):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    calls: dict[str, int] = {}

    def flaky(frame):
        calls[frame.key] = calls.get(frame.key, 0) + 1
        if frame.participant_id == "13":
            raise RuntimeError("model crashed")
        if frame.participant_id == "14" and calls[frame.key] == 1:
            raise TimeoutError("once")
        return {"ok": True}

    sub, pool = pool_on(local, "flaky", flaky, pattern=frames_pattern(recording_id=rec), tries=3, workers=2)
    try:
        thread = run_in_background(pool, sub, idle_exit=6)
        send(local, [webcam(rec, pid, k) for pid in (12, 13, 14) for k in range(2)])
        thread.join(GUARD)
        dead = sub.dead_letters()
    finally:
        sub.remove()
    assert pool.stats.results == 4  # 12's two, and 14's two on their second try
    assert dead == 2  # 13's two frames, after 3 receives each
    assert all(n == 3 for key, n in calls.items() if "/13/" in key)
    assert pool.stats.failed == 2 * 3 + 2


def test_latest_only_keeps_up_with_a_model_slower_than_the_frames(local):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[str, int]] = []

    def slow(frame):
        time.sleep(0.5)  # 10x slower than one participant's frames arrive here (20 a second)
        seen.append((frame.participant_id, frame.relative_ms))
        return None

    sub, pool = pool_on(local, "slow", slow, pattern=frames_pattern(recording_id=rec), workers=1, latest_only=True)
    try:
        thread = run_in_background(pool, sub, idle_exit=3)
        send(local, [webcam(rec, pid, k) for k in range(30) for pid in (21, 22)], pause=0.025)
        thread.join(GUARD)
    finally:
        sub.remove()
    # each stream's newest frame is analyzed, most older ones are dropped, never analyzed out of order
    for pid in ("21", "22"):
        mine = [ms for p, ms in seen if p == pid]
        assert mine[-1] == 29 * 500 and mine == sorted(mine)
    assert pool.stats.superseded >= 40 and pool.stats.nothing + pool.stats.superseded == 60


def test_novel_only_replay_and_skips(local):
    rec = f"rec-{uuid.uuid4().hex[:8]}"
    deck = [frame_message(make_slide(k // 3, 640, 360, noise_seed=k), recording_id=rec, participant_id=31,
                          relative=k / 2, frame_type="screenshare") for k in range(9)]
    seen = []
    sub, pool = pool_on(local, "novel", lambda f: seen.append(f.relative_ms) or {"n": f.novel},
                        pattern=frames_pattern(recording_id=rec, novel_only=True), workers=2)
    try:
        thread = run_in_background(pool, sub, idle_exit=8)
        send(local, deck, pause=0.5)  # as a screenshare arrives: 2 fps (a burst may be scored out of order)
        local.run(local.wait_idle(analyzer=True), GUARD)
        thread.join(GUARD)
    finally:
        sub.remove()
    # one novel frame per slide (its first, or a later one of it when the scorers saw them out of
    # order), and exactly the frames the index flags novel
    flagged = [f["relative_ms"] for f in where(local).index().iter_frames(rec, novel=True)]
    assert sorted(seen) == flagged and len(flagged) == 3
    assert sorted({ms // 1500 for ms in flagged}) == [0, 1, 2]

    # replay: every stored frame through a function, in the index's order; bad results skipped
    w = where(local)
    ctx = Context(w.bucket, w.table, w.client("s3"), w.client("dynamodb"), 30)

    def sizes(frame):
        if frame.relative_ms == 500:
            return {"too": "x" * 20_000}  # over 16 KB: skipped as result_invalid, not retried
        if frame.relative_ms == 1000:
            return {"nan": float("nan")}  # not JSON
        return {"w": frame.image().width, "name": frame.participant_name}

    pool = AnalyzerPool(Runner("sizes", sizes, ctx), workers=3)
    index = w.index()
    from framesink_core.read.feed import FrameRef

    refs = [FrameRef.from_key(w.bucket, f["s3_key"], None, None, f) for f in index.iter_frames(rec)]
    stats = pool.run_frames(refs)
    assert stats.results == 7 and stats.skipped == {"result_invalid": 2}
    results = index.results(rec, analyzer="sizes")
    assert [r["relative_ms"] for r in results] == [k * 500 for k in range(9) if k not in (1, 2)]
    assert all(r["result"]["w"] == 640 for r in results)

    # a frame deleted after its event, and an undecodable one: skipped with their reason
    s3 = w.client("s3")
    s3.delete_object(Bucket=w.bucket, Key=refs[3].key)
    s3.put_object(Bucket=w.bucket, Key=refs[4].key, Body=b"\x89PNG\r\n\x1a\n broken")
    pool = AnalyzerPool(Runner("gone", lambda f: {"w": f.image().width}, ctx), workers=1)
    stats = pool.run_frames(refs[3:5])
    assert stats.skipped == {"deleted": 1, "undecodable": 1} and stats.failed == 0
