"""`--local` from anywhere (framesink/target.py): --state-file, $FRAMESINK_STATE_FILE, then
.framesink/local.json here or in any directory above, then the per-user copy; `framesink local`
refuses to replace the state file of a stack that still answers; `framesink env --local`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framesink.cli import CliError
from framesink.commands.local import refuse_a_live_stack
from framesink.local import LocalConfig, background_stack

GUARD = 120
FRAMESINK = [sys.executable, "-m", "framesink"]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    state_file = tmp_path_factory.mktemp("stack") / "local.json"
    with background_stack(LocalConfig.isolated("found", state_file=state_file), timeout=GUARD) as stack:
        yield stack


def run(args, cwd: Path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "FRAMESINK_STATE_FILE"}
    return subprocess.run([*FRAMESINK, *args], cwd=cwd, capture_output=True, text=True, timeout=GUARD,
                          env={**clean, "XDG_STATE_HOME": str(cwd / "xdg"), **env})


def test_a_project_state_file_is_found_from_any_directory_below_it(local, tmp_path):
    project = tmp_path / "project"
    (project / ".framesink").mkdir(parents=True)
    shutil.copy(local.config.state_file, project / ".framesink" / "local.json")
    deep = project / "analysis" / "notebooks"
    deep.mkdir(parents=True)
    found = run(["recordings", "--local"], cwd=deep)
    assert found.returncode == 0, found.stderr
    assert "recording" in found.stdout


def test_the_environment_and_the_per_user_copy_are_found_too(local, tmp_path):
    by_env = run(["recordings", "--local"], cwd=tmp_path, FRAMESINK_STATE_FILE=str(local.config.state_file))
    assert by_env.returncode == 0, by_env.stderr
    copy = tmp_path / "xdg" / "framesink" / "local.json"
    copy.parent.mkdir(parents=True)
    shutil.copy(local.config.state_file, copy)
    by_copy = run(["recordings", "--local"], cwd=tmp_path)
    assert by_copy.returncode == 0, by_copy.stderr


def test_no_state_anywhere_says_where_it_looked(tmp_path):
    missing = run(["recordings", "--local"], cwd=tmp_path)
    assert missing.returncode == 1
    assert "no local stack found" in missing.stderr and "Traceback" not in missing.stderr
    assert ".framesink/local.json here and in every directory above" in missing.stderr


def test_a_second_local_refuses_to_replace_a_live_stacks_state_file(local, tmp_path):
    second = run(["local", "--port", "0", "--state-file", str(local.config.state_file)], cwd=tmp_path)
    assert second.returncode == 1
    assert "is still running with state file" in second.stderr
    assert json.loads(local.config.state_file.read_text())["token"] == local.state["token"]  # untouched
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**local.state, "endpoint_url": "http://127.0.0.1:9"}))
    refuse_a_live_stack(stale)  # nothing answers there: replacing it is fine
    with pytest.raises(CliError):
        refuse_a_live_stack(local.config.state_file)


def test_env_local_exports_what_boto3_and_the_cli_need(local, tmp_path):
    shown = run(["env", "--local", "--state-file", str(local.config.state_file)], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "export FRAMESINK_BUCKET=" in shown.stdout and "export AWS_ENDPOINT_URL=" in shown.stdout
    script = (f'eval "$({" ".join(FRAMESINK)} env --local --state-file {local.config.state_file})" && '
              f'{sys.executable} -c "import boto3, os; '
              "print(os.environ['FRAMESINK_BUCKET'] in [b['Name'] for b in boto3.client('s3').list_buckets()['Buckets']])\" "
              f"&& {' '.join(FRAMESINK)} recordings --local")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=GUARD,
                            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "True"
