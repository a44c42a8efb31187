"""Choosing an ingress: which frames each one accepts, what the receiver spends per frame,
and what each costs per participant-hour. ``python -m bench.ingress [--quick]``.

1. Fit: seeded camera-like frames from framesink.synthetic (the simulator's frames), 200 at
   480x360 and 50 at 1280x720 (plus flat ~2 KB frames), wrapped in the exact Recall message;
   counted against API Gateway's 32 KB frame and 128 KB message limits. Recall sends each
   message as one websocket frame, so 32 KB binds. The container's only limit is
   maxFrameBytes (4 MiB of PNG by default).
2. Receiver CPU: `python -m framesink.receiver` as a subprocess (what the image runs)
   storing the 480x360 frames in a moto server over 4 connections; its user+system CPU
   from /proc between "ready" and "all stored", divided by the frames.
3. Cost: list prices (bench/cost.py's PRICES, us-east-1, Nov 2026) times the units a participant
   generates in an hour at 2 fps (webcam only), using the measured sizes and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .cost import PRICES as COST_PRICES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "ingress.json"

APIGW_FRAME_LIMIT = 32 * 1024
APIGW_MESSAGE_LIMIT = 128 * 1024
APIGW_BILLING_UNIT = 32 * 1024
FPS = 2
FRAMES_PER_HOUR = FPS * 3600

# One price table for every benchmark: bench/cost.py's (us-east-1 list prices, Nov 2026).
PRICES = {
    "apigw_ws_per_million_messages": COST_PRICES["apigw_message_per_million"],  # per 32 KB unit
    "apigw_ws_per_million_connection_minutes": COST_PRICES["apigw_connection_minute_per_million"],
    "lambda_per_million_requests": COST_PRICES["lambda_request_per_million"],
    "lambda_arm_per_gb_second": COST_PRICES["lambda_gb_second_arm64"],
    "fargate_arm_per_vcpu_hour": COST_PRICES["fargate_vcpu_hour_arm64"],
    "fargate_arm_per_gb_hour": COST_PRICES["fargate_gb_hour_arm64"],
    "alb_per_hour": COST_PRICES["alb_hour"],
    "alb_per_lcu_hour": COST_PRICES["alb_lcu_hour"],  # 1 LCU = 1 GB/h processed for IP targets (binding here)
    "public_ipv4_per_hour": COST_PRICES["public_ipv4_hour"],
    "s3_put_per_thousand": COST_PRICES["s3_put_per_thousand"],
    "s3_storage_per_gb_month": COST_PRICES["s3_gb_month"],
    "dynamodb_on_demand_per_million_wru": COST_PRICES["dynamodb_wru_per_million"],
}
# Assumptions that are not measurable offline, stated in the README next to the results.
LAMBDA_MEMORY_GB = 0.5  # the ingest function's 512 MB
LAMBDA_BILLED_SECONDS = 0.05  # one S3 PUT + 2-3 DynamoDB writes in-region per small frame
WRU_PER_FRAME = 4  # frame item (1) + its 2 GSIs (ALL projection: 1 each) + participant update (1)
TASK_VCPU, TASK_GB = 0.5, 1.0  # infra/container_ingress.py TASK_CPU / TASK_MEMORY_MIB
CPU_TARGET = 0.60  # the autoscaling target
FIXED_PUBLIC_IPS = 3  # the ALB's two (one per AZ) and one task's


def _frame(args: tuple[int, int, int, bool]) -> tuple[int, int]:
    from framesink.synthetic import frame_message, make_png

    width, height, seed, detailed = args
    png = make_png(width, height, seed=seed, detailed=detailed)
    message = frame_message(png, recording_id=str(uuid.UUID(int=seed)), participant_id=100 + seed % 10,
                            relative=seed * 0.5, frame_type="screenshare" if width > 480 else "webcam")
    return len(png), len(message.encode())


def fit(n_webcam: int, n_screen: int) -> dict:
    jobs = {
        "480x360 camera-like": [(480, 360, s, True) for s in range(n_webcam)],
        "1280x720 screenshare": [(1280, 720, s, True) for s in range(n_screen)],
        "480x360 flat (camera off-like)": [(480, 360, s, False) for s in range(20)],
    }
    out = {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for name, args in jobs.items():
            sizes = list(pool.map(_frame, args, chunksize=4))
            messages = [m for _, m in sizes]
            out[name] = {
                "frames": len(sizes),
                "png_bytes_median": int(statistics.median(p for p, _ in sizes)),
                "png_bytes_range": [min(p for p, _ in sizes), max(p for p, _ in sizes)],
                "message_bytes_median": int(statistics.median(messages)),
                "message_bytes_range": [min(messages), max(messages)],
                "fit_32k_frame": sum(m <= APIGW_FRAME_LIMIT for m in messages),
                "fit_128k_message": sum(m <= APIGW_MESSAGE_LIMIT for m in messages),
            }
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def receiver_cpu(frames: int, connections: int = 4) -> dict:
    """CPU seconds the receiver process spends per stored 480x360 camera-like frame."""
    import boto3
    from moto.server import ThreadedMotoServer
    from websockets.asyncio.client import connect

    from framesink.local_aws import provision
    from framesink.synthetic import frame_message, make_png
    from framesink_core.settings import Settings

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}
    clients = {n: boto3.client(n, endpoint_url=endpoint, region_name="us-east-1", **creds)
               for n in ("s3", "dynamodb", "secretsmanager")}
    token = uuid.uuid4().hex
    env_secret = provision(**clients, bucket="bench-ingress", table="bench-ingress", token=token,
                           token_secret_name=f"bench/{token[:8]}")
    settings = Settings(bucket="bench-ingress", table="bench-ingress", token_secret_id=env_secret["FRAMESINK_TOKEN_SECRET_ID"])
    env = {"PATH": os.environ.get("PATH", ""), **settings.as_env(), "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "POWERTOOLS_METRICS_DISABLED": "true", "LOG_LEVEL": "WARNING",
           "PYTHONPATH": f"{ROOT}:{ROOT / 'lambdas'}", "FRAMESINK_RECEIVER_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "framesink.receiver"], env=env, stdout=subprocess.PIPE, text=True)
    ready = threading.Event()
    info: dict = {}

    def read():
        for line in proc.stdout:
            if line.startswith('{"framesink_receiver"'):
                doc = json.loads(line)
                info[doc["framesink_receiver"]] = doc
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    pool = [make_png(480, 360, seed=s, detailed=True) for s in range(8)]
    try:
        assert ready.wait(60), "receiver did not start"
        ws_port = info["ready"]["port"]
        messages = [[frame_message(pool[(c * 7 + i) % len(pool)], recording_id="bench-rec", participant_id=c,
                                   relative=i * 0.5) for i in range(frames // connections)]
                    for c in range(connections)]
        sent = sum(map(len, messages))
        time.sleep(0.5)  # let start-up finish before the CPU baseline is read
        cpu_before, wall_before = _cpu_seconds(proc.pid), time.perf_counter()

        async def stream(batch):
            async with connect(f"ws://127.0.0.1:{ws_port}/?token={token}", max_size=None, compression=None) as ws:
                for message in batch:
                    await ws.send(message)

        async def run():
            await asyncio.gather(*(stream(b) for b in messages))

        asyncio.run(run())
        s3 = clients["s3"]
        for _ in range(1200):  # until every frame is in S3
            listed = sum(p.get("KeyCount", 0) for p in s3.get_paginator("list_objects_v2").paginate(
                Bucket="bench-ingress", Prefix="recordings/bench-rec/"))
            if listed >= sent:
                break
            time.sleep(0.1)
        cpu_after, wall_after = _cpu_seconds(proc.pid), time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    stopped = info.get("stopped", {})
    stored = stopped.get("outcomes", {}).get("stored", 0)
    assert stored == sent, f"stored {stored} of {sent}"
    return {"frames": sent, "connections": connections, "cpu_seconds": cpu_after - cpu_before,
            "cpu_ms_per_frame": (cpu_after - cpu_before) / sent * 1000, "wall_seconds": wall_after - wall_before,
            "cpu": _cpu_model()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def costs(message_bytes_real: int, message_bytes_small: int, cpu_ms_per_frame: float) -> dict:
    p = PRICES
    per_frame_storage = p["s3_put_per_thousand"] / 1000 + WRU_PER_FRAME * p["dynamodb_on_demand_per_million_wru"] / 1e6
    storage = FRAMES_PER_HOUR * per_frame_storage
    # API Gateway + Lambda carries only frames that fit 32 KB: priced with the small frames.
    units = math.ceil(message_bytes_small / APIGW_BILLING_UNIT)
    apigw = FRAMES_PER_HOUR * (units * p["apigw_ws_per_million_messages"] / 1e6
                               + p["lambda_per_million_requests"] / 1e6
                               + LAMBDA_MEMORY_GB * LAMBDA_BILLED_SECONDS * p["lambda_arm_per_gb_second"])
    apigw += 60 * p["apigw_ws_per_million_connection_minutes"] / 1e6  # one connection-hour, worst case
    # Container: ALB processed bytes (LCU) plus the share of a task the frames' CPU takes.
    task_hour = TASK_VCPU * p["fargate_arm_per_vcpu_hour"] + TASK_GB * p["fargate_arm_per_gb_hour"]
    cpu_share = FPS * cpu_ms_per_frame / 1000 / (TASK_VCPU * CPU_TARGET)  # tasks per participant
    alb_lcu = FRAMES_PER_HOUR * message_bytes_real / 1e9 * p["alb_per_lcu_hour"]
    container = alb_lcu + cpu_share * task_hour
    fixed_hour = task_hour + p["alb_per_hour"] + FIXED_PUBLIC_IPS * p["public_ipv4_per_hour"]
    gb_per_hour = FRAMES_PER_HOUR * message_bytes_real * 3 / 4 / 1e9
    return {
        "storage_per_participant_hour": storage,
        "apigw_per_participant_hour": apigw,
        "container_per_participant_hour": container,
        "container_alb_lcu_per_participant_hour": alb_lcu,
        "container_task_share_per_participant_hour": cpu_share * task_hour,
        "participants_per_task": 1 / cpu_share,
        "container_fixed_per_hour": fixed_hour,
        "container_fixed_per_month": fixed_hour * 730,
        "s3_storage_per_participant_hour_per_month": gb_per_hour * p["s3_storage_per_gb_month"],
        "apigw_units_per_small_message": units,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 + 5 frames instead of 200 + 50")
    args = parser.parse_args(argv)
    n_webcam, n_screen = (20, 5) if args.quick else (200, 50)
    sizes = fit(n_webcam, n_screen)
    cpu = receiver_cpu(40 if args.quick else 200)
    real = sizes["480x360 camera-like"]["message_bytes_median"]
    small = sizes["480x360 flat (camera off-like)"]["message_bytes_median"]
    cost = costs(real, small, cpu["cpu_ms_per_frame"])
    result = {"fit": sizes, "receiver_cpu": cpu, "cost": cost, "prices": PRICES, "measured_at": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'frames':32} {'n':>4} {'PNG median':>11} {'message median':>15} {'<=32 KB':>8} {'<=128 KB':>9}")
    for name, s in sizes.items():
        print(f"{name:32} {s['frames']:>4} {s['png_bytes_median'] / 1024:>9.0f}KB {s['message_bytes_median'] / 1024:>13.0f}KB "
              f"{s['fit_32k_frame']:>8} {s['fit_128k_message']:>9}")
    print(f"receiver CPU: {cpu['cpu_ms_per_frame']:.1f} ms per 480x360 frame ({cpu['frames']} frames, {cpu['cpu']})")
    for key, value in cost.items():
        print(f"  {key:48} {value:.5g}")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
