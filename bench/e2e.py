"""End to end: frames per second and send-to-stored latency, per ingress.

- API Gateway: `framesink local`'s LocalStack (the emulator feeding the real Lambda handlers,
  without the novelty function), hosted in this process so that a botocore hook on the
  ingress's own DynamoDB client can timestamp each frame's index write.
- The container receiver: moto, the receiver, the bots and the 2-call ceiling each a process
  of its own (separate_receiver); the same hook runs inside the receiver
  (bench/e2e_receiver.py) and hands its timestamps over when it exits.

The load comes from another process (bench/loadgen.py): simulated Recall bots, one websocket
per bot, 5 participants per bot.

- stored: the frame's index write (PutItem, or the BatchWriteItem carrying it) has returned
  (its S3 object was written just before); latency = that moment minus the client's send time
  (same machine, same clock).
- paced: every participant at 2 fps for a few seconds; p50/p99 latency, frames/s, loss.
- saturated: the bots send as fast as the ingress reads (websocket backpressure); frames/s,
  against the raw moto put ceiling measured in the same run against the same moto server
  (plain boto3 put_object + put_item from threads, no ingress); for API Gateway also against
  FrameStore.put_frame's own ceiling (its three calls, no ingress), and each call's time,
  one at a time, says why the two differ.
- API Gateway frames are small flat 480x360 PNGs (~2 KB) because real camera frames do not
  fit its 32 KB frame limit; the receiver gets camera-like 480x360 frames (~250 KB).

The receiver's peak memory (VmHWM from /proc) is read after its paced runs, and its CPU time
per frame at 2 fps is what bench/cost.py turns into Fargate cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager, redirect_stdout

from . import Row, percentile, proc_stats
from .loadgen import call_times_at
from .procs import Subject, wait_cpu_idle

TARGET = 0.9  # end to end vs the 2-call moto ceiling (issue 15)
MEETING_SIZE = 5
PARTICIPANTS = (10, 50, 100)
MIN_STREAM_FRAMES = 30  # frames per participant in a saturated run (15 s of a 2 fps stream)
GUARD = 180  # seconds: hang guard only


def _frame_key(item: dict) -> str | None:
    """The S3 key of a frame's index item (low-level DynamoDB JSON), or None for other items."""
    if item.get("kind", {}).get("S") != "frame":
        return None
    from framesink_core.shared.schema import frame_key

    return frame_key(item["recording_id"]["S"], item["participant_id"]["S"], item["type"]["S"],
                     int(item["relative_ms"]["N"]))


class StoredClock:
    """Epoch ms at which each frame's index item write returned, keyed by S3 key: a PutItem
    (the Lambda path) or the BatchWriteItem that carried it (the receiver), minus the items
    DynamoDB handed back unprocessed."""

    def __init__(self, dynamodb):
        self.at: dict[str, float] = {}
        events = dynamodb.meta.events
        for op in ("PutItem", "BatchWriteItem"):
            events.register(f"before-parameter-build.dynamodb.{op}", self._before)
            events.register(f"after-call.dynamodb.{op}", self._after)

    @staticmethod
    def _before(params, context, **_):
        items = [params["Item"]] if "Item" in params else [
            r["PutRequest"]["Item"] for rs in params.get("RequestItems", {}).values() for r in rs if "PutRequest" in r]
        keys = [k for k in map(_frame_key, items) if k]
        if keys:
            context["bench_keys"] = keys

    def _after(self, http_response, parsed, context, **_):
        keys = context.get("bench_keys")
        if not keys or http_response.status_code != 200:
            return
        left = {_frame_key(r["PutRequest"]["Item"]) for rs in (parsed.get("UnprocessedItems") or {}).values()
                for r in rs}
        now = time.time() * 1000
        for key in keys:
            if key not in left:
                self.at.setdefault(key, now)


class CallCounter:
    """AWS calls the ingress's own clients make, by operation (what a frame costs in calls):
    botocore's, and the frame puts of the receiver's obstore client (objects.py)."""

    def __init__(self, store):
        self.calls: Counter = Counter()
        for client in (store.s3, store.dynamodb):
            client.meta.events.register("before-call.*.*", self._count)
        from framesink_core.shared.objects import BotoObjects

        if not isinstance(store.objects, BotoObjects):  # obstore's puts: counted by hand
            put_new = store.objects.put_new

            def counted(*args, **kwargs):
                self.calls["PutObject"] += 1
                return put_new(*args, **kwargs)

            store.objects.put_new = counted

    def _count(self, model, **_):
        self.calls[model.name] += 1

    def snapshot(self) -> Counter:
        return Counter(self.calls)


@contextmanager
def local_stack(ingress: str):
    """`framesink local --ingress <ingress>` in a background event loop; yields (stack, run)."""
    import logging

    from framesink.local import LocalConfig, background_stack

    logging.getLogger("framesink").setLevel(logging.WARNING)
    # Without the novelty function's workers: in AWS a Lambda of its own, here they would
    # decode every frame in the ingress's process (docs/performance.md).
    config = LocalConfig.isolated("bench", ingress=ingress, novelty=False)
    with background_stack(config, timeout=GUARD) as stack:
        yield stack, stack.run


def _ingress_service(stack):
    from framesink_handlers import _runtime

    return stack.receiver.service if stack.receiver is not None else _runtime.service()


def loadgen(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", *args], capture_output=True, text=True,
                         timeout=GUARD, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {' '.join(args[:1])} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _wait_stored(clock: StoredClock, keys: list[str], stack, run, timeout: float = GUARD) -> None:
    run(stack.wait_idle(), timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(k not in clock.at for k in keys):
        time.sleep(0.05)


def measure(clock, stack, run, url: str, participants: int, size: str, fps: float, ticks: int, tag: str,
            counter: CallCounter | None = None) -> dict:
    before = counter.snapshot() if counter else Counter()
    result = loadgen("bots", "--url", url, "--participants", str(participants), "--meeting-size",
                     str(MEETING_SIZE), "--ticks", str(ticks), "--fps", str(fps), "--size", size,
                     "--recording-prefix", f"bench-{tag}-{uuid.uuid4().hex[:6]}")
    sent = dict(result["sent"])
    _wait_stored(clock, list(sent), stack, run)
    latencies = [clock.at[k] - t for k, t in sent.items() if k in clock.at]
    stored = len(latencies)
    span = (max(clock.at[k] for k in sent if k in clock.at) - min(sent.values())) / 1000 if stored else 0
    calls = counter.snapshot() - before if counter else Counter()
    return {
        "calls_per_frame": {op: round(n / len(sent), 3) for op, n in sorted(calls.items())} if sent else {},
        "participants": participants, "connections": result["connections"], "sent": len(sent),
        "expected": participants * ticks, "stored": stored, "lost": participants * ticks - stored,
        "errors": result["errors"], "fps": stored / span if span else 0.0,
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "send_seconds": result["seconds"],
    }


def ceiling(stack, size: str, threads: int, frames: int, calls: int = 2) -> dict:
    """Plain boto3 puts from threads of this process: where `framesink local` runs the
    ingress's own boto3 clients, next to the moto server, sharing its interpreter."""
    from .loadgen import put_loop_at

    return put_loop_at(stack.endpoint_url, stack.config.region, stack.config.bucket, stack.config.table,
                       size=size, frames=frames, threads=threads, calls=calls)


def receiver_memory(stack, run, participants: int, seconds: float) -> dict:
    """A standalone receiver process (the container's CMD) under ``participants`` at 2 fps."""
    env = {
        **os.environ,
        "FRAMESINK_BUCKET": stack.config.bucket, "FRAMESINK_TABLE": stack.config.table,
        "FRAMESINK_TOKEN_SECRET_ID": stack.config.token_secret_name,
        "AWS_ENDPOINT_URL": stack.endpoint_url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true", "PYTHONUNBUFFERED": "1",
    }
    receiver = Subject("receiver", [sys.executable, "-m", "framesink_receiver", "--port", "0"], env,
                       lambda port: f"ws://127.0.0.1:{port}/?token={stack.token}")
    try:
        idle = proc_stats(receiver.proc.pid)
        ticks = max(2, round(seconds * 2))
        result = loadgen("bots", "--url", receiver.url, "--participants",
                         str(participants), "--meeting-size", str(MEETING_SIZE), "--ticks", str(ticks),
                         "--fps", "2", "--size", "webcam", "--recording-prefix", f"bench-rss-{uuid.uuid4().hex[:6]}")
        loaded = wait_cpu_idle(receiver.proc.pid)  # every frame read has been stored
        frames = len(result["sent"])
        return {
            "participants": participants, "frames": frames, "seconds": result["seconds"],
            "idle_rss_bytes": idle["VmRSS"], "peak_rss_bytes": loaded["VmHWM"],
            "cpu_ms_per_frame": (loaded["cpu_seconds"] - idle["cpu_seconds"]) * 1000 / frames if frames else None,
            "errors": result["errors"],
        }
    finally:
        receiver.stop()


def separate_receiver(quick: bool, receiver_lambdas: str | None = None) -> dict:
    """The container receiver end to end with every part its own process (issue 25, item 5):
    moto (`framesink local`'s MotoProcess, alone in its interpreter), the receiver (``python -m
    framesink_receiver`` through bench/e2e_receiver.py, which only adds the stored clock), the
    bots (bench/loadgen.py) and the 2-call ceiling (``loadgen ceiling``: plain boto3 put_object
    + put_item from 8 threads, the receiver's index batches' counterpart), so no subject shares
    an interpreter, or its GIL, with moto or with another subject.

    Paced runs first (10, 50, 100 participants at 2 fps: latency, and the receiver's peak RSS
    under them), then saturated runs (as fast as the receiver reads), the ceiling before and
    after them (the better one counts). The receiver publishes each frame's event on an
    EventBridge bus, as deployed (no rule matches here: moto drops them).

    ``receiver_lambdas``: another checkout's ``lambdas`` directory, put first on the
    receiver's path, for an A/B of two receivers in the same layout (``--receiver-lambdas``)."""
    import tempfile

    import boto3

    from framesink.local.aws import provision
    from framesink.local.stack import MotoProcess

    from . import ROOT

    counts = PARTICIPANTS[:2] if quick else PARTICIPANTS
    paced_ticks = 3 if quick else 4
    ceiling_frames = 150 if quick else 400
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [receiver_lambdas]), str(ROOT / "lambdas")]),
           "PYTHONUNBUFFERED": "1"}
    tmp = tempfile.mkdtemp(prefix="framesink-e2e-")
    moto, receiver = MotoProcess(), None
    try:
        endpoint = moto.start()

        def client(name):
            return boto3.client(name, endpoint_url=endpoint, region_name="us-east-1",
                                aws_access_key_id="testing", aws_secret_access_key="testing")

        suffix = uuid.uuid4().hex[:8]
        bucket, token = f"e2e-{suffix}", f"tok-{suffix}"
        settings_env = provision(s3=client("s3"), dynamodb=client("dynamodb"), secretsmanager=client("secretsmanager"),
                                 bucket=bucket, table=bucket, token=token, token_secret_name=f"e2e/{suffix}")
        client("events").create_event_bus(Name=f"{bucket}-frames")
        clock_file = os.path.join(tmp, "stored.json")
        receiver = Subject(
            "receiver", [sys.executable, "-m", "bench.e2e_receiver", "--port", "0"],
            {**env, **settings_env, "AWS_ENDPOINT_URL": endpoint, "FRAMESINK_BUCKET": bucket,
             "FRAMESINK_TABLE": bucket, "FRAMESINK_EVENT_BUS": f"{bucket}-frames",
             "FRAMESINK_SPOOL_DIR": os.path.join(tmp, "spool"), "FRAMESINK_BENCH_CLOCK": clock_file,
             "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true"},
            lambda p: f"ws://127.0.0.1:{p}/?token={token}")

        def ceiling_now() -> dict:
            return loadgen("ceiling", "--endpoint", endpoint, "--bucket", bucket, "--table", bucket,
                           "--frames", str(ceiling_frames), "--threads", "8", "--size", "webcam")

        def bots(n: int, fps: float, ticks: int, tag: str) -> dict:
            """One run of ``n`` participants, and the receiver's CPU over it (idle to idle)."""
            before = wait_cpu_idle(receiver.proc.pid)
            result = loadgen("bots", "--url", receiver.url, "--participants", str(n), "--meeting-size",
                             str(MEETING_SIZE), "--ticks", str(ticks), "--fps", str(fps), "--size", "webcam",
                             "--recording-prefix", f"bench-{tag}-{uuid.uuid4().hex[:6]}")
            after = wait_cpu_idle(receiver.proc.pid)
            return {"sent": dict(result["sent"]), "errors": result["errors"], "expected": n * ticks,
                    "participants": n, "cpu_ms_per_frame": (after["cpu_seconds"] - before["cpu_seconds"]) * 1000
                    / max(1, len(result["sent"]))}

        idle = wait_cpu_idle(receiver.proc.pid)
        paced = {n: bots(n, 2.0, paced_ticks, f"sep-{n}-paced") for n in counts}
        after_paced = proc_stats(receiver.proc.pid)
        ceilings = [ceiling_now()]
        saturated = {n: bots(n, 0.0, max(MIN_STREAM_FRAMES, 120 // n), f"sep-{n}-sat") for n in counts}
        ceilings.append(ceiling_now())
        receiver.stop()  # its clock file is written as it exits
        with open(clock_file) as f:
            stored_at = json.load(f)
    finally:
        if receiver is not None and receiver.proc.poll() is None:
            receiver.proc.kill()
        moto.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    def summary(run: dict) -> dict:
        sent = run["sent"]
        latencies = [stored_at[k] - t for k, t in sent.items() if k in stored_at]
        span = (max(stored_at[k] for k in sent if k in stored_at) - min(sent.values())) / 1000 if latencies else 0
        return {"participants": run["participants"], "sent": len(sent), "expected": run["expected"],
                "stored": len(latencies), "lost": run["expected"] - len(latencies), "errors": run["errors"],
                "fps": len(latencies) / span if span else 0.0,
                "p50_ms": percentile(latencies, 50) if latencies else None,
                "p99_ms": percentile(latencies, 99) if latencies else None,
                "cpu_ms_per_frame": run["cpu_ms_per_frame"]}

    return {
        "results": [{"paced": summary(paced[n]), "saturated": summary(saturated[n]), "ceiling_threads": 8}
                    for n in counts],
        "ceilings": ceilings, "ceiling_fps": max(c["fps"] for c in ceilings),
        "memory": {"participants": max(counts), "idle_rss_bytes": idle["VmRSS"],
                   "peak_rss_bytes": after_paced["VmHWM"]},
    }


def run(quick: bool = False) -> tuple[list[Row], dict]:
    # Powertools prints an EMF line every 100 values of a metric even with metrics disabled
    # (its add_metric auto-flush); the local stack's in-process ingress would fill the table.
    with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
        return _run(quick)


def _run(quick: bool) -> tuple[list[Row], dict]:
    counts = PARTICIPANTS[:2] if quick else PARTICIPANTS
    paced_ticks = 3 if quick else 4  # frames per participant at 2 fps
    rows: list[Row] = []
    details: dict = {"meeting_size": MEETING_SIZE, "runs": {}}
    # The API Gateway path in `framesink local`'s own layout: its emulator calls the Lambda
    # handlers in the process that hosts moto, as `framesink local` runs them. The container
    # receiver, a process of its own when deployed, is measured as one: separate_receiver().
    for ingress, size, sat_frames in (("apigw", "small", 200),):
        if quick:
            sat_frames //= 2
        with local_stack(ingress) as (stack, run_):
            service = _ingress_service(stack)
            clock = StoredClock(service.dynamodb)
            counter = CallCounter(service.store)
            url = stack.state["ws_url"]
            # Concurrency the ingress has: the emulator handles a connection's messages in
            # order (8 handler threads in all); the receiver stores up to 32 at once.
            concurrency = {n: (min(-(-n // MEETING_SIZE), 8) if ingress == "apigw" else 8) for n in counts}
            ceilings: dict[int, list[dict]] = {}
            for threads in sorted(set(concurrency.values())):
                ceilings[threads] = [ceiling(stack, size, threads, sat_frames * 2 // 3)]
            core_ceiling = ceiling(stack, size, 8, sat_frames // 2, calls=3)
            calls = call_times_at(stack.endpoint_url, stack.config.region, stack.config.bucket, stack.config.table,
                                  size=size, frames=15 if quick else 40)
            results = []
            for n in counts:
                paced = measure(clock, stack, run_, url, n, size, 2.0, paced_ticks, f"{ingress}-{n}-paced")
                # A stream, not a burst: a participant's first frame also writes its totals,
                # its recording and its bot link (totals.py), and its totals follow every 5 s,
                # which a real stream (7,200 frames an hour) amortizes; an 8-frame burst
                # measured those writes (0.3-0.44 UpdateItems per frame) more than storing.
                saturated = measure(clock, stack, run_, url, n, size, 0.0, max(MIN_STREAM_FRAMES, sat_frames // n),
                                    f"{ingress}-{n}-sat", counter)
                results.append({"paced": paced, "saturated": saturated, "ceiling_threads": concurrency[n]})
            for threads in ceilings:  # again after the runs: the ceiling is the better of the two
                ceilings[threads].append(ceiling(stack, size, threads, sat_frames * 2 // 3))
        best = {t: max(c["fps"] for c in cs) for t, cs in ceilings.items()}
        core = core_ceiling["fps"]
        label = "API Gateway emulator + Lambda handlers, ~2 KB frames" if ingress == "apigw" \
            else "container receiver, ~250 KB frames"
        for r in results:
            n, p, s = r["paced"]["participants"], r["paced"], r["saturated"]
            ok_loss = p["lost"] == 0 and s["lost"] == 0
            rows.append(Row(
                "e2e", f"{ingress} {n} participants: saturated frames/s", s["fps"], "frames/s",
                baseline=best[r["ceiling_threads"]], baseline_name=f"moto put ceiling ({r['ceiling_threads']} threads)",
                target=TARGET, higher_is_better=True,
                note=f"loss {p['lost'] + s['lost']}" + ("" if ok_loss else " (LOST FRAMES)")
                + f"; {s['fps'] / core:.2f}x of FrameStore.put_frame's own ceiling, {core:.0f}/s; calls per frame "
                + ", ".join(f"{op} {v:.2f}" for op, v in s["calls_per_frame"].items()),
            ))
            rows.append(Row(
                "e2e", f"{ingress} {n} participants at 2 fps: p50 / p99 send-to-stored", p["p50_ms"] or 0, "ms",
                note=f"p99 {p['p99_ms']:.0f} ms, {p['fps']:.0f} frames/s stored" if p["p99_ms"] is not None else "",
                extra={"p99_ms": p["p99_ms"]},
            ))
        # Why the ceiling is out of reach: put_frame's calls, one at a time, against the plain two.
        rows.append(Row(
            "e2e", f"{ingress}: moto ms per frame, FrameStore.put_frame", calls["put_frame total"], "ms",
            baseline=calls["plain total"], baseline_name="plain put_object + put_item",
            note=", ".join(f"{k.split()[1]} {calls[k]:.1f}" for k in calls if k.startswith("put_frame ")
                           and k != "put_frame total") + " ms; one thread, median",
        ))
        details["runs"][ingress] = {"label": label, "frame_size": size, "results": results,
                                    "ceilings": ceilings, "put_frame_ceiling": core_ceiling, "call_ms": calls}
    sep = separate_receiver(quick)
    details["runs"]["direct"] = {"label": "container receiver, ~250 KB frames; moto, receiver, bots and ceiling "
                                          "each their own process", "frame_size": "webcam", **sep}
    for r in sep["results"]:
        n, p, s = r["paced"]["participants"], r["paced"], r["saturated"]
        lost = p["lost"] + s["lost"]
        rows.append(Row(
            "e2e", f"direct {n} participants: saturated frames/s (separate processes)", s["fps"], "frames/s",
            baseline=sep["ceiling_fps"], baseline_name="2-call ceiling, own process (8 threads)",
            target=TARGET, higher_is_better=True,
            note=f"loss {lost}" + ("" if lost == 0 else " (LOST FRAMES)")
            + f"; receiver {s['cpu_ms_per_frame']:.2f} ms CPU per frame"))
        rows.append(Row(
            "e2e", f"direct {n} participants at 2 fps: p50 / p99 send-to-stored (separate processes)",
            p["p50_ms"] or 0, "ms",
            note=(f"p99 {p['p99_ms']:.0f} ms, {p['fps']:.0f} frames/s stored" if p["p99_ms"] is not None else "")
            + f"; receiver {p['cpu_ms_per_frame']:.2f} ms CPU per frame",
            extra={"p99_ms": p["p99_ms"]}))
    memory = sep["memory"]
    details["receiver_memory"] = memory
    rows.append(Row(
        "memory", f"receiver peak RSS, up to {memory['participants']} participants at 2 fps (~250 KB frames)",
        memory["peak_rss_bytes"] / 2**20, "MiB", baseline=memory["idle_rss_bytes"] / 2**20,
        baseline_name="same process idle"))
    # bench/cost.py prices Fargate from this: the receiver's CPU per frame at 2 fps (a real
    # meeting's pace), the most participants measured, its own process as in a task.
    details["receiver_cpu_ms_per_frame"] = {"webcam 480x360": sep["results"][-1]["paced"]["cpu_ms_per_frame"]}
    return rows, details


if __name__ == "__main__" and "--separate" in sys.argv:  # the receiver's layout alone (A/B runs)
    lambdas_dir = sys.argv[sys.argv.index("--receiver-lambdas") + 1] if "--receiver-lambdas" in sys.argv else None
    measured = separate_receiver("--quick" in sys.argv, lambdas_dir)
    print(json.dumps({"ceiling_fps": round(measured["ceiling_fps"], 1), "memory": measured["memory"], "results": [
        {kind: {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r[kind].items() if k != "errors"}
         for kind in ("paced", "saturated")} for r in measured["results"]]}, indent=1))
elif __name__ == "__main__":
    result_rows, result_details = run(quick="--quick" in sys.argv)
    for row in result_rows:
        ratio = f" = {row.ratio:.2f}x of {row.baseline:.1f}" if row.ratio is not None else ""
        print(f"{row.name}: {row.value:.1f} {row.unit}{ratio} {row.note}")
    print(json.dumps(result_details, indent=2, default=str)[:4000])
