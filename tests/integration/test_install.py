"""`pip install '.[all]'` into a fresh venv gives a working `framesink`: the command exists,
says its version, answers --help, turns a bad argument into one line, and runs the demo (the
local stack, a simulated meeting, what was stored) with nothing but what the package declares.
`pip install .` alone is the CLI for a deployed stack, without moto, PyAV or obstore."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GUARD = 900  # seconds: pip downloads on a cold cache; a hang guard only


def fresh_install(home: Path, spec: str) -> Path:
    venv.EnvBuilder(with_pip=True).create(home)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", spec],
                            capture_output=True, text=True, timeout=GUARD, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return home / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install '.[all]'`: the local stack and the video exporter too."""
    return fresh_install(tmp_path_factory.mktemp("fresh-venv"), f"{ROOT}[all]")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """`pip install .`: the CLI for a deployed stack, without the lab."""
    return fresh_install(tmp_path_factory.mktemp("fresh-venv-base"), str(ROOT))


def test_the_base_install_is_the_cli_without_the_lab_and_says_what_the_rest_needs(base, tmp_path):
    listed = subprocess.run([str(base / "python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, timeout=GUARD)
    names = {p["name"].lower() for p in __import__("json").loads(listed.stdout)}
    assert not names & {"moto", "av", "obstore", "flask"} and {"boto3", "websockets", "pillow"} <= names
    assert run(base, "--help").returncode == 0 and run(base, "frames", "--help").returncode == 0
    for args, extra in ((["local", "--port", "0"], "local"), (["receive"], "local"), (["demo"], "all"),
                        (["export", "--recording", "r", "--all", "--video", "--out", str(tmp_path)], "video")):
        result = run(base, *args, cwd=tmp_path)
        assert result.returncode == 1 and f"pip install 'framesink[{extra}]'" in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def run(bin_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # A clean environment: nothing from this venv or the source tree can leak in.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd or bin_dir)}
    return subprocess.run([str(bin_dir / "framesink"), *args], capture_output=True, text=True, timeout=GUARD,
                          env=env, cwd=cwd or bin_dir)


def test_the_command_is_installed_with_its_version(installed):
    result = run(installed, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"framesink {metadata.version('framesink')}"
    help_text = run(installed, "--help").stdout
    for command in ("local", "simulate", "demo", "frames", "export", "receive"):
        assert command in help_text


def test_the_packages_import_from_the_install_not_the_source_tree(installed):
    probe = ("import framesink, framesink_core, framesink_handlers, framesink_receiver, json; "
             "print(json.dumps([m.__file__ for m in (framesink, framesink_core, framesink_handlers, framesink_receiver)]))")
    result = subprocess.run([str(installed / "python"), "-c", probe], capture_output=True, text=True, timeout=GUARD,
                            env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert result.returncode == 0, result.stderr
    assert all("site-packages" in path and str(ROOT) not in path for path in __import__("json").loads(result.stdout))


def test_a_bad_argument_is_one_line_and_exit_1(installed, tmp_path):
    result = run(installed, "frames", "--local", "--recording", "r", "--state-file", str(tmp_path / "none.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "framesink local" in result.stderr


def test_the_demo_runs_from_the_installed_package(installed, tmp_path):
    result = run(installed, "demo", "--seconds", "2", "--participants", "2", "--burst-seconds", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "every frame sent was stored exactly once" in result.stdout
    assert sys.executable not in result.stdout
