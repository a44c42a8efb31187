"""Real boto3 clients that never touch the network: each request gets a canned 200 answer.

Everything the client does for a frame still happens (parameter validation, serialization,
SigV4 signing, S3's CRC32 checksum of the body, response parsing), so the CPU a frame costs
an ingress, client side included, can be measured without AWS or moto in the way. The
canned answers come from a ``before-send`` hook, the same botocore seam the fault tests use.
"""

from __future__ import annotations

import json

import boto3
from botocore.awsrequest import AWSResponse

from framesink_core.shared.items import BOTO_CONFIG

REGION = "us-east-1"


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def _dynamodb_answer(request) -> bytes:
    target = request.headers.get("X-Amz-Target", b"")
    target = target.decode() if isinstance(target, bytes) else target
    if target.endswith(".UpdateItem"):
        # Echo the frame's time as first/last, so put_frame sees an in-order frame.
        values = json.loads(request.body).get("ExpressionAttributeValues", {})
        ms = values.get(":ms", {"N": "0"})
        return json.dumps({"Attributes": {"first_ms": ms, "last_ms": ms, "frame_count": {"N": "1"}}}).encode()
    return b"{}"  # PutItem (new item), GetItem (no item)


def _answer(request, event_name: str, **_):
    if event_name.startswith("before-send.dynamodb."):
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "canned"}
        return AWSResponse(request.url, 200, headers, _Body(_dynamodb_answer(request)))
    return AWSResponse(request.url, 200, {"ETag": '"canned"', "x-amz-request-id": "canned"}, _Body(b""))


def clients():
    """(s3, dynamodb) clients with framesink's config that answer every call with a 200."""
    session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION)
    made = []
    for name in ("s3", "dynamodb"):
        client = session.client(name, config=BOTO_CONFIG, endpoint_url=None)
        client.meta.events.register(f"before-send.{name}", _answer)
        made.append(client)
    return tuple(made)
