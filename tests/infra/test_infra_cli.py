"""`cdk synth` through the pinned CDK CLI, offline and without AWS credentials.

Every outbound request the CLI (or anything it starts) makes goes to a recording proxy on
127.0.0.1, so "offline" is checked, not assumed: notices, version check, telemetry and
credential lookups must all stay off.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra import build
from infra.bundling import dependencies_dir, pip_platform, python_version
from infra.functions import RUNTIME
from infra.settings import InfraSettings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"


class RecordingProxy(ThreadingHTTPServer):
    """An HTTP(S) proxy that forwards nothing: it records each request and answers 403."""

    def __init__(self):
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    def _refuse(self):
        self.server.requests.append(self.requestline)
        self.send_error(403, "offline test: no outbound requests")

    do_CONNECT = do_GET = do_POST = do_PUT = do_HEAD = _refuse

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def proxy():
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def without_resource_metadata(template: dict) -> dict:
    """Resources minus CDK's per-resource metadata (paths differ between CLI and library)."""
    return {k: {p: v for p, v in r.items() if p != "Metadata"} for k, r in template["Resources"].items()}


@pytest.mark.skipif(not CDK.exists(), reason="the pinned CDK CLI is installed by `make test` (npm ci)")
def test_cdk_cli_synth_is_offline_credential_free_and_matches_the_library(tmp_path, proxy):
    # The Lambda dependencies come from PyPI once per requirements change; warm that cache
    # here (online) so the CLI's synth below may use no network at all.
    settings = InfraSettings()
    dependencies_dir(pip_platform(settings.architecture), python_version(RUNTIME))

    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        CDK_DISABLE_VERSION_CHECK="1",
        CDK_DISABLE_CLI_TELEMETRY="1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        HTTPS_PROXY=proxy_url, HTTP_PROXY=proxy_url, https_proxy=proxy_url, http_proxy=proxy_url,
        NO_PROXY="", no_proxy="",
    )  # fmt: skip
    out = tmp_path / "cdk.out"
    # -c overrides cdk.json, as a string: the same path `cdk deploy -c ...` takes.
    result = subprocess.run(
        [str(CDK), "synth", "--quiet", "-o", str(out), "-c", "frameExpiryDays=7"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert proxy.requests == []
    cli_template = json.loads((out / "Framesink.template.json").read_text())

    app, stack = build({"frameExpiryDays": "7"}, outdir=str(tmp_path / "library.out"))
    library_template = app.synth().get_stack_artifact(stack.artifact_id).template
    assert without_resource_metadata(cli_template) == without_resource_metadata(library_template)
    assert cli_template["Outputs"] == library_template["Outputs"]
    rules = [
        r["Properties"]["LifecycleConfiguration"]["Rules"]
        for r in cli_template["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket" and "LoggingConfiguration" in r["Properties"]
    ]
    assert rules == [[{"Id": "expire-frames", "Prefix": "recordings/", "ExpirationInDays": 7, "Status": "Enabled"}]]
