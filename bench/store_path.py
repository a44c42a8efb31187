"""The store path's thread hand-off (issue 25, item 2): is awaiting obstore's async put on the
event loop cheaper than the receiver's shape today, a blocking obstore put in a 32-thread pool
whose completion is handed back to the loop (``call_soon_threadsafe``)?

One process does the puts (176 KB bodies, the median camera-like 480x360 PNG, 32 at a time
as the receiver's ``max_in_flight``) and reads its own CPU time (getrusage) per put; moto
answers from this (orchestrating) process, so its CPU is not counted. Rounds alternate the two
shapes; the figure is the async shape's CPU per put against the threaded shape's, same round.

    python -m bench.store_path [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from . import ROOT, Row

WORKER = r'''
import asyncio, json, os, resource, sys, uuid
from concurrent.futures import ThreadPoolExecutor
import obstore
from obstore.store import S3Store

endpoint, bucket, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CONCURRENCY = 32
body = os.urandom(176_000)
attributes = {"Content-Type": "image/png", "recording-id": "bench", "participant-id": "100"}
store = S3Store(bucket, region="us-east-1", endpoint=endpoint, virtual_hosted_style_request=False,
                unsigned_payload=True, client_options={"allow_http": True},
                config={"aws_access_key_id": "testing", "aws_secret_access_key": "testing"})

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

async def threaded(tag):
    loop = asyncio.get_running_loop()
    slots, pending = asyncio.Semaphore(CONCURRENCY), set()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        def put(i, done):
            obstore.put(store, f"{tag}/{i}", body, mode="create", attributes=attributes, use_multipart=False)
            loop.call_soon_threadsafe(done.set_result, None)
        for i in range(n):
            await slots.acquire()
            done = loop.create_future()
            pending.add(done)
            done.add_done_callback(lambda f: (pending.discard(f), slots.release()))
            pool.submit(put, i, done)
        await asyncio.gather(*pending)

async def on_loop(tag):
    slots, pending = asyncio.Semaphore(CONCURRENCY), set()
    async def put(i):
        try:
            await obstore.put_async(store, f"{tag}/{i}", body, mode="create", attributes=attributes,
                                    use_multipart=False)
        finally:
            slots.release()
    for i in range(n):
        await slots.acquire()
        task = asyncio.create_task(put(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)

async def main():
    shapes = {"threaded": threaded, "async": on_loop}
    for name, shape in shapes.items():  # warm both: connections, the tokio runtime, the pool
        await shape(f"warm-{name}")
    out = {name: [] for name in shapes}
    for r in range(rounds):
        for name in (list(shapes) if r % 2 == 0 else list(shapes)[::-1]):
            before = cpu()
            await shapes[name](f"{name}-{r}-{uuid.uuid4().hex[:6]}")
            out[name].append((cpu() - before) * 1000 / n)
    print(json.dumps(out))

asyncio.run(main())
'''


def run(quick: bool = False) -> tuple[list[Row], dict]:
    import boto3
    from moto.server import ThreadedMotoServer

    n, rounds = (300, 2) if quick else (1000, 6)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="store-path")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])}
        out = subprocess.run([sys.executable, "-c", WORKER, endpoint, "store-path", str(n), str(rounds)],
                             capture_output=True, text=True, env=env, timeout=600, check=True)
        per_put = json.loads(out.stdout)
    finally:
        server.stop()
    paired = [a / b for a, b in zip(per_put["async"], per_put["threaded"])]
    details = {"puts_per_round": n, "rounds": rounds, "cpu_ms_per_put": per_put,
               "ratio_per_round": [round(x, 2) for x in paired]}
    rows = [Row("store_path", "CPU per 176 KB obstore put awaited on the event loop",
                statistics.median(per_put["async"]), "ms", baseline=statistics.median(per_put["threaded"]),
                baseline_name="blocking put in a 32-thread pool, handed back to the loop",
                paired_ratio=statistics.median(paired), note=f"rounds {min(paired):.2f}-{max(paired):.2f}x")]
    return rows, details


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(json.dumps(result, indent=2))
