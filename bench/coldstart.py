"""Cold start: import time of each Lambda handler module in a fresh interpreter vs ``import boto3``.

What a deployed function imports is rebuilt from the venv, laid out as Lambda lays it out:

- ``task/`` (/var/task, first on sys.path): the asset infra/bundling.py builds, i.e.
  framesink_core, framesink_handlers and lambdas/requirements.txt's pinned closure, minus
  boto3 and its dependencies. Copied without any .pyc: the bundle is built with
  ``pip --no-compile`` and /var/task is read-only, so Python compiles these modules on
  every cold start.
- ``runtime/``: boto3 and its dependencies (botocore, s3transfer, urllib3, dateutil, six,
  jmespath), which the Lambda runtime provides compiled.

(The venv itself holds much more, moto, requests, Pillow..., so importing from the venv
would time imports that a deployed function never does.) Each sample is ``python -S`` in a new process, in the environment a
function sees (LAMBDA_TASK_ROOT and friends, so X-Ray and Powertools take their Lambda code
paths), timing one import with process_time: CPU time, which barely moves when other
processes compete for the cores. Modules are measured round-robin, median per module;
boto3 and the ingest handler (the pair with a target) get the most samples.

Two scenarios: "as deployed" (the asset compiled at each import) and "precompiled" (the
same with .pyc files written by a warm-up run, what a bundle compiled for the runtime's
Python would give). ``-X importtime`` of the ingest handler names the heaviest packages.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import ROOT, Row, summarize

TARGET = 1.5
BASELINE = "boto3"
TARGET_MODULE = "framesink_handlers.ingest"
HANDLERS_DIR = ROOT / "lambdas" / "framesink_handlers"
# As infra/bundling.py removes them (a test checks the two agree; importing infra here would
# start the CDK). Distribution names.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
SNIPPET = ("import time, importlib; t = time.process_time(); importlib.import_module({mod!r}); "
           "print(time.process_time() - t)")


def handler_modules() -> list[str]:
    """Every handler module that exists now (others may be added later)."""
    return sorted(
        f"framesink_handlers.{p.stem}" for p in HANDLERS_DIR.glob("*.py") if not p.stem.startswith("_")
    )


def _top_level_names(dist) -> set[str]:
    names = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".pth")) or first in ("..", "bin", "__pycache__"):
            continue
        names.add(first)
    return names


def _closure(requirements: list[str]) -> set:
    """Installed distributions needed by ``requirements`` (extras and markers honoured)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    todo = [Requirement(r) for r in requirements]
    seen: dict[str, object] = {}
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = dist
        for dep in dist.requires or []:
            dep_req = Requirement(dep)
            extras = req.extras or {""}
            if dep_req.marker is None or any(dep_req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dep_req)
    return set(seen.items())


def lambda_site(target: Path) -> tuple[Path, Path]:
    """(task, runtime) directories for a deployed function; see the module docstring."""
    task, runtime = target / "task", target / "runtime"
    task.mkdir()
    runtime.mkdir()
    roots = [line.split("#")[0].strip() for line in (ROOT / "lambdas" / "requirements.txt").read_text().splitlines()]
    no_pyc = shutil.ignore_patterns("__pycache__", "*.pyc")
    for key, dist in sorted(_closure([r for r in roots if r] + ["boto3"])):
        for name in _top_level_names(dist):
            source = Path(dist.locate_file(name))
            if not source.exists():
                continue
            if key in RUNTIME_PROVIDED:
                (runtime / name).symlink_to(source)
            elif source.is_dir():
                shutil.copytree(source, task / name, ignore=no_pyc, dirs_exist_ok=True)
            elif source.suffix == ".py":
                shutil.copy2(source, task / name)
    for package in ("framesink_core", "framesink_handlers"):
        shutil.copytree(ROOT / "lambdas" / package, task / package, ignore=no_pyc)
    return task, runtime


def lambda_env(task: Path, runtime: Path, compiled: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POWERTOOLS_", "FRAMESINK_", "AWS_", "PYTHON", "LAMBDA_"))}
    env.update({
        # What the Lambda runtime sets (the parts the imported libraries look at).
        "LAMBDA_TASK_ROOT": str(task),
        "AWS_LAMBDA_FUNCTION_NAME": "framesink-bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        # What the stack sets (infra/functions.py): Powertools names, framesink's names.
        "POWERTOOLS_SERVICE_NAME": "framesink",
        "POWERTOOLS_METRICS_NAMESPACE": "framesink",
        "FRAMESINK_BUCKET": "bench-bucket",
        "FRAMESINK_TABLE": "bench-table",
        "BENCH_SYS_PATH": f"{task}{os.pathsep}{runtime}",
    })
    if not compiled:
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # /var/task is read-only: nothing is cached
    return env


def python(env: dict[str, str], *flags: str) -> list[str]:
    """The interpreter with only the stdlib, then the task and runtime directories (-S: no venv)."""
    return [sys.executable, "-S", *flags, "-c",
            "import os, sys; sys.path[:0] = os.environ['BENCH_SYS_PATH'].split(os.pathsep); "]


def time_import(module: str, env: dict[str, str]) -> float:
    cmd = python(env)
    cmd[-1] += SNIPPET.format(mod=module)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1]) * 1000


def heaviest_imports(module: str, env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by the sum of their modules' own import time (ms), from ``-X importtime``."""
    cmd = python(env, "-X", "importtime")
    cmd[-1] += f"import {module}"
    err = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
    packages: dict[str, float] = {}
    for line in err.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        package = "(stdlib)" if package in sys.stdlib_module_names else package
        packages[package] = packages.get(package, 0.0) + int(parts[0]) / 1000
    return [(name, round(ms, 1)) for name, ms in sorted(packages.items(), key=lambda kv: -kv[1])[:top]]


def _sample(modules: list[str], env: dict[str, str], runs: int, others: int) -> tuple[dict, dict]:
    """``runs`` samples of boto3 and the ingest handler (the target pair), ``others`` of the
    rest; round robin, the order reversed every other round. Also each module's ratio to the
    boto3 sample of the same round: neighbours in time share the machine's mood, so the
    median of these paired ratios moves less than the ratio of two medians."""
    samples: dict[str, list[float]] = {m: [] for m in modules}
    paired: dict[str, list[float]] = {m: [] for m in modules}
    for r in range(runs):
        this_round = [m for m in modules if m in (BASELINE, TARGET_MODULE) or r < others]
        times = {}
        for module in this_round if r % 2 == 0 else reversed(this_round):
            times[module] = time_import(module, env)
            samples[module].append(times[module])
        for module, ms in times.items():
            paired[module].append(ms / times[BASELINE])
    return samples, paired


def run(quick: bool = False) -> tuple[list[Row], dict]:
    runs, others = (3, 2) if quick else (11, 3)
    modules = [BASELINE, *handler_modules()]
    rows, details = [], {"runs": runs, "others": others}
    with tempfile.TemporaryDirectory(prefix="framesink-coldstart-") as tmp:
        task, runtime = lambda_site(Path(tmp))
        for scenario, compiled in (("as deployed", False), ("precompiled", True)):
            env = lambda_env(task, runtime, compiled)
            if compiled:
                for module in modules:  # the warm-up writes the .pyc files
                    time_import(module, env)
            samples, paired = _sample(modules, env, runs, others)
            base = statistics.median(samples[BASELINE])
            for module in modules[1:]:
                name = module.rsplit(".", 1)[1]
                rows.append(Row(
                    "coldstart", f"import {name} handler ({scenario})", statistics.median(samples[module]), "ms",
                    baseline=base, baseline_name="import boto3",
                    target=TARGET if module == TARGET_MODULE else None,
                    note=f"CPU time, median of {len(samples[module])}; ratio: median of per-round ratios",
                    paired_ratio=statistics.median(paired[module]),
                ))
            details[scenario] = {
                "samples_ms": {m: summarize(s) for m, s in samples.items()},
                "paired_ratios": {m: summarize(r) for m, r in paired.items() if m != BASELINE},
                "ingest_heaviest_packages_ms": heaviest_imports("framesink_handlers.ingest", env),
            }
    return rows, details


if __name__ == "__main__":
    import json

    result_rows, result_details = run(quick="--quick" in sys.argv)
    for row in result_rows:
        print(f"{row.name}: {row.value:.0f} ms vs {row.baseline:.0f} ms = {row.ratio:.2f}x")
    print(json.dumps({k: v.get("ingest_heaviest_packages_ms") if isinstance(v, dict) else v
                      for k, v in result_details.items()}, indent=2))
