"""`framesink receive` as a real process against a moto server that outlives it: SIGTERM in
the middle of three streams loses no frame the receiver read.

"Acknowledged" here means read from the socket: Recall gets no per-message reply, so the
guarantee is that every message the receiver took off a connection is in S3 (or counted
failed) before it exits, and each connection was closed with 1001 so Recall reconnects.
Messages still in flight on the network when the close frame went out were never read and
are not counted; Recall loses those in any reconnect, as it would with API Gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from framesink.local_aws import provision
from framesink.synthetic import frame_message, make_png
from framesink_core.settings import Settings

REGION = "us-east-1"
TOKEN = "receiver-process-token-0123456789"
GUARD = 60  # seconds: hang guard only
VENV_BIN = Path(sys.executable).parent
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


class Moto:
    """A moto server on 127.0.0.1 with a provisioned framesink bucket, table and token."""

    def __init__(self):
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
        self.server.stop()


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


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


def receiver_cli(moto: Moto) -> ReceiverProcess:
    return ReceiverProcess([str(VENV_BIN / "framesink"), "receive", "--host", "127.0.0.1", "--port", "0"],
                           moto.env({"POWERTOOLS_SERVICE_NAME": "framesink-receiver-test"}))


def test_sigterm_mid_stream_stores_every_frame_read_and_closes_with_1001(moto):
    rec = f"rec-{uuid.uuid4().hex[:10]}"
    pngs = [make_png(64, 48, seed=s, detailed=False) for s in range(4)]
    streams = 3
    receiver = receiver_cli(moto)
    try:
        port = receiver.wait_ready()
        sent = [0] * streams
        close_codes: list[int | None] = [None] * streams

        async def stream(pid: int):
            async with connect(f"ws://127.0.0.1:{port}/?token={TOKEN}", compression=None) as ws:
                try:
                    for i in range(100_000):  # until the receiver closes the connection
                        await ws.send(frame_message(pngs[i % 4], recording_id=rec, participant_id=pid,
                                                    relative=i * 0.5))
                        sent[pid] += 1
                        await asyncio.sleep(0.01)  # pacing, like a bot's 2 fps (faster)
                except ConnectionClosed as closed:
                    close_codes[pid] = closed.rcvd.code if closed.rcvd else None

        async def scenario():
            tasks = [asyncio.create_task(stream(pid)) for pid in range(streams)]
            for _ in range(GUARD * 20):  # mid-stream: once some frames of every stream are stored
                keys = await asyncio.to_thread(moto.keys, f"recordings/{rec}/")
                if all(sum(f"/participants/{pid}/" in k for k in keys) >= 3 for pid in range(streams)):
                    break
                await asyncio.sleep(0.05)
            receiver.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), GUARD)

        asyncio.run(scenario())
        assert receiver.proc.wait(GUARD) == 0
    finally:
        receiver.close()

    summary = receiver.summary()
    assert close_codes == [1001] * streams
    assert summary["outcomes"] == {"stored": summary["received"]}  # every message read was stored
    assert summary["closes"] == {"1001": streams}
    total = 0
    for pid in range(streams):
        keys = moto.keys(f"recordings/{rec}/participants/{pid}/")
        stored = sorted(int(Path(k).stem) for k in keys)
        # Read in order, all stored: exactly the first len(stored) frames, no gap.
        assert stored == [i * 500 for i in range(len(stored))]
        assert 3 <= len(stored) <= sent[pid]
        total += len(stored)
    assert total == summary["received"]
    assert receiver.logs("receiver stopped")  # the structured log line, besides the summary


def test_cli_health_check_and_refusal_in_a_process(moto):
    """`framesink receive` answers the ALB health check and refuses a wrong token with 403."""
    import http.client

    from websockets.exceptions import InvalidStatus

    receiver = receiver_cli(moto)
    try:
        port = receiver.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        health = conn.getresponse()
        assert (health.status, health.read()) == (200, b"ok\n")
        conn.close()

        async def refused() -> int:
            with pytest.raises(InvalidStatus) as exc:
                async with connect(f"ws://127.0.0.1:{port}/?token=wrong"):
                    pass
            return exc.value.response.status_code

        assert asyncio.run(refused()) == 403
        receiver.proc.send_signal(signal.SIGTERM)
        assert receiver.proc.wait(GUARD) == 0
    finally:
        receiver.close()
    assert receiver.summary()["connections"]["refused"] == {"403": 1}
    assert all(TOKEN not in line and "token=wrong" not in line for line in receiver.lines)


def test_missing_settings_is_a_clear_error():
    result = subprocess.run([str(VENV_BIN / "framesink"), "receive", "--port", "0"], capture_output=True, text=True,
                            env={"PATH": os.environ.get("PATH", ""), **FAKE_AWS}, timeout=GUARD)
    assert result.returncode == 2
    assert "FRAMESINK_BUCKET and FRAMESINK_TABLE must be set" in result.stderr

