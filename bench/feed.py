"""The live feed's latency, locally: stored -> seen by a consumer, p50 and p99, through the
frame queue (the receiver's frame event -> EventBridge -> SQS, in moto) against polling the
index (one Query a second, `framesink watch --source index`), both measured on the same
frames in one run.

Two `framesink watch --json` processes (one per source) follow one recording while a
simulated bot streams it through the container receiver; each frame's lag is the watcher's
clock minus the ``stored-at`` the core wrote (the start of the S3 write), so it includes the
index write, the outlet's batching (<= 20 ms), PutEvents, the rule's delivery and the
receive. In AWS, EventBridge's own hop is documented only as "near real time"
(docs/live-feed.md has each hop).

    python -m bench.feed [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import Row, percentile


def _watch(state_file: Path, recording_id: str, source: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "framesink", "watch", "--local", "--state-file", str(state_file), "--recording",
         recording_id, "--source", source, "--json", "--idle-exit", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def run(quick: bool = False) -> tuple[list[Row], dict]:
    from framesink.local import LocalConfig, background_stack
    from framesink.simulator import SimConfig, simulate

    participants, seconds = (3, 6.0) if quick else (6, 20.0)
    recording_id = f"bench-feed-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="framesink-bench-feed-") as tmp:
        config = LocalConfig(port=0, ingress="direct", state_file=Path(tmp) / "local.json", reset_on_stop=True,
                             handler_log_level="ERROR", frame_queue=True)
        with background_stack(config) as stack:
            watchers = {source: _watch(config.state_file, recording_id, source) for source in ("queue", "index")}
            time.sleep(2.0)  # both are polling before the first frame is stored
            report = stack.run(simulate(SimConfig(url=stack.state["ws_url"], participants=participants,
                                                  seconds=seconds, small=True, recording_id=recording_id, seed=5)))
            stack.run(stack.wait_idle())
            lags: dict[str, list[int]] = {}
            for source, proc in watchers.items():
                out, _ = proc.communicate(timeout=120)
                lags[source] = sorted(json.loads(line)["lag_ms"] for line in out.splitlines()
                                      if line.startswith("{") and json.loads(line).get("lag_ms") is not None)
    sent = report.frames_sent
    queue, index = lags["queue"], lags["index"]
    details = {"frames_sent": sent, "participants": participants, "seconds": seconds,
               "queue": {"seen": len(queue), "p50_ms": percentile(queue, 50), "p99_ms": percentile(queue, 99),
                         "max_ms": queue[-1] if queue else None, "over_1s": sum(1 for x in queue if x > 1000),
                         "slowest": queue[-12:]},
               "index": {"seen": len(index), "p50_ms": percentile(index, 50), "p99_ms": percentile(index, 99),
                         "max_ms": index[-1] if index else None}}
    note = f"{len(queue)}/{sent} frames seen"
    rows = [
        Row("feed", "stored -> seen via the frame queue, p50", percentile(queue, 50), "ms",
            percentile(index, 50), "index poll p50", note=note),
        Row("feed", "stored -> seen via the frame queue, p99", percentile(queue, 99), "ms",
            percentile(index, 99), "index poll p99", note=f"{len(index)}/{sent} seen by the index poll"),
    ]
    return rows, details


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(json.dumps(result, indent=2))
