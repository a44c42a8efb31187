"""What the end-of-meeting export costs: CPU, file size and memory to encode one stream
(framesink_core.read.video.VideoWriter: PNG decode + H.264 veryfast), per frame and per hour of
2 fps frames, against decoding the same PNGs alone (the floor any export pays) in the same
run. This is what sized the export Lambda (infra/meetings.py): one stream per invocation,
4 GB (2.3 vCPUs), 15 minutes, ephemeral storage for the MP4.

    python -m bench.export [--quick]

The synthetic frames are harsher than real ones: every webcam frame is different noise-rich
content and every slide carries sensor noise, so real MP4s come out smaller and encode faster.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import Row

FRAMES_PER_HOUR = 2 * 3600


def _profiles(quick: bool):
    from framesink.synthetic import make_png, make_slide

    frames = 60 if quick else 240
    webcam = [make_png(480, 360, seed=i) for i in range(12)]
    slides = [make_slide(i % 6, 1280, 720, noise_seed=i) for i in range(12)]
    return frames, {"webcam 480x360": webcam, "screenshare 1280x720": slides}


def _decode_only(pool: list[bytes], frames: int) -> float:
    from PIL import Image

    start = time.process_time()
    for i in range(frames):
        with Image.open(io.BytesIO(pool[i % len(pool)])) as img:
            img.convert("RGB")
    return time.process_time() - start


def _encode(pool: list[bytes], frames: int, path: Path) -> tuple[float, float, int]:
    from framesink_core.read.video import VideoWriter

    start, wall = time.process_time(), time.perf_counter()
    writer = VideoWriter(path)
    for i in range(frames):
        writer.add(i * 500, pool[i % len(pool)])
    writer.close()
    return time.process_time() - start, time.perf_counter() - wall, path.stat().st_size


def _reset_peak_rss() -> None:
    """Linux: reset this process's VmHWM, so the peak is the export's, not earlier topics'."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(quick: bool = False) -> tuple[list[Row], dict]:
    """In a child process: the peak memory is then the export's own, not what earlier topics
    (the e2e topic's in-process moto) left this process holding."""
    args = [sys.executable, "-m", "bench.export", "--json"] + (["--quick"] if quick else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=1800,
                         cwd=Path(__file__).resolve().parent.parent)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [Row(**row) for row in result["rows"]], result["details"]


def _run(quick: bool) -> tuple[list[Row], dict]:
    _reset_peak_rss()
    frames, profiles = _profiles(quick)
    rows, details = [], {"frames_per_stream": frames, "profiles": {}}
    with tempfile.TemporaryDirectory(prefix="framesink-bench-export-") as tmp:
        for name, pool in profiles.items():
            # interleaved: decode, encode, decode, encode (the machine's speed drifts)
            decode, encode, walls, sizes = [], [], [], []
            for round_ in range(1 if quick else 2):
                decode.append(_decode_only(pool, frames))
                cpu, wall, size = _encode(pool, frames, Path(tmp) / f"{round_}.mp4")
                encode.append(cpu)
                walls.append(wall)
                sizes.append(size)
            cpu_ms = min(encode) / frames * 1000
            decode_ms = min(decode) / frames * 1000
            per_hour_cpu_min = cpu_ms * FRAMES_PER_HOUR / 60000
            mb_per_hour = sizes[-1] / frames * FRAMES_PER_HOUR / 1e6
            details["profiles"][name] = {
                "cpu_ms_per_frame": round(cpu_ms, 2), "decode_ms_per_frame": round(decode_ms, 2),
                "wall_ms_per_frame": round(min(walls) / frames * 1000, 2),
                "cpu_minutes_per_hour": round(per_hour_cpu_min, 2), "mp4_mb_per_hour": round(mb_per_hour, 1),
                "png_kb": round(sum(map(len, pool)) / len(pool) / 1000, 1)}
            rows.append(Row("export", f"{name}: encode CPU per frame", cpu_ms, "ms", decode_ms, "PNG decode only",
                            note=f"{per_hour_cpu_min:.1f} CPU-min and {mb_per_hour:.0f} MB of MP4 per hour"))
    rss_mb = _peak_rss_mb()
    details["peak_rss_mb"] = round(rss_mb, 1)
    rows.append(Row("export", "peak memory of the process (frames streamed)", rss_mb, "MB"))
    return rows, details


if __name__ == "__main__":
    from .__main__ import print_table

    quick = "--quick" in sys.argv
    result_rows, result = _run(quick)
    if "--json" in sys.argv:
        print(json.dumps({"rows": [dataclasses.asdict(r) for r in result_rows], "details": result}))
        sys.exit(0)
    print_table(result_rows)
    for profile, numbers in result["profiles"].items():
        print(f"{profile}: {numbers}")
    print(f"peak RSS {result['peak_rss_mb']} MB; {os.cpu_count()} cores")
