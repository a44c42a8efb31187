"""The receiver's CPU for publishing frame events (framesink_core/ingest/outlet.py): the
batching outlet (up to 10 events per PutEvents, <= 20 ms wait) against one PutEvents per
frame (the Lambda's DirectOutlet), the same events, interleaved rounds in one run. moto runs
as its own process, so only the publisher's CPU is counted (process time of this one).

    python -m bench.outlet [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from . import Row

PORT = 5998


def _record():
    from framesink_core.ingest.stored_frame import StoredFrame

    return StoredFrame(recording_id="r", participant_id="100", participant_name="Ada Lovelace", is_host=True,
                       platform="desktop", frame_type="webcam", relative_ms=12500,
                       absolute="2026-11-23T19:00:12.500Z", width=480, height=360, size=212345,
                       bot_id="6c4b0f2e-1d2a-4c8e-9a51-0c7f3f9e2b11", connection_id="c" * 32, stored_at=1)


def _cpu_per_event(outlet, detail: dict, n: int) -> float:
    start = time.process_time()
    for i in range(n):
        outlet.publish(detail)
        if i % 10 == 9:
            time.sleep(0.002)  # frames arrive in bunches, as a meeting's streams do
    outlet.close()
    return (time.process_time() - start) * 1000 / n


def run(quick: bool = False) -> tuple[list[Row], dict]:
    import boto3

    from framesink_core.ingest.outlet import BatchingOutlet, DirectOutlet, frame_event
    from framesink_core.shared.items import BOTO_CONFIG

    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-p", str(PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kw = dict(endpoint_url=f"http://127.0.0.1:{PORT}", region_name="us-east-1", aws_access_key_id="testing",
                  aws_secret_access_key="testing", config=BOTO_CONFIG)
        events = boto3.client("events", **kw)
        for _ in range(100):
            try:
                events.create_event_bus(Name="bench")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        detail = frame_event(_record(), "bucket")
        n, rounds = (200, 2) if quick else (1000, 3)
        batched, direct = [], []
        for _ in range(rounds):
            batched.append(_cpu_per_event(BatchingOutlet(events, "bench"), detail, n))
            direct.append(_cpu_per_event(DirectOutlet(events, "bench"), detail, n // 5))
    finally:
        server.terminate()
    value, baseline = min(batched), min(direct)
    rows = [Row("outlet", "publisher CPU per frame event, batched (10 per PutEvents)", round(value, 3), "ms",
                round(baseline, 3), "one PutEvents per frame", note=f"{rounds} rounds, best of each")]
    return rows, {"batched_ms": batched, "direct_ms": direct, "events_per_round": n}


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(result)
