"""framesink benchmarks: `make bench` (``python -m bench``).

Every figure is a ratio against a baseline measured in the same run, on the same machine,
interleaved with the subject, because absolute times on a shared 2-core box swing by 2x
from one minute to the next while ratios hold. One module per topic:

- hotpath:   CPU per frame through the ingest core vs json.loads + base64 decode
- coldstart: import time of each Lambda handler module vs ``import boto3``
- assets:    zipped/unzipped size of each function's code asset in a fresh ``cdk synth``
- e2e:       frames/s and send-to-stored latency through ``framesink local`` vs raw moto puts
- receive_path: CPU per frame message of websocket server candidates (websockets, uvloop,
  picows; those not installed are skipped: ``pip install picows uvloop``)
- store_path: CPU per S3 put, obstore's async put on the event loop vs a blocking put in a pool
- sidebyside: the receiver's CPU per frame vs Recall's Node sample and a Python 2-call floor,
  each its own process (and on Python 3.13, the image's, when one is found)
- outlet:    the receiver's CPU per frame event, batched PutEvents vs one call per frame
- novelty:   scoring a frame (decode + thumbnail + state) vs storing it; novel fractions
- cost:      billable units per frame and cost per participant-hour (also ``python -m bench.cost``)

Results are printed as one table and written to bench/results/ (gitignored) as JSON.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One line of the results table. ``ratio`` is value / baseline (or baseline / value for
    throughput, see ``higher_is_better``); ``ok`` says whether the target holds."""

    topic: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: float | None = None  # ratio target: max when lower is better, min otherwise
    higher_is_better: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)
    paired_ratio: float | None = None  # e.g. the median of per-round ratios, when noisier than this

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.baseline in (None, 0) or self.value is None:
            return None
        return self.value / self.baseline

    @property
    def ok(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "ok": self.ok}


def machine() -> dict:
    """What the numbers were measured on (docs/performance.md quotes it)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": load,
        "argv": sys.argv,
    }


def proc_stats(pid: int) -> dict:
    """A live process's memory (VmRSS, VmHWM in bytes) and CPU (user + system seconds), from /proc."""
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    status["cpu_seconds"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return status


def summarize(samples: list[float]) -> dict:
    return {
        "min": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
        "n": len(samples),
    }


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
