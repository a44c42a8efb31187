"""`framesink create-bot` / `revoke-bot` end to end.

--local: a real `framesink local` stack (moto server + API Gateway WebSocket emulator on
loopback), the fake Recall over HTTP, and a real websocket opened with the token Recall was
given. Deployed: the CloudFormation output lookup (moto) and a SigV4-checking stand-in for the
HTTP API on loopback that hands the request to the create-bot handler.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from fake_recall import API_KEY, MEETING, bot_stack, fake_recall, http_event  # noqa: F401  (fixtures)
from framesink.cli import main
from framesink.synthetic import frame_message, make_png
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item


@pytest.fixture
def local_stack(tmp_path):
    """`framesink local` in a background event loop; its state file in tmp_path."""
    from framesink.local import LocalConfig, background_stack

    # moto's backend is process-wide: each stack gets its own names.
    name = f"framesink-{uuid.uuid4().hex[:8]}"
    config = LocalConfig(port=0, state_file=tmp_path / "local.json", bucket=name, table=name,
                         token_secret_name=f"{name}/connection-token")
    with background_stack(config, timeout=60) as stack:
        yield stack


def recall_url(fake_recall) -> str:
    return fake_recall.posts()[-1].body["recording_config"]["realtime_endpoints"][0]["url"]


def test_local_create_bot_streams_frames_as_the_bot_and_revoke_refuses_it(
    local_stack, fake_recall, monkeypatch, capsys
):
    monkeypatch.setenv("RECALL_API_KEY", API_KEY)
    state_file = str(local_stack.config.state_file)
    rc = main(["create-bot", "--local", "--state-file", state_file, "--recall-base-url", fake_recall.url,
               "--meeting-url", MEETING, "--bot-name", "Sink", "--metadata", "team=r", "run=7",
               "--events", "participant_events.join", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    answer = json.loads(out)
    [post] = fake_recall.posts()
    assert post.headers["Authorization"] == f"Token {API_KEY}"
    assert post.body["metadata"] == {"team": "r", "run": "7"} and post.body["bot_name"] == "Sink"
    url = recall_url(fake_recall)
    bot_token = parse_qs(urlsplit(url).query)["token"][0]
    # The bot gets its own token, not the local stack's shared one, and it is never printed.
    assert bot_token != local_stack.token
    assert answer["connection_url"] == local_stack.emulator.url
    for secret in (bot_token, API_KEY, local_stack.token):
        assert secret not in out and secret not in err

    png = make_png(64, 48, seed=3, detailed=False)
    with ws_connect(url, open_timeout=10) as ws:
        ws.send(frame_message(png, recording_id="rec-cli", participant_id=7, relative=0.5))
    local_stack.run(local_stack.wait_idle(), 30)
    ddb = local_stack.client("dynamodb")
    item = ddb.get_item(TableName=local_stack.config.table,
                        Key=to_item(schema.frame_item_key("rec-cli", "7", "webcam", 500)))["Item"]
    assert from_item(item)["bot_id"] == answer["bot_id"]

    assert main(["revoke-bot", "--local", "--state-file", state_file, "--bot-id", answer["bot_id"]]) == 0
    assert f"revoked 1 token(s) of bot {answer['bot_id']}" in capsys.readouterr().out
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, open_timeout=10)
    assert refused.value.response.status_code == 403


def test_local_create_bot_prints_recalls_refusal(local_stack, fake_recall, monkeypatch, capsys):
    monkeypatch.setenv("RECALL_API_KEY", "wrong-key")
    rc = main(["create-bot", "--local", "--state-file", str(local_stack.config.state_file),
               "--recall-base-url", fake_recall.url, "--meeting-url", MEETING])
    err = capsys.readouterr().err
    assert rc == 1
    assert "create-bot failed (HTTP 502): recall_unauthorized: Invalid token." in err and "wrong-key" not in err


def test_cli_input_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RECALL_API_KEY", raising=False)
    state = str(tmp_path / "none.json")
    assert main(["create-bot", "--local", "--state-file", state, "--meeting-url", MEETING]) == 1
    assert "set RECALL_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("RECALL_API_KEY", "k")
    assert main(["create-bot", "--local", "--state-file", state, "--meeting-url", MEETING]) == 1
    assert "framesink local" in capsys.readouterr().err
    assert main(["create-bot", "--meeting-url", MEETING, "--metadata", "novalue"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["revoke-bot", "--local", "--state-file", state, "--bot-id", "a/b"]) == 1
    assert "--bot-id must match" in capsys.readouterr().err


# --- deployed ---------------------------------------------------------------------------------


class SigV4HttpApi:
    """Stands in for API Gateway's HTTP API with IAM auth: checks the SigV4 signature
    (recomputed with botocore from the signed headers), then invokes the handler with the
    HTTP API v2 event; an unsigned or altered request gets 403 as API Gateway answers."""

    def __init__(self, handler, context, region="us-east-1"):
        api = self
        self.handler, self.context, self.region = handler, context, region
        self.seen: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = api.handle(self.command, self.path, dict(self.headers.items()), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/" % self.server.server_address[1]

    def verified(self, method, path, headers, raw) -> bool:
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return False
        fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        signed = fields["SignedHeaders"].split(";")
        request = AWSRequest(method=method, url=self.url.rstrip("/") + path, data=raw,
                             headers={h: lower[h] for h in signed if h not in ("x-amz-date", "x-amz-security-token")})
        request.context["timestamp"] = lower["x-amz-date"]
        credentials = boto3.Session().get_credentials().get_frozen_credentials()
        signer = SigV4Auth(credentials, "execute-api", self.region)
        signer._modify_request_before_signing(request)  # adds X-Amz-Date / token, as when signing
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        return fields["Signature"] == expected and fields["Credential"].split("/")[2:4] == [self.region, "execute-api"]

    def handle(self, method, path, headers, raw):
        ok = self.verified(method, path, headers, raw)
        self.seen.append({"path": path, "verified": ok})
        if not ok:
            return 403, {"message": "Forbidden"}
        result = self.handler(http_event(method, path, raw_body=raw.decode()), self.context)
        return result["statusCode"], json.loads(result["body"])


@pytest.fixture
def deployed(bot_stack, aws, lambda_context, monkeypatch):
    """A CloudFormation stack (moto) whose BotApiUrl output points at the SigV4 stand-in."""
    from framesink_handlers import create_bot

    api = SigV4HttpApi(create_bot.handler, lambda_context)
    api.thread.start()
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"BotApiUrl": {"Value": api.url},
                            "TableName": {"Value": bot_stack.table}}}
    cfn.create_stack(StackName="framesink-test", TemplateBody=json.dumps(template))
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        api.thread.join(5)


def test_deployed_create_bot_signs_the_request_and_reads_the_stack_outputs(
    deployed, bot_stack, aws, fake_recall, capsys
):
    rc = main(["create-bot", "--stack-name", "framesink-test", "--region", "us-east-1",
               "--meeting-url", MEETING, "--join-at", "2030-01-02T03:04:05Z"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert deployed.seen == [{"path": "/bots", "verified": True}]
    bot_id = next(iter(fake_recall.bots))
    assert f"bot_id          {bot_id}" in out and "status          created" in out
    assert "connection_url  wss://abc123.execute-api.us-east-1.amazonaws.com/live  (its ?token= is withheld)" in out
    assert fake_recall.posts()[-1].body["join_at"] == "2030-01-02T03:04:05Z"
    token = parse_qs(urlsplit(recall_url(fake_recall)).query)["token"][0]
    assert token not in out and token not in err

    # revoke-bot finds the table through the stack's output and uses the caller's credentials.
    assert main(["revoke-bot", "--stack-name", "framesink-test", "--region", "us-east-1", "--bot-id", bot_id]) == 0
    item = aws["dynamodb"].query(
        TableName=bot_stack.table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=to_item({":pk": schema.bot_pk(bot_id)}))["Items"]
    token_hash = from_item(item[0])["sk"].split("#", 1)[1]
    record = aws["dynamodb"].get_item(TableName=bot_stack.table, Key=to_item(
        {"pk": schema.token_pk(token_hash), "sk": schema.META_SK}))["Item"]
    assert from_item(record)["revoked"] is True


def test_the_stand_in_refuses_unsigned_and_altered_requests(deployed):
    """The signature check above is a real one: it fails for what IAM auth would refuse."""
    pool = urllib3.PoolManager()
    unsigned = pool.request("POST", deployed.url + "bots", body=b'{"meeting_url": "https://x.io"}',
                            headers={"Content-Type": "application/json"})
    assert unsigned.status == 403
    body = json.dumps({"meeting_url": MEETING}).encode()
    request = AWSRequest(method="POST", url=deployed.url + "bots", data=body,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(boto3.Session().get_credentials().get_frozen_credentials(), "execute-api",
              "us-east-1").add_auth(request)
    altered = pool.request("POST", deployed.url + "bots", body=body.replace(b"zoom", b"evil"),
                           headers=dict(request.headers.items()))
    assert altered.status == 403
    assert [s["verified"] for s in deployed.seen] == [False, False]


def test_deployed_create_bot_without_the_stack_says_so(aws, capsys):
    assert main(["create-bot", "--stack-name", "nope", "--region", "us-east-1", "--meeting-url", MEETING]) == 1
    assert "cannot read stack nope" in capsys.readouterr().err


def test_deployed_errors_are_printed_with_the_field(deployed, fake_recall, capsys):
    rc = main(["create-bot", "--stack-name", "framesink-test", "--region", "us-east-1",
               "--meeting-url", "https://zoom.us/j/1", "--bot-name", "x" * 101])
    assert rc == 1
    assert "create-bot failed (HTTP 400): invalid_request [bot_name]: must be 1-100 characters" in \
        capsys.readouterr().err
    assert fake_recall.requests == []
