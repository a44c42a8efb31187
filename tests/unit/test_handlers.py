"""Lambda handlers with real API Gateway WebSocket event shapes, against moto."""

import base64
import json
import time

import pytest
from conftest import TOKEN, WHSEC, ws_event

from framesink.synthetic import frame_message, make_png
from framesink_core.access.auth import TokenStore, sign_headers
from framesink_core.shared.items import from_item
from framesink_handlers import connect, disconnect, ingest


def connection_item(aws, stack, cid):
    item = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": f"CONN#{cid}"}, "sk": {"S": "META"}})
    return from_item(item["Item"]) if "Item" in item else None


def test_connect_with_good_token_records_connection_with_ttl(stack, aws, lambda_context):
    assert connect.handler(ws_event("$connect", "c-ok", query={"token": TOKEN}), lambda_context) == {"statusCode": 200}
    item = connection_item(aws, stack, "c-ok")
    assert item["auth_method"] == "static_token" and item["source_ip"] == "203.0.113.7"
    assert time.time() < item["expires_at"] <= time.time() + stack.connection_ttl_seconds + 5


@pytest.mark.parametrize("query, status", [
    (None, 401), ({"other": "x"}, 401), ({"token": "s3cr3t-guess"}, 403),
    ({"TOKEN": TOKEN}, 401),  # the parameter is `token`, case-sensitive, as the receiver reads it
])
def test_connect_refuses_missing_or_wrong_token(stack, aws, lambda_context, caplog_json, query, status):
    response = connect.handler(ws_event("$connect", "c-bad", query=query), lambda_context)
    assert response["statusCode"] == status
    assert connection_item(aws, stack, "c-bad") is None  # nothing recorded for a refused bot
    lines = caplog_json()
    [log] = [l for l in lines if l.get("message") == "connection refused"]
    assert log["reason"] == ("missing_token" if status == 401 else "wrong_token")
    assert log["connection_id"] == "c-bad"
    assert "s3cr3t-guess" not in json.dumps(lines)  # the presented token is never logged
    assert any("ConnectionRefused" in l for l in lines)


def test_connect_with_bot_token_attaches_bot_id_to_frames(stack, aws, lambda_context):
    token = TokenStore(stack.table, aws["dynamodb"]).issue("bot-42", 3600)
    assert connect.handler(ws_event("$connect", "c-bot", query={"token": token}), lambda_context)["statusCode"] == 200
    assert connection_item(aws, stack, "c-bot")["bot_id"] == "bot-42"
    png = make_png(16, 16, detailed=False)
    body = frame_message(png, recording_id="r1", participant_id=5, relative=1.0)
    assert ingest.handler(ws_event("$default", "c-bot", body=body), lambda_context)["body"] == "stored"
    meta = aws["s3"].head_object(Bucket=stack.bucket, Key="recordings/r1/participants/5/webcam/0000001000.png")["Metadata"]
    assert meta["bot-id"] == "bot-42"


@pytest.fixture
def signed(signed_stack):
    return signed_stack


def test_connect_signed_headers(signed, aws, lambda_context):
    now = int(time.time())
    good = sign_headers(WHSEC, "msg_1", now)
    ok = connect.handler(ws_event("$connect", "s1", query={"token": TOKEN}, headers=good), lambda_context)
    assert ok["statusCode"] == 200
    bad = {**good, "webhook-signature": "v1,AAAA"}
    assert connect.handler(ws_event("$connect", "s2", query={"token": TOKEN}, headers=bad), lambda_context)["statusCode"] == 403
    stale = sign_headers(WHSEC, "msg_1", now - 3600)
    assert connect.handler(ws_event("$connect", "s3", query={"token": TOKEN}, headers=stale), lambda_context)["statusCode"] == 403
    assert connect.handler(ws_event("$connect", "s4", query={"token": TOKEN}), lambda_context)["statusCode"] == 401


def test_default_stores_frame_and_disconnect_records_close(stack, aws, lambda_context):
    connect.handler(ws_event("$connect", "c1", query={"token": TOKEN}), lambda_context)
    png = make_png(32, 24, seed=4, detailed=False)
    body = frame_message(png, recording_id="rec", participant_id=100, relative=0.5, bot_id="b1")
    response = ingest.handler(ws_event("$default", "c1", body=body), lambda_context)
    assert response == {"statusCode": 200, "body": "stored"}
    key = "recordings/rec/participants/100/webcam/0000000500.png"
    assert aws["s3"].get_object(Bucket=stack.bucket, Key=key)["Body"].read() == png
    assert ingest.handler(ws_event("$default", "c1", body=body), lambda_context)["body"] == "duplicate"
    assert ingest.handler(ws_event("$default", "c1", body=json.dumps({"event": "transcript.partial_data", "data": {}})),
                          lambda_context)["body"] == "ignored"
    disconnect.handler(ws_event("$disconnect", "c1", close_code=1009, close_reason="Message too big"), lambda_context)
    item = connection_item(aws, stack, "c1")
    assert (item["close_code"], item["close_reason"]) == (1009, "Message too big")
    assert item["disconnected_at"] >= item["connected_at"]


def test_default_reports_storage_failure_without_raising(stack, lambda_context):
    from test_storage import fail_calls

    from framesink_handlers import _runtime

    svc = _runtime.service()

    fail_calls(svc.store.s3, "PutObject", 99, None)
    png = make_png(8, 8, detailed=False)
    body = frame_message(png, recording_id="rec", participant_id=1, relative=1)
    assert ingest.handler(ws_event("$default", "c9", body=body), lambda_context) == {"statusCode": 500, "body": "failed"}


def test_binary_message_is_rejected(stack, lambda_context, caplog_json):
    event = ws_event("$default", "c2", body=base64.b64encode(b"\x89PNG\r\n").decode(), binary=True)
    assert ingest.handler(event, lambda_context)["body"] == "rejected"
    assert [l["reason"] for l in caplog_json() if l.get("message") == "message rejected"] == ["binary_message"]
