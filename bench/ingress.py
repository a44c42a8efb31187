"""Choosing an ingress: which frames each one accepts, what the receiver spends per frame,
and what each costs per participant-hour. ``python -m bench.ingress [--quick]``.

1. Fit: seeded camera-like frames from framesink.synthetic (the simulator's frames), 200 at
   480x360 and 50 at 1280x720 (plus flat ~2 KB frames), wrapped in the exact Recall message;
   counted against API Gateway's 32 KB frame and 128 KB message limits. Recall sends each
   message as one websocket frame, so 32 KB binds. The container's only limit is
   maxFrameBytes (4 MiB of PNG by default).
2. Receiver CPU: `python -m framesink_receiver` as a subprocess (what the image runs) storing
   camera-like 480x360 frames from 100 participants at 2 fps in a moto server, measured as
   bench/e2e.py measures it (user+system CPU from /proc, divided by the frames).
3. Cost: bench/cost.py's model (its prices and arithmetic, nothing here), fed the receiver CPU
   measured in step 2; per ingress, what storage, the ingress itself and an idle deployment cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from framesink.local import APIGW_MAX_FRAME_BYTES, APIGW_MAX_MESSAGE_BYTES

from . import ROOT, cost, e2e, machine

RESULTS = Path(__file__).resolve().parent / "results" / "ingress.json"
HOURS_PER_MONTH = cost.DAYS_PER_MONTH * 24


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
                "fit_32k_frame": sum(m <= APIGW_MAX_FRAME_BYTES for m in messages),
                "fit_128k_message": sum(m <= APIGW_MAX_MESSAGE_BYTES for m in messages),
            }
    return out


def receiver_cpu(participants: int) -> dict:
    """CPU ms the receiver process spends per stored 480x360 camera-like frame (bench/e2e.py)."""
    with e2e.local_stack("apigw") as (stack, run):
        measured = e2e.receiver_memory(stack, run, participants, seconds=2)
    if measured["errors"] or not measured["frames"]:
        raise RuntimeError(f"receiver run failed: {measured['errors'][:3]}")
    return {**measured, "cpu": machine()["cpu"]}


def choose(estimates: list[dict]) -> dict:
    """The "choose your ingress" figures, straight from bench/cost.py's estimates."""
    by = {(e["ingress"], e["profile"]): e for e in estimates}
    apigw = by[("apigw", "small 480x360 (fits API Gateway)")]
    webcam = by[("cloudfront", "webcam 480x360")]
    screen = by[("cloudfront", "screenshare 1280x720")]
    alb_webcam = by[("alb", "webcam 480x360")]
    alb_screen = by[("alb", "screenshare 1280x720")]
    return {
        "apigw_ingress_per_participant_hour": apigw["ingress_per_participant_hour"],
        "container_ingress_per_participant_hour": {"webcam 480x360": webcam["ingress_per_participant_hour"],
                                                   "screenshare 1280x720": screen["ingress_per_participant_hour"]},
        "alb_tls_ingress_per_participant_hour": {"webcam 480x360": alb_webcam["ingress_per_participant_hour"],
                                                 "screenshare 1280x720": alb_screen["ingress_per_participant_hour"]},
        "container_idle_per_hour": webcam["idle_per_hour"],
        "container_idle_per_month": webcam["idle_per_hour"] * HOURS_PER_MONTH,
        "storage_per_participant_hour": {"small": apigw["storage_per_participant_hour"],
                                         "webcam 480x360": webcam["storage_per_participant_hour"],
                                         "screenshare 1280x720": screen["storage_per_participant_hour"]},
        "webcams_per_task": webcam["units_per_frame"]["participants_per_task"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 + 5 frames and 50 participants instead of 200 + 50 and 100")
    args = parser.parse_args(argv)
    n_webcam, n_screen = (20, 5) if args.quick else (200, 50)
    sizes = fit(n_webcam, n_screen)
    cpu = receiver_cpu(50 if args.quick else 100)
    _, details = cost.run(quick=args.quick, receiver_cpu_ms={"webcam 480x360": cpu["cpu_ms_per_frame"]})
    summary = choose(details["estimates"])
    result = {"fit": sizes, "receiver_cpu": cpu, "choose": summary, "cost": details,
              "measured_at": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print(f"{'frames':32} {'n':>4} {'PNG median':>11} {'message median':>15} {'<=32 KB':>8} {'<=128 KB':>9}")
    for name, s in sizes.items():
        print(f"{name:32} {s['frames']:>4} {s['png_bytes_median'] / 1024:>9.0f}KB {s['message_bytes_median'] / 1024:>13.0f}KB "
              f"{s['fit_32k_frame']:>8} {s['fit_128k_message']:>9}")
    print(f"receiver CPU: {cpu['cpu_ms_per_frame']:.1f} ms per 480x360 frame ({cpu['frames']} frames from "
          f"{cpu['participants']} participants at 2 fps, {cpu['cpu']})")
    print(f"\nbench/cost.py, prices {details['prices_as_of']}, that receiver CPU:")
    for key, value in summary.items():
        values = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in values:
            print(f"  {key:42} {sub:22} {v:.5g}")
    print("\n" + details["markdown"])
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
