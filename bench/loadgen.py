"""The load side of bench/e2e.py, run in its own process so it never competes with the system
under test for a GIL.

``bots``: simulated Recall bots over real websockets, each one connection carrying a meeting's
participants (Recall's topology). Paced at ``--fps`` per participant, or as fast as the
server takes them (``--fps 0``: websockets' send() waits when the server stops reading).
Prints JSON: every frame's S3 key and send time (epoch ms).

``ceiling``: the raw moto put rate with plain boto3 from threads, no ingress: S3 put_object +
DynamoDB put_item of the same frame and index item (``--calls 2``: the 2-call ceiling), or
the core's own FrameStore.put_frame (``--calls 3``, the name kept from when it made three
calls: now a conditional S3 put and the index put, participant totals accumulated).
bench/e2e.py runs ``put_loop`` inside the process that hosts moto, where the ingress's own
boto3 clients run too; this command runs it from outside, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

SIZES = {"small": (480, 360, False), "webcam": (480, 360, True), "hd": (1280, 720, True)}
POOL = 4


def pngs(size: str) -> list[bytes]:
    from framesink.synthetic import make_png

    width, height, detailed = SIZES[size]
    return [make_png(width, height, seed=300 + k, detailed=detailed, label=f"bench {k}") for k in range(POOL)]


async def _bot(url: str, recording_id: str, pids: list[int], ticks: int, fps: float, pool: list[bytes],
               start: float, sent: list, errors: list) -> None:
    from websockets.asyncio.client import connect

    from framesink.synthetic import frame_message
    from framesink_core.shared.schema import frame_key

    loop = asyncio.get_running_loop()
    try:
        async with connect(url, compression=None, max_size=None, open_timeout=30, close_timeout=30) as ws:
            for k in range(ticks):
                if fps:
                    delay = start + k / fps - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                for i, pid in enumerate(pids):
                    relative = round(k * 0.5 + i * 0.003, 3)  # one tick = 500 ms of meeting time
                    message = frame_message(pool[(k + i) % len(pool)], recording_id=recording_id,
                                            participant_id=pid, relative=relative, name=f"Participant {pid}")
                    sent_ms = time.time() * 1000
                    await ws.send(message)
                    sent.append((frame_key(recording_id, str(pid), "webcam", round(relative * 1000)), sent_ms))
    except Exception as exc:  # reported, and the bench counts the frames as lost
        errors.append(f"{recording_id}: {exc.__class__.__name__}: {exc}")


async def bots(args) -> dict:
    pool = pngs(args.size)
    loop = asyncio.get_running_loop()
    sent: list = []
    errors: list = []
    tasks = []
    start = loop.time() + 0.2
    bot_count = -(-args.participants // args.meeting_size)
    for b in range(bot_count):
        pids = [100 + j for j in range(b * args.meeting_size, min(args.participants, (b + 1) * args.meeting_size))]
        recording_id = f"{args.recording_prefix}-{b}"
        tasks.append(_bot(args.url, recording_id, pids, args.ticks, args.fps, pool, start, sent, errors))
    began = time.time()
    await asyncio.gather(*tasks)
    return {"sent": sent, "errors": errors, "seconds": time.time() - began, "connections": bot_count}


def put_loop(s3, ddb, bucket: str, table: str, *, size: str, frames: int, threads: int, calls: int) -> dict:
    """The ceiling: store ``frames`` frames from ``threads`` threads with plain boto3 calls."""
    from framesink.synthetic import frame_message
    from framesink_core.ingest.events import parse_message
    from framesink_core.ingest.storage import FrameStore
    from framesink_core.ingest.stored_frame import StoredFrame
    from framesink_core.shared.items import to_item

    store = FrameStore(bucket, table, s3, ddb)
    prefix = f"ceiling-{uuid.uuid4().hex[:8]}"
    pool = [parse_message(frame_message(png, recording_id=f"{prefix}-{k}", participant_id=100, relative=0.5), 1 << 30)
            for k, png in enumerate(pngs(size))]
    counter = iter(range(frames))
    lock = threading.Lock()

    def work(thread: int):
        done = 0
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return done
            # One stream per thread, in time order, as a participant's frames arrive.
            frame = dataclasses.replace(pool[n % len(pool)], recording_id=f"{prefix}-{thread}", relative_ms=n)
            if calls == 3:
                store.put_frame(frame)
            else:
                record = StoredFrame.from_frame(frame, bot_id=None, connection_id="ceiling",
                                                stored_at=int(time.time() * 1000))
                s3.put_object(Bucket=bucket, Key=record.key, Body=frame.png, ContentType="image/png",
                              Metadata=record.metadata())
                ddb.put_item(TableName=table, Item=to_item(record.index_item()))
            done += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as executor:
        done = sum(executor.map(work, range(threads)))
    seconds = time.perf_counter() - began
    return {"frames": done, "seconds": seconds, "fps": done / seconds, "threads": threads, "calls": calls}


def _clients(endpoint: str, region: str):
    import boto3

    from framesink_core.shared.items import BOTO_CONFIG

    client = {"endpoint_url": endpoint, "region_name": region, "config": BOTO_CONFIG,
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client("s3", **client), boto3.client("dynamodb", **client)


def put_loop_at(endpoint: str, region: str, bucket: str, table: str, **kwargs) -> dict:
    """``put_loop`` with fresh boto3 clients for the moto server at ``endpoint``."""
    return put_loop(*_clients(endpoint, region), bucket, table, **kwargs)


def call_times_at(endpoint: str, region: str, bucket: str, table: str, *, size: str, frames: int) -> dict:
    """Median ms of each AWS call, one at a time from one thread: the plain two-call store
    (what the ceiling does) and FrameStore.put_frame (three calls), to say where a frame's
    time goes in moto. Timed from botocore's before-call to after-call events."""
    import statistics

    s3, ddb = _clients(endpoint, region)
    times: dict[str, list[float]] = {}
    label = {"which": ""}

    def before(context, **_):
        context["bench_t0"] = time.perf_counter()

    def after(model, context, **_):
        times.setdefault(f"{label['which']} {model.name}", []).append((time.perf_counter() - context["bench_t0"]) * 1000)

    for client in (s3, ddb):
        client.meta.events.register("before-call.*.*", before)
        client.meta.events.register("after-call.*.*", after)
    for which, calls in (("plain", 2), ("put_frame", 3)):
        label["which"] = which
        put_loop(s3, ddb, bucket, table, size=size, frames=frames, threads=1, calls=calls)
    medians = {name: round(statistics.median(ms), 2) for name, ms in sorted(times.items())}
    for which in ("plain", "put_frame"):
        medians[f"{which} total"] = round(sum(v for k, v in medians.items() if k.startswith(f"{which} ")), 2)
    return medians


def ceiling(args) -> dict:
    return put_loop_at(args.endpoint, "us-east-1", args.bucket, args.table, size=args.size, frames=args.frames,
                       threads=args.threads, calls=args.calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    sub = parser.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("bots")
    b.add_argument("--url", required=True)
    b.add_argument("--participants", type=int, required=True)
    b.add_argument("--meeting-size", type=int, default=5)
    b.add_argument("--ticks", type=int, required=True, help="frames per participant")
    b.add_argument("--fps", type=float, default=2.0, help="per participant; 0 = as fast as accepted")
    b.add_argument("--size", choices=sorted(SIZES), default="small")
    b.add_argument("--recording-prefix", required=True)
    c = sub.add_parser("ceiling")
    c.add_argument("--endpoint", required=True)
    c.add_argument("--bucket", required=True)
    c.add_argument("--table", required=True)
    c.add_argument("--frames", type=int, required=True)
    c.add_argument("--threads", type=int, default=8)
    c.add_argument("--calls", type=int, choices=[2, 3], default=2)
    c.add_argument("--size", choices=sorted(SIZES), default="small")
    args = parser.parse_args(argv)
    result = asyncio.run(bots(args)) if args.mode == "bots" else ceiling(args)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
