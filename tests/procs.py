"""Processes for the tests: a moto server over HTTP with a provisioned framesink stack, and
the receiver as a subprocess (`framesink receive` or the container's CMD)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3

from framesink.local.aws import provision
from framesink_core.shared.settings import Settings

REGION = "us-east-1"
TOKEN = "receiver-process-token-0123456789"
GUARD = 60  # seconds: hang guard only
VENV_BIN = Path(sys.executable).parent
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


class Moto:
    """A moto server on 127.0.0.1 with a provisioned framesink bucket, table and token.

    ``own_process``: moto in a process of its own (``moto_server``), for tests whose clients in
    this process must not wait for the GIL behind moto's request handling (a saturated run's
    pongs)."""

    def __init__(self, own_process: bool = False):
        self.process = None
        if own_process:
            port = _free_port()
            self.process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.endpoint_url = f"http://127.0.0.1:{port}"
            _wait_for_port(port, self.process)
        else:
            from moto.server import ThreadedMotoServer

            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self.server.start()
            host, port = self.server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
        suffix = uuid.uuid4().hex[:8]
        self.bucket, self.table = f"proc-{suffix}", f"proc-{suffix}"
        clients = {name: self.client(name) for name in ("s3", "dynamodb", "secretsmanager")}
        secret_env = provision(**clients, bucket=self.bucket, table=self.table, token=TOKEN,
                               token_secret_name=f"proc/{suffix}")
        self.settings = Settings(bucket=self.bucket, table=self.table,
                                 token_secret_id=secret_env["FRAMESINK_TOKEN_SECRET_ID"])
        self.s3 = clients["s3"]

    def client(self, name: str):
        return boto3.client(name, endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing")

    def env(self, extra: dict | None = None) -> dict[str, str]:
        """What a process needs to reach this moto server: settings, endpoint, fake credentials."""
        return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                **self.settings.as_env(), **FAKE_AWS, "AWS_ENDPOINT_URL": self.endpoint_url, **(extra or {})}

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(GUARD)
        else:
            self.server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen) -> None:
    import socket
    import time

    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start listening")


class ReceiverProcess:
    """A receiver subprocess; stdout is drained by a thread (JSON lines: logs, EMF, ready/stopped)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.port: int | None = None
        self.health_port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            doc = _json(line)
            if doc.get("framesink_receiver") == "ready":
                self.port, self.health_port = doc["port"], doc["health_port"]
                self.ready.set()
        self.ready.set()  # exited: wake the waiter

    def wait_ready(self) -> int:
        assert self.ready.wait(GUARD), "receiver never became ready"
        assert self.port is not None, f"receiver exited: {self.proc.wait(GUARD)}\n{self.proc.stderr.read()}"
        return self.port

    def summary(self) -> dict:
        docs = [_json(line) for line in self.lines]
        return next(d for d in docs if d.get("framesink_receiver") == "stopped")

    def logs(self, message: str) -> list[dict]:
        return [d for d in map(_json, self.lines) if d.get("message") == message]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(GUARD)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def _json(line: str) -> dict:
    try:
        doc = json.loads(line)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
