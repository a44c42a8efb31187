"""The receiver image without Docker: the Dockerfile is parsed and checked (COPY sources exist
and survive .dockerignore, non-root USER, slim Python base), and its CMD is run as a local
process with the image's ENV plus the task definition's environment, against a moto server,
with every package the image does not install made unimportable."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shlex
import signal
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from framesink.synthetic import frame_message, make_png
from framesink_core.shared import schema
from procs import GUARD, TOKEN, Moto, ReceiverProcess, _json

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "container" / "Dockerfile"
REQUIREMENTS = ROOT / "container" / "requirements.txt"
# What the image copies, and where its PYTHONPATH (/app/lambdas) finds it: the core and the
# receiver adapter, no CLI and no Lambda handlers.
LOCAL_PACKAGES = {"framesink_core": ROOT / "lambdas", "framesink_receiver": ROOT / "lambdas"}


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped, continuation lines joined."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for args in of("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def cmd() -> list[str]:
    (args,) = of("CMD")
    return json.loads(args)  # exec form: a JSON array, so SIGTERM reaches Python, not a shell


def allowed_distributions() -> set[str]:
    """The image's pinned requirements and everything they require, by distribution name."""
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    todo = [re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0] for line in REQUIREMENTS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    seen: set[str] = set()
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for requirement in metadata.requires(name) or []:
            if "extra ==" not in requirement:  # optional extras are not installed
                todo.append(re.split(r"[=<>!~\[; (]", requirement, maxsplit=1)[0])
    return seen


def allowed_modules() -> set[str]:
    dists = allowed_distributions()
    modules = {m for m, owners in metadata.packages_distributions().items()
               if any(re.sub(r"[-_.]+", "-", o).lower() in dists for o in owners)}
    return modules | set(LOCAL_PACKAGES)


# Runs `python -m <module>` the way the image would: only the stdlib, the two packages (as the image's PYTHONPATH has them) and the image's requirements can be
# imported; an import of anything else fails as it would in the container.
IMAGE_PYTHON = """
import importlib.abc, json, runpy, sys
allowed = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in allowed or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"No module named {name!r} (not installed in the image)", name=name)
sys.meta_path.insert(0, Block())
mode, target = sys.argv[2], sys.argv[3]
sys.argv = [target, *sys.argv[4:]]
if mode == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:  # "-c": code, as `python -c` would run it
    exec(target)
"""


def image_argv(command: list[str]) -> list[str]:
    assert command[0] == "python", command
    return [sys.executable, "-c", IMAGE_PYTHON, json.dumps(sorted(allowed_modules())), *command[1:]]


# --- the Dockerfile --------------------------------------------------------------------------


def test_base_image_is_slim_python_3_12_or_3_13_from_ecr_public():
    (base,) = of("FROM")
    # ECR Public's mirror of Docker Hub's official image: CodeBuild pulls it without Docker
    # Hub's anonymous rate limit.
    assert re.fullmatch(r"public\.ecr\.aws/docker/library/python:3\.1[23]-slim(-\w+)?", base), base


def test_runs_as_a_non_root_user():
    users = of("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Nothing after the last USER switches back.
    kinds = [kw for kw, _ in instructions()]
    assert "USER" not in kinds[len(kinds) - kinds[::-1].index("USER"):]


def test_every_copy_source_exists_and_is_in_the_build_context():
    from aws_cdk import IgnoreStrategy

    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    ignore = IgnoreStrategy.docker(str(ROOT), patterns)  # what CDK stages for the image asset
    copies = of("COPY")
    assert copies
    for args in copies:
        parts = shlex.split(args)
        assert not any(p.startswith("--from") for p in parts)
        sources = [p for p in parts[:-1] if not p.startswith("--")]
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY source {source} does not exist"
            files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
            assert files and not [f for f in files if ignore.ignores(str(f))], f"{source} is excluded by .dockerignore"
    for excluded in (".venv", "node_modules", "cdk.out", "tests", "lambdas/framesink_handlers", "framesink"):
        assert ignore.ignores(str(ROOT / excluded / "x.py")), f"{excluded} would be sent to Docker"


def test_requirements_are_pinned_and_have_no_pillow():
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[\w.]+", line) for line in lines), lines
    assert not any(line.lower().startswith("pillow") for line in lines)
    for line in lines:  # the versions this environment tests with
        name, _, version = line.partition("==")
        assert metadata.version(name.split("[")[0]) == version


@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_the_image_requirements_install_from_wheels_on_both_task_platforms(arch):
    """container/requirements.txt resolves to binary wheels for the image's Python (3.13, glibc
    2.36 on Debian slim) on arm64 and x86_64: the image build in CodeBuild never compiles
    anything (obstore, orjson and pybase64 are native; obstore's aarch64 wheel is
    manylinux_2_24, which a manylinux2014-only resolve would miss)."""
    python = re.search(r"python:(\d+\.\d+)", DOCKERFILE.read_text())[1]
    platforms = [f"--platform=manylinux{tag}_{arch}" for tag in ("2014", "_2_24", "_2_28", "_2_34")]
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
         "--target", "/nonexistent-dry-run", "--implementation", "cp", "--python-version", python,
         "--only-binary=:all:", *platforms, "-r", str(REQUIREMENTS)],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_receiver_imports_nothing_the_image_lacks():
    probe = "import framesink_receiver; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run(image_argv(["python", "-c", probe]), capture_output=True, text=True, timeout=GUARD,
                            env=image_env())
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & {"PIL", "moto", "aws_cdk", "framesink", "framesink_handlers", "av"}


# --- the CMD, run ---------------------------------------------------------------------------


def image_env(extra: dict | None = None) -> dict[str, str]:
    env = dockerfile_env()
    # The image's /app paths, here.
    env["PYTHONPATH"] = ":".join(sorted({str(p) for p in LOCAL_PACKAGES.values()}))
    return {"PATH": "/usr/bin:/bin", **env, **(extra or {})}


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


def test_the_spool_directory_is_the_users_and_the_task_definitions_mount():
    """The root filesystem is read-only; the receiver writes only its spool, a volume the task
    definition mounts at the path the image creates for the receiver's user (ECS bind mounts are
    root-owned unless the image has the path: "Use bind mounts with Amazon ECS")."""
    from framesink_core.shared.settings import Settings
    from infra.container_ingress import SPOOL_PATH, task_environment

    user = of("USER")[-1].split(":")[0]
    run = " ".join(of("RUN"))
    assert f"mkdir -p {SPOOL_PATH}" in run and f"chown {user}:{user} {SPOOL_PATH}" in run
    assert json.loads(of("VOLUME")[-1]) == [SPOOL_PATH]
    env = task_environment(Settings(bucket="b", table="t"), service_name="x")
    assert dockerfile_env()["FRAMESINK_SPOOL_DIR"] == env["FRAMESINK_SPOOL_DIR"] == SPOOL_PATH


def test_cmd_with_the_task_environment_serves_health_and_stores_a_frame(moto, tmp_path):
    from infra.container_ingress import CONTAINER_PORT, task_environment

    task_env = task_environment(moto.settings, service_name="framesink-image-test")
    assert dockerfile_env()["FRAMESINK_RECEIVER_PORT"] == task_env["FRAMESINK_RECEIVER_PORT"] == str(CONTAINER_PORT)
    env = image_env({
        **task_env,
        # The only changes for a laptop: loopback and a free port instead of 0.0.0.0:8080,
        # a temp dir for the task's spool volume, and moto instead of AWS.
        "FRAMESINK_RECEIVER_HOST": "127.0.0.1", "FRAMESINK_RECEIVER_PORT": "0",
        "FRAMESINK_SPOOL_DIR": str(tmp_path / "spool"),
        **{k: v for k, v in moto.env().items() if k.startswith("AWS_")},
    })
    receiver = ReceiverProcess(image_argv(cmd()), env)
    rec = f"rec-{uuid.uuid4().hex[:10]}"
    png = make_png(64, 48, seed=5, detailed=False)
    try:
        port = receiver.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        health = conn.getresponse()
        status = (health.status, health.read())
        conn.close()

        async def send():
            async with connect(f"ws://127.0.0.1:{port}/?token={TOKEN}") as ws:
                await ws.send(frame_message(png, recording_id=rec, participant_id=3, relative=2.0))

        asyncio.run(asyncio.wait_for(send(), GUARD))
        receiver.proc.send_signal(signal.SIGTERM)
        assert receiver.proc.wait(GUARD) == 0
    finally:
        receiver.close()
    assert status == (200, b"ok\n")
    assert receiver.summary()["outcomes"] == {"stored": 1}
    body = moto.s3.get_object(Bucket=moto.bucket, Key=schema.frame_key(rec, "3", "webcam", 2000))["Body"].read()
    assert body == png
    # Logs carry the task's service name (so the stack's alarms see the container's metrics).
    logs = [doc for doc in map(_json, receiver.lines) if "level" in doc]
    assert logs and {doc.get("service") for doc in logs} == {"framesink-image-test"}

