"""Shared fixtures: moto-backed AWS, a provisioned framesink stack, API Gateway event shapes."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

import boto3
import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "framesink")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "framesink")

from moto import mock_aws  # noqa: E402

from framesink.local.aws import provision  # noqa: E402
from framesink.synthetic import make_png  # noqa: E402
from framesink_core.shared.items import BOTO_CONFIG  # noqa: E402
from framesink_core.shared.settings import Settings  # noqa: E402

REGION = "us-east-1"
TOKEN = "static-test-token-0123456789"
WHSEC = "whsec_" + __import__("base64").b64encode(b"recall-verification-key-32bytes!").decode()


@pytest.fixture
def aws():
    with mock_aws():
        yield {
            name: boto3.client(name, region_name=REGION, config=BOTO_CONFIG)
            for name in ("s3", "dynamodb", "secretsmanager")
        }


def _stack(aws, monkeypatch, verification_secret=None):
    bucket, table = f"frames-{uuid.uuid4().hex[:8]}", "framesink-index"
    env = provision(
        s3=aws["s3"], dynamodb=aws["dynamodb"], secretsmanager=aws["secretsmanager"],
        bucket=bucket, table=table, token=TOKEN, verification_secret=verification_secret,
    )
    # totals_flush_seconds=0: participant totals are written with every frame, so a test can
    # read them at once (tests/unit/test_totals.py covers the flush interval itself).
    settings = Settings(bucket=bucket, table=table, max_frame_bytes=512 * 1024, totals_flush_seconds=0,
                        token_secret_id=env.get("FRAMESINK_TOKEN_SECRET_ID", ""),
                        verification_secret_id=env.get("FRAMESINK_VERIFICATION_SECRET_ID", ""))
    for k, v in settings.as_env().items():
        monkeypatch.setenv(k, v)
    from framesink_handlers import _runtime

    _runtime.service.cache_clear()  # handlers rebuild their Service from this env
    return settings


@pytest.fixture
def stack(aws, monkeypatch):
    """A provisioned stack (bucket, table, static token secret); returns its Settings."""
    return _stack(aws, monkeypatch)


@pytest.fixture
def signed_stack(aws, monkeypatch):
    """As ``stack``, with a Recall whsec_ verification secret configured."""
    return _stack(aws, monkeypatch, verification_secret=WHSEC)


@pytest.fixture
def export_queue(aws, monkeypatch):
    """An SQS export queue named in the functions' environment (FRAMESINK_EXPORT_QUEUE_URL);
    the handlers' Service is rebuilt around it. Yields (sqs client, queue URL)."""
    from framesink_handlers import _runtime

    sqs = boto3.client("sqs", region_name=REGION, config=BOTO_CONFIG)
    queue = sqs.create_queue(QueueName=f"exports-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    monkeypatch.setenv("FRAMESINK_EXPORT_QUEUE_URL", queue)
    _runtime.service.cache_clear()
    yield sqs, queue
    _runtime.service.cache_clear()


@pytest.fixture
def no_export_settling(monkeypatch):
    """For tests that store frames just before the export runs: no wait for them to settle
    (export.SETTLE_SECONDS; tests/integration/test_meetings_local.py runs with it)."""
    from framesink_core.read import export

    monkeypatch.setattr(export, "SETTLE_SECONDS", 0)


@pytest.fixture(scope="session")
def small_png():
    return make_png(64, 48, seed=1, detailed=False)


class LambdaContext:
    function_name = "framesink-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:framesink-test"
    aws_request_id = "req-0001"


@pytest.fixture
def lambda_context():
    return LambdaContext()


def ws_event(route: str, connection_id: str = "conn-1", *, body=None, query=None, headers=None,
             binary: bool = False, close_code=None, close_reason=None) -> dict:
    """An API Gateway WebSocket (Lambda proxy) event with the fields API Gateway sends."""
    now_ms = int(time.time() * 1000)
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
    ctx = {
        "routeKey": route,
        "eventType": event_type,
        "extendedRequestId": uuid.uuid4().hex,
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "messageDirection": "IN",
        "stage": "live",
        "connectedAt": now_ms - 1000,
        "requestTimeEpoch": now_ms,
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "recall-bot"},
        "requestId": uuid.uuid4().hex,
        "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        "connectionId": connection_id,
        "apiId": "abc123",
    }
    event: dict = {"requestContext": ctx, "isBase64Encoded": binary}
    if route == "$connect":
        headers = {"Host": ctx["domainName"], "Sec-WebSocket-Version": "13", **(headers or {})}
        event["headers"] = headers
        event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        if query is not None:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    elif route == "$disconnect":
        ctx["disconnectStatusCode"] = close_code
        ctx["disconnectReason"] = close_reason or ""
    else:
        ctx["messageId"] = uuid.uuid4().hex[:16]
        event["body"] = body if not isinstance(body, dict) else json.dumps(body)
    return event


def api_event(path: str, query: dict | None = None, *, method: str = "GET", body: str | None = None,
              headers: dict | None = None, iam: bool = True) -> dict:
    """An API Gateway HTTP API (payload 2.0) event, IAM-authorized unless ``iam`` is False
    (Recall's webhook route has no IAM: Recall cannot sign SigV4)."""
    from urllib.parse import urlencode

    now = int(time.time() * 1000)
    context = {
        "accountId": "123456789012",
        "apiId": "abc",
        "domainName": "abc.execute-api.us-east-1.amazonaws.com",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9",
                 "userAgent": "pytest"},
        "requestId": uuid.uuid4().hex,
        "routeKey": "$default",
        "stage": "$default",
        "time": "23/Nov/2026:19:00:00 +0000",
        "timeEpoch": now,
    }
    if iam:
        context["authorizer"] = {"iam": {"accessKey": "AKIA...", "accountId": "123456789012",
                                         "userArn": "arn:aws:iam::123456789012:user/analyst"}}
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": {"host": "abc.execute-api.us-east-1.amazonaws.com", "accept": "application/json",
                    **(headers or {})},
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


@pytest.fixture
def caplog_json(capsys):
    """Structured log lines (Powertools JSON) and EMF metric lines emitted during a test.

    Log lines are read from an extra handler with Powertools' own formatter (the Logger's
    stdout handler keeps the stream it was created with); EMF lines are printed to stdout.
    """
    import io

    from framesink_core.shared.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)

    def read():
        def parse(text):
            for line in text.splitlines():
                if line.strip().startswith("{"):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        pass

        logs = list(parse(stream.getvalue()))
        stream.seek(0)
        stream.truncate()
        emf = [line for line in parse(capsys.readouterr().out) if "_aws" in line]
        return logs + emf

    yield read
    logger._logger.removeHandler(handler)


logging.getLogger("botocore").setLevel(logging.WARNING)
