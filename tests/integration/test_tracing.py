"""No secrets in traces: the handlers run with X-Ray tracing on, as in Lambda, and every trace
document the SDK emits is read back from a UDP "daemon" on loopback.

The handlers run in a subprocess (the X-Ray recorder and Powertools' Tracer are process-wide
and configured at import) against a moto server and the fake Recall over HTTP: create-bot
(whose answer holds the meeting URL with its passcode), $connect with the token, a frame,
and the query API (whose answer holds presigned URLs). None of the token, the minted bot
token, the meeting URL or passcode, the Recall API key or a presigned signature may appear
in any document; the traces themselves must be there (so the test cannot pass vacuously).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_recall import API_KEY, fake_recall  # noqa: F401  (fixture)
from procs import FAKE_AWS, GUARD, TOKEN, Moto

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MEETING = "https://zoom.us/j/98765432100?pwd=Sup3rSecretPasscode"
SCRIPT = r"""
import json, sys
from conftest import LambdaContext, api_event, ws_event
from fake_recall import http_event
from framesink.synthetic import frame_message, make_png
from framesink_handlers import connect, create_bot, ingest, query

meeting, token, rec = sys.argv[1:4]
ctx = LambdaContext()
out = {}
out["create"] = create_bot.handler(http_event("POST", "/bots", {"meeting_url": meeting}), ctx)
out["connect"] = connect.handler(ws_event("$connect", "conn-trace", query={"token": token}), ctx)
png = make_png(32, 24, seed=1, detailed=False)
out["ingest"] = ingest.handler(ws_event("$default", "conn-trace", body=frame_message(
    png, recording_id=rec, participant_id=1, relative=1.0)), ctx)
out["query"] = query.handler(api_event(f"/recordings/{rec}/frames"), ctx)
print(json.dumps(out))
"""


class XRayDaemon:
    """A UDP listener on loopback that keeps every segment document sent to it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.documents: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            header, _, body = data.decode().partition("\n")
            assert json.loads(header)["format"] == "json"
            self.documents.append(body)

    def stop(self):
        self._stop.set()
        self._thread.join(GUARD)
        self.sock.close()


def test_no_token_meeting_url_api_key_or_presigned_url_reaches_a_trace(fake_recall):  # noqa: F811
    moto = Moto()
    daemon = XRayDaemon()
    try:
        secrets = moto.client("secretsmanager")
        key_arn = secrets.create_secret(Name="trace/recall-key", SecretString=API_KEY)["ARN"]
        env = {
            **moto.env(), **FAKE_AWS, "AWS_ENDPOINT_URL": moto.endpoint_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), str(ROOT / "lambdas")]),
            # What Lambda sets: the X-Ray SDK streams every subsegment to the daemon.
            "LAMBDA_TASK_ROOT": str(ROOT / "lambdas"), "AWS_LAMBDA_FUNCTION_NAME": "framesink-trace-test",
            "_X_AMZN_TRACE_ID": "Root=1-67890abc-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": daemon.address, "POWERTOOLS_TRACE_DISABLED": "false",
            "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "framesink-trace",
            "FRAMESINK_RECALL_API_KEY_SECRET_ID": key_arn, "FRAMESINK_RECALL_BASE_URL": fake_recall.url,
            "FRAMESINK_WS_URL": "wss://d111111abcdef8.cloudfront.net/", "FRAMESINK_PRESIGN_EXPIRY_SECONDS": "600",
        }
        result = subprocess.run([sys.executable, "-c", SCRIPT, MEETING, TOKEN, "rec-trace"], env=env,
                                capture_output=True, text=True, timeout=GUARD, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        answers = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        daemon.stop()
        moto.stop()

    # The answers do hold what must not reach a trace: the test would see it if it did.
    assert answers["create"]["statusCode"] == 201 and MEETING in json.dumps(answers["create"])
    assert answers["connect"]["statusCode"] == 200 and answers["ingest"]["body"] == "stored"
    frames = json.loads(answers["query"]["body"])["frames"]
    assert frames and "X-Amz-Signature=" in frames[0]["url"]
    signature = parse_qs(urlsplit(frames[0]["url"]).query)["X-Amz-Signature"][0]
    sent_url = fake_recall.posts()[-1].body["recording_config"]["realtime_endpoints"][0]["url"]
    bot_token = parse_qs(urlsplit(sent_url).query)["token"][0]

    documents = daemon.documents
    traces = "\n".join(documents)
    # Traces were emitted: each handler's subsegment, the query route's, and the AWS calls.
    names = {json.loads(d).get("name") for d in documents}
    assert {"## handler", "## framesink_handlers.query.frames", "s3", "dynamodb", "secretsmanager"} <= names, names
    assert len([d for d in documents if json.loads(d).get("name") == "## handler"]) == 4  # one per invocation
    for secret in (TOKEN, bot_token, MEETING, "Sup3rSecretPasscode", API_KEY, signature, "X-Amz-Signature"):
        assert secret not in traces, secret
