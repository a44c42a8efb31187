"""Cold start: import time of each Lambda handler module in a fresh interpreter vs ``import boto3``.

Each sample is a new ``python -c`` process that times one import with perf_counter, in the
environment a deployed function sees (LAMBDA_TASK_ROOT and friends: the X-Ray SDK and
Powertools take their Lambda code paths, e.g. X-Ray's local sampler instead of a client for
the X-Ray daemon). Modules are measured round-robin, so a noisy moment hits them all; the
median per module is compared with the median of ``import boto3``, which every handler needs
anyway. ``-X importtime`` of the ingest handler names the heaviest imports.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import ROOT, Row, summarize

TARGET = 1.5
BASELINE = "boto3"
HANDLERS_DIR = ROOT / "lambdas" / "framesink_handlers"
# CPU time (process_time), not wall time: an import is CPU-bound once files are in the page
# cache, and CPU time barely moves when other processes compete for the two cores.
SNIPPET = "import time, importlib; t = time.process_time(); importlib.import_module({mod!r}); print(time.process_time() - t)"


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


def lambda_site(target: Path) -> Path:
    """A directory holding what a deployed function can import, linked from the venv.

    The Lambda asset is framesink_core + framesink_handlers + lambdas/requirements.txt with
    its dependencies, and the runtime adds boto3 with its own. The venv holds much more
    (moto, requests, Pillow...) and Powertools' Tracer patches whatever it finds installed,
    so importing from the venv would time imports a deployed function never does.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    roots = [line.split("#")[0].strip() for line in (ROOT / "lambdas" / "requirements.txt").read_text().splitlines()]
    todo = [Requirement(r) for r in roots if r] + [Requirement("boto3")]  # boto3: the runtime's
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        for name in _top_level_names(dist):
            source = Path(dist.locate_file(name))
            if source.exists() and not (target / name).exists():
                (target / name).symlink_to(source)
        for dep in dist.requires or []:
            dep_req = Requirement(dep)
            extras = req.extras or {""}
            if dep_req.marker is None or any(dep_req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dep_req)
    for package in ("framesink_core", "framesink_handlers"):
        (target / package).symlink_to(ROOT / "lambdas" / package)
    return target


def lambda_env(task_root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "FRAMESINK_", "AWS_"))}
    env.update({
        # What the Lambda runtime sets (the parts the imported libraries look at).
        "LAMBDA_TASK_ROOT": task_root,
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
    })
    return env


def python(env: dict[str, str]) -> list[str]:
    """The interpreter with only the stdlib and the Lambda site on sys.path (-S: no venv site)."""
    return [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {env['LAMBDA_TASK_ROOT']!r}); "]


def time_import(module: str, env: dict[str, str]) -> float:
    cmd = python(env)
    cmd[-1] += SNIPPET.format(mod=module)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1]) * 1000


def heaviest_imports(module: str, env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by the sum of their modules' own import time (ms), from ``-X importtime``."""
    cmd = python(env)
    cmd[-1] += f"import {module}"
    err = subprocess.run(cmd[:1] + ["-X", "importtime"] + cmd[1:], env=env, capture_output=True, text=True,
                         check=True).stderr
    packages: dict[str, float] = {}
    for line in err.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        if package not in sys.stdlib_module_names:
            packages[package] = packages.get(package, 0.0) + int(parts[0]) / 1000
        else:
            packages["(stdlib)"] = packages.get("(stdlib)", 0.0) + int(parts[0]) / 1000
    return [(name, round(ms, 1)) for name, ms in sorted(packages.items(), key=lambda kv: -kv[1])[:top]]


def run(quick: bool = False) -> tuple[list[Row], dict]:
    runs = 5 if quick else 9
    modules = [BASELINE, *handler_modules()]
    with tempfile.TemporaryDirectory(prefix="framesink-coldstart-") as task_root:
        lambda_site(Path(task_root))
        env = lambda_env(task_root)
        samples: dict[str, list[float]] = {m: [] for m in modules}
        for module in modules:  # untimed: writes any missing .pyc, so no sample pays for compiling
            time_import(module, env)
        for r in range(runs):
            order = modules if r % 2 == 0 else list(reversed(modules))
            for module in order:
                samples[module].append(time_import(module, env))
        heavy = heaviest_imports("framesink_handlers.ingest", env)
    base = statistics.median(samples[BASELINE])
    rows = []
    for module in modules[1:]:
        name = module.rsplit(".", 1)[1]
        rows.append(Row(
            "coldstart", f"import {name} handler", statistics.median(samples[module]), "ms",
            baseline=base, baseline_name="import boto3",
            target=TARGET if name == "ingest" else None, note=f"median of {runs} fresh processes",
        ))
    details = {
        "samples_ms": {m: summarize(s) for m, s in samples.items()},
        "ingest_heaviest_imports_ms": heavy,
    }
    return rows, details


if __name__ == "__main__":
    import json

    result_rows, result_details = run(quick=True)
    for row in result_rows:
        print(f"{row.name}: {row.value:.0f} ms vs {row.baseline:.0f} ms = {row.ratio:.2f}x")
    print(json.dumps(result_details, indent=2))
