"""Receiver CPU per frame, side by side: framesink's container receiver against (a) a Node
receiver equivalent to Recall's sample (JSON.parse, base64 decode, append to a file: no
storage at all) and (b) the bare Python 2-call floor (json.loads, b64decode, one S3 put and
one DynamoDB put per frame: bench/floor_receiver.py).

Same frames (camera-like 480x360 PNGs, ~250 KB), same run, each subject its own process, moto
in this (orchestrating) process, the load from another (bench/loadgen.py: one websocket, a
meeting of 5 participants, sent as fast as the subject reads). Rounds alternate the order of
the subjects; CPU per frame is the subject's user + system time from /proc over the round,
read once it has gone idle (every frame it read is stored), divided by the frames. Each
round's stored frames are counted in S3 (framesink, floor) or by the Node process itself.

The Node receiver is built by the bench itself (`npm install` of its one dependency, ws,
into bench/node_receiver/node_modules); without Node or npm that subject is skipped.

The container image runs Python 3.13 (container/Dockerfile), the dev machine 3.11: when a 3.13
interpreter is found (``FRAMESINK_BENCH_PYTHON313``, ``python3.13`` on the PATH, or pyenv's),
the receiver also runs under it as a fourth subject, from a venv of the image's own
requirements (container/requirements.txt) built once under build/bench-py313.

    python -m bench.sidebyside [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from . import ROOT, Row, proc_stats
from .e2e import loadgen
from .procs import Subject, wait_cpu_idle

TARGET = 0.7  # framesink's receiver CPU per frame vs the 2-call floor (issue 15)
NODE_DIR = Path(__file__).resolve().parent / "node_receiver"
MEETING = 5
# (tag, label, loadgen size, participants per connection, frames per round); not in --quick
VARIANTS = [("many", "480x360, 40 participants per connection", "webcam", 40, 400),
            ("hd", "1280x720, 5 participants per connection", "hd", 5, 100)]
VARIANT_ROUNDS = 4


def _node_ready() -> bool:
    if not (shutil.which("node") and shutil.which("npm")):
        return False
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True,
                       timeout=300, stdout=subprocess.DEVNULL)
    return True


def _python313() -> str | None:
    """A venv interpreter of Python 3.13 with the container's requirements, or None."""
    import glob

    venv = ROOT / "build" / "bench-py313"
    python = venv / "bin" / "python"
    requirements = ROOT / "container" / "requirements.txt"
    stamp = venv / ".requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == requirements.read_text():
        return str(python)
    candidates = [os.environ.get("FRAMESINK_BENCH_PYTHON313"), shutil.which("python3.13"), "/usr/bin/python3.13",
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))]
    for base in filter(None, candidates):
        try:  # (a pyenv shim is on the PATH but fails when 3.13 is not the selected version)
            version = subprocess.run([base, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                                     capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if version.returncode != 0 or version.stdout.strip() != "True":
            continue
        shutil.rmtree(venv, ignore_errors=True)
        made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, timeout=120)
        installed = made.returncode == 0 and subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], capture_output=True,
            timeout=600).returncode == 0
        if installed:
            stamp.write_text(requirements.read_text())
            return str(python)
    return None


def run(quick: bool = False) -> tuple[list[Row], dict]:
    import boto3
    from moto.server import ThreadedMotoServer

    from framesink.local.aws import provision

    frames_per_round = 200 if quick else 400
    rounds = 2 if quick else 4
    ticks = frames_per_round // MEETING
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    client = lambda name: boto3.client(name, endpoint_url=endpoint, region_name="us-east-1",  # noqa: E731
                                       aws_access_key_id="testing", aws_secret_access_key="testing")
    suffix = uuid.uuid4().hex[:8]
    bucket, table, token = f"side-{suffix}", f"side-{suffix}", f"tok-{suffix}"
    secret_env = provision(s3=client("s3"), dynamodb=client("dynamodb"), secretsmanager=client("secretsmanager"),
                           bucket=bucket, table=table, token=token, token_secret_name=f"side/{suffix}")
    base_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **fake,
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")]), "PYTHONUNBUFFERED": "1"}
    tmp = tempfile.mkdtemp(prefix="framesink-side-")
    subjects: dict[str, Subject] = {}
    per_frame: dict[str, list[float]] = {}
    stored: dict[str, list[int]] = {}
    variants: dict[str, dict[str, list[float]]] = {}
    details: dict = {"frames_per_round": frames_per_round, "rounds": rounds, "png": "480x360 camera-like"}
    try:
        receiver_env = {**base_env, "FRAMESINK_BUCKET": bucket, "FRAMESINK_TABLE": table, **secret_env,
                        "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true",
                        "POWERTOOLS_METRICS_DISABLED": "true"}
        subjects["framesink receiver"] = Subject(
            "framesink receiver", [sys.executable, "-m", "framesink_receiver", "--port", "0"], receiver_env,
            lambda p: f"ws://127.0.0.1:{p}/?token={token}")
        py313 = None if quick else _python313()
        if py313:
            subjects["framesink receiver 3.13"] = Subject(
                "framesink receiver 3.13", [py313, "-m", "framesink_receiver", "--port", "0"], receiver_env,
                lambda p: f"ws://127.0.0.1:{p}/?token={token}")
        else:
            details["python313"] = "skipped: no Python 3.13 found" if not quick else "skipped: --quick"
        subjects["python 2-call floor"] = Subject(
            "python 2-call floor", [sys.executable, "-m", "bench.floor_receiver", bucket, table], base_env,
            lambda p: f"ws://127.0.0.1:{p}/")
        if _node_ready():
            subjects["node sample receiver"] = Subject(
                "node sample receiver", ["node", str(NODE_DIR / "receiver.js"), str(Path(tmp) / "frames.bin")],
                {"PATH": os.environ.get("PATH", "")}, lambda p: f"ws://127.0.0.1:{p}/")
        names = list(subjects)
        s3 = client("s3")

        def cpu_per_frame(name: str, tag: str, size: str, meeting: int, ticks: int) -> float:
            subject = subjects[name]
            prefix = f"side-{tag}-{name.split()[0]}-{uuid.uuid4().hex[:6]}"
            wait_cpu_idle(subject.proc.pid)
            before = proc_stats(subject.proc.pid)
            result = loadgen("bots", "--url", subject.url, "--participants", str(meeting), "--meeting-size",
                             str(meeting), "--ticks", str(ticks), "--fps", "0", "--size", size,
                             "--recording-prefix", prefix)
            after = wait_cpu_idle(subject.proc.pid)
            if name != "node sample receiver":  # (both framesink subjects store)
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"recordings/{prefix}")
                stored.setdefault(f"{name} {tag.split('-')[0]}", []).append(
                    sum(len(p.get("Contents", [])) for p in pages))
            if result["errors"]:
                details.setdefault("errors", []).extend(result["errors"])
            return (after["cpu_seconds"] - before["cpu_seconds"]) * 1000 / len(result["sent"])

        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                per_frame.setdefault(name, []).append(cpu_per_frame(name, f"main-{r}", "webcam", MEETING, ticks))
        # The goal's other shapes (issue 25): many participants on one connection, and HD
        # frames; framesink against the Node sample only, rounds alternated as above.
        pair = [n for n in ("framesink receiver", "node sample receiver") if n in subjects]
        for tag, label, size, meeting, frames in ([] if quick or len(pair) < 2 else VARIANTS):
            for r in range(VARIANT_ROUNDS):
                for name in (pair if r % 2 == 0 else pair[::-1]):
                    variants.setdefault(tag, {}).setdefault(name, []).append(
                        cpu_per_frame(name, f"{tag}-{r}", size, meeting, frames // meeting))
        for name, subject in subjects.items():
            err = subject.stop()
            if name == "node sample receiver":
                counted = [json.loads(line)["frames"] for line in err.splitlines() if line.startswith("{")]
                stored[name] = counted  # (its total over every round: all it was sent)
    finally:
        for subject in subjects.values():
            if subject.proc.poll() is None:
                subject.proc.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    details["cpu_ms_per_frame"] = {name: [round(x, 2) for x in v] for name, v in per_frame.items()}
    details["stored"] = stored
    floor_name, node_name, ours = "python 2-call floor", "node sample receiver", "framesink receiver"
    py313 = "framesink receiver 3.13"
    node_baseline = "JSON.parse + base64 + append to a file"
    per_round = f"of {frames_per_round} per round"

    def versus(key: str, name: str, values: list[float], baseline: list[float], baseline_name: str,
               note: str = "", into: dict = details, **row) -> Row:
        """``values`` against ``baseline`` round by round (same round, adjacent in time): the
        median of the per-round ratios, and their spread; the ratios also go in into[key]."""
        ratios = [a / b for a, b in zip(values, baseline)]
        into[key] = [round(x, 2) for x in ratios]
        return Row("sidebyside", name, statistics.median(values), "ms", baseline=statistics.median(baseline),
                   baseline_name=baseline_name, paired_ratio=statistics.median(ratios),
                   note=f"rounds {min(ratios):.2f}-{max(ratios):.2f}x" + (f"; {note}" if note else ""), **row)

    rows = [versus("ratio_to_floor_per_round", "receiver CPU per frame vs the Python 2-call floor",
                   per_frame[ours], per_frame[floor_name], "json.loads + b64decode + put_object + put_item",
                   f"stored {stored.get(ours + ' main')} {per_round}", target=TARGET)]
    if node_name in per_frame:
        rows.append(versus("ratio_to_node_per_round", "receiver CPU per frame vs Recall's Node sample (stores nothing)",
                           per_frame[ours], per_frame[node_name], node_baseline))
    else:
        details["node"] = "skipped: node/npm not found"
    if py313 in per_frame:  # the image's interpreter against the dev machine's, round by round
        rows.append(versus("ratio_313_to_311_per_round", "receiver CPU per frame on Python 3.13 (the image's) vs 3.11",
                           per_frame[py313], per_frame[ours], "the same receiver on 3.11",
                           f"stored {stored.get(py313 + ' main')} {per_round}"))
        if node_name in per_frame:
            rows.append(versus("ratio_313_to_node_per_round",
                               "receiver CPU per frame on Python 3.13 vs Recall's Node sample",
                               per_frame[py313], per_frame[node_name], node_baseline))
    for tag, label, *_ in VARIANTS:
        if tag not in variants:
            continue
        by_name = variants[tag]
        shape = details.setdefault("variants", {})[label] = {
            "stored_per_round": stored.get(f"{ours} {tag}"),
            "cpu_ms_per_frame": {n: [round(x, 2) for x in v] for n, v in by_name.items()}}
        rows.append(versus("ratio_to_node_per_round", f"receiver CPU per frame vs Recall's Node sample, {label}",
                           by_name[ours], by_name[node_name], node_baseline, f"stored {stored.get(f'{ours} {tag}')}",
                           into=shape))
    return rows, details


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(json.dumps(result, indent=2))
