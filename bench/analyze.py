"""The analyzer kit's latency, locally: stored -> your function called (`framesink analyze`, a
real process on its own subscription: the receiver's frame event -> EventBridge -> its SQS
queue in moto -> a worker), against `framesink watch` reading the frame queue on the same
frames (the same hops without the kit), in one run.

- 10 participants at 2 fps: p50 / p99 (goal p50 <= 100 ms, p99 <= 500 ms).
- 50 participants at 2 fps: no growing lag (p50 of the last third of the frames over the
  first third).
- A function 10x slower than the frames arrive (3 participants, one worker): --latest-only
  against the plain queue, lag over the last third of the run.

    python -m bench.analyze [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import ROOT, Row, percentile

HERE = Path(__file__).resolve().parent / "analyzers"


def _analyze(state_file: Path, recording: str, spec: str, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "framesink", "analyze", spec, "--name", name, "--local", "--state-file",
         str(state_file), "--recording", recording, "--json", "--idle-exit", "6", *extra],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "subscribed" in proc.stderr.readline()
    return proc


def _watch(state_file: Path, recording: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "framesink", "watch", "--local", "--state-file", str(state_file), "--recording",
         recording, "--source", "queue", "--json", "--idle-exit", "6"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _lags(proc: subprocess.Popen, key: str = "lag_ms") -> tuple[list[float], dict]:
    out, _ = proc.communicate(timeout=600)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    summary = next((r["summary"] for r in records if "summary" in r), {})
    frames = sorted((r for r in records if "summary" not in r and r.get(key) is not None),
                    key=lambda r: r.get("stored_at") or 0)
    return [r[key] for r in frames], summary


def _thirds(lags: list[float]) -> tuple[float | None, float | None]:
    third = max(1, len(lags) // 3)
    return percentile(sorted(lags[:third]), 50), percentile(sorted(lags[-third:]), 50)


def _meeting(stack, participants: int, seconds: float, recording: str):
    from framesink.simulator import SimConfig, simulate

    return stack.run(simulate(SimConfig(url=stack.state["ws_url"], participants=participants, seconds=seconds,
                                        small=True, recording_id=recording, seed=11)), 600)


def run(quick: bool = False) -> tuple[list[Row], dict]:
    from framesink.local import LocalConfig, background_stack

    seconds = 6.0 if quick else 20.0
    many = 20 if quick else 50
    details: dict = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="framesink-bench-analyze-") as tmp:
        config = LocalConfig(port=0, ingress="direct", state_file=Path(tmp) / "local.json", reset_on_stop=True,
                             handler_log_level="ERROR", frame_queue=True)
        with background_stack(config) as stack:
            # 10 participants: the kit against watch on the same frames
            rec = f"bench-an-{uuid.uuid4().hex[:6]}"
            kit = _analyze(config.state_file, rec, "probe:analyze", "probe")
            watch = _watch(config.state_file, rec)
            time.sleep(1.0)
            report = _meeting(stack, 10, seconds, rec)
            stack.run(stack.wait_idle())
            kit_lags, kit_summary = _lags(kit)
            watch_lags, _ = _lags(watch)
            details["10"] = {"sent": report.frames_sent, "analyzed": len(kit_lags), "summary": kit_summary,
                             "watch_seen": len(watch_lags)}
            ordered = sorted(kit_lags)
            rows += [
                Row("analyze", "stored -> function called, 10 participants, p50", percentile(ordered, 50), "ms",
                    percentile(sorted(watch_lags), 50), "watch via frame queue p50",
                    note=f"{len(kit_lags)}/{report.frames_sent} analyzed; goal <= 100 ms"),
                Row("analyze", "stored -> function called, 10 participants, p99", percentile(ordered, 99), "ms",
                    percentile(sorted(watch_lags), 99), "watch via frame queue p99", note="goal <= 500 ms"),
            ]
            # many participants: does the lag grow?
            rec = f"bench-an-{uuid.uuid4().hex[:6]}"
            kit = _analyze(config.state_file, rec, "probe:analyze", "probe", "--workers", "8")
            report = _meeting(stack, many, seconds, rec)
            stack.run(stack.wait_idle())
            lags, summary = _lags(kit)
            first, last = _thirds(lags)
            details[str(many)] = {"sent": report.frames_sent, "analyzed": len(lags), "summary": summary,
                                  "first_third_p50": first, "last_third_p50": last}
            rows.append(Row("analyze", f"lag p50, last third of the frames, {many} participants", last, "ms", first,
                            "first third", target=1.5,
                            note=f"{len(lags)}/{report.frames_sent} analyzed, p99 {percentile(sorted(lags), 99)} ms"))
            # a function 10x slower than the frames: --latest-only against the plain queue
            rec = f"bench-an-{uuid.uuid4().hex[:6]}"
            latest = _analyze(config.state_file, rec, "probe:slow", "slow-latest", "--workers", "1", "--latest-only")
            fifo = _analyze(config.state_file, rec, "probe:slow", "slow-fifo", "--workers", "1")
            report = _meeting(stack, 3, seconds, rec)
            stack.run(stack.wait_idle())
            latest_lags, latest_summary = _lags(latest)
            fifo.terminate()  # the plain queue would take ~10x the meeting to drain: its lag so far is the point
            fifo_lags, fifo_summary = _lags(fifo)
            details["slow"] = {"sent": report.frames_sent, "latest_only": latest_summary, "fifo": fifo_summary,
                               "latest_thirds": _thirds(latest_lags), "fifo_thirds": _thirds(fifo_lags)}
            rows.append(Row("analyze", "10x slow function, lag p50 of the last third, --latest-only",
                            _thirds(latest_lags)[1], "ms", _thirds(fifo_lags)[1], "plain queue", target=0.5,
                            note=f"{latest_summary.get('superseded', 0)} superseded of {report.frames_sent}"))
    return rows, details


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(json.dumps(result, indent=2))
