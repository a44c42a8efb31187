"""The create-bot Lambda end to end: HTTP API v2 events and direct invokes, a fake Recall
over real HTTP, moto for DynamoDB/S3/Secrets Manager, and the real $connect/$default
handlers for what the returned token opens."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import ws_event

from fake_recall import API_KEY, CALLER, MEETING, WS_URL, bot_stack, fake_recall, http_event  # noqa: F401  (fixtures)
from framesink.synthetic import frame_message
from framesink_core.access.auth import TokenStore
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.settings import DEFAULT_BOT_TOKEN_TTL_SECONDS


def call(event, lambda_context):
    from framesink_handlers import create_bot

    result = create_bot.handler(event, lambda_context)
    if "routeKey" in event:
        return result["statusCode"], json.loads(result["body"]), result.get("headers") or {}
    return result["statusCode"], result["body"], {}


def sent_token(fake_recall) -> str:
    url = fake_recall.posts()[-1].body["recording_config"]["realtime_endpoints"][0]["url"]
    return parse_qs(urlsplit(url).query)["token"][0]


def token_items(aws, table) -> list[dict]:
    items = aws["dynamodb"].scan(TableName=table)["Items"]  # a test may Scan; the code never does
    return [from_item(i) for i in items if from_item(i)["pk"].startswith("TOKEN#")]


def connect(token, lambda_context, connection_id="conn-bot"):
    from framesink_handlers import connect as connect_handler

    return connect_handler.handler(ws_event("$connect", connection_id, query={"token": token}), lambda_context)


def test_post_bots_creates_a_bot_whose_token_streams_frames_tagged_with_its_id(
    bot_stack, aws, fake_recall, lambda_context, small_png
):
    status, body, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING, "bot_name": "Sink",
                                                         "metadata": {"team": "r"}}), lambda_context)
    assert status == 201
    bot_id = body["bot_id"]
    assert bot_id in fake_recall.bots and body["status"] == "created"
    assert body["connection_url"] == WS_URL  # without the token
    token = sent_token(fake_recall)
    assert token not in json.dumps(body)
    assert body["token_expires_at"] == pytest.approx(time.time() + DEFAULT_BOT_TOKEN_TTL_SECONDS, abs=60)

    # Only the hash is stored, under the bot's id.
    [item] = token_items(aws, bot_stack.table)
    assert item["bot_id"] == bot_id and token not in json.dumps(item, default=str)

    # The token opens a connection as that bot ...
    assert connect(token, lambda_context)["statusCode"] == 200
    conn = from_item(aws["dynamodb"].get_item(
        TableName=bot_stack.table, Key=to_item({"pk": schema.connection_pk("conn-bot"), "sk": schema.META_SK})
    )["Item"])
    assert (conn["bot_id"], conn["auth_method"]) == (bot_id, "bot_token")

    # ... and a frame on it is indexed and stored with the bot id.
    from framesink_handlers import ingest

    msg = frame_message(small_png, recording_id="rec-1", participant_id=100, relative=1.5)
    assert ingest.handler(ws_event("$default", "conn-bot", body=msg), lambda_context)["statusCode"] == 200
    frame = from_item(aws["dynamodb"].get_item(
        TableName=bot_stack.table, Key=to_item(schema.frame_item_key("rec-1", "100", "webcam", 1500)))["Item"])
    assert frame["bot_id"] == bot_id
    head = aws["s3"].head_object(Bucket=bot_stack.bucket, Key=schema.frame_key("rec-1", "100", "webcam", 1500))
    assert head["Metadata"]["bot-id"] == bot_id
    bot_items = aws["dynamodb"].query(
        TableName=bot_stack.table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=to_item({":pk": schema.bot_pk(bot_id)}))["Items"]
    assert {from_item(i)["sk"].split("#")[0] for i in bot_items} == {"TOKEN", "REC"}


def test_a_revoked_token_is_refused(bot_stack, aws, fake_recall, lambda_context):
    status, body, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    token = sent_token(fake_recall)
    assert TokenStore(bot_stack.table, aws["dynamodb"]).revoke(body["bot_id"]) == 1
    result = connect(token, lambda_context)
    assert (result["statusCode"], result["body"]) == (403, "wrong_token")


def test_an_expired_token_is_refused(bot_stack, aws, fake_recall, lambda_context):
    call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    token = sent_token(fake_recall)
    [item] = token_items(aws, bot_stack.table)
    # Time passing, as DynamoDB sees it: the expiry attribute is in the past (TTL deletes
    # items lazily, so lookup checks the attribute itself).
    aws["dynamodb"].update_item(
        TableName=bot_stack.table, Key=to_item({"pk": item["pk"], "sk": item["sk"]}),
        UpdateExpression="SET expires_at = :t", ExpressionAttributeValues=to_item({":t": int(time.time()) - 1}))
    assert connect(token, lambda_context)["statusCode"] == 403


def test_a_scheduled_bots_token_lives_from_its_join_time(bot_stack, fake_recall, lambda_context):
    join = int(time.time()) + 7 * 24 * 3600
    join_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(join))
    status, body, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING, "join_at": join_at}),
                           lambda_context)
    assert status == 201
    assert body["token_expires_at"] == pytest.approx(join + DEFAULT_BOT_TOKEN_TTL_SECONDS, abs=5)
    assert fake_recall.posts()[-1].body["join_at"] == join_at


def test_direct_invoke_takes_the_body_as_the_event(bot_stack, fake_recall, lambda_context):
    status, body, _ = call({"meeting_url": MEETING, "events": ["participant_events.join"]}, lambda_context)
    assert status == 201 and body["bot_id"] in fake_recall.bots
    endpoint = fake_recall.posts()[-1].body["recording_config"]["realtime_endpoints"][0]
    assert endpoint["events"] == ["video_separate_png.data", "participant_events.join"]
    status, body, _ = call({"meeting_url": "zoom.us/j/1"}, lambda_context)
    assert (status, body["field"]) == (400, "meeting_url")


def test_the_nested_endpoint_form_is_one_setting(bot_stack, fake_recall, lambda_context, monkeypatch):
    monkeypatch.setenv("FRAMESINK_RECALL_ENDPOINT_FORM", "nested")
    from framesink_handlers import _runtime

    _runtime.service.cache_clear()
    assert call({"meeting_url": MEETING}, lambda_context)[0] == 201
    [endpoint] = fake_recall.posts()[-1].body["recording_config"]["realtime_endpoints"]
    assert set(endpoint) == {"type", "config"} and endpoint["config"]["url"].startswith(WS_URL + "?token=")


BAD_INPUTS = [
    (None, "not json", "body", "is not valid JSON"),
    (["https://zoom.us/j/1"], None, "body", "must be a JSON object"),
    ({}, None, "meeting_url", "is required"),
    ({"meeting_url": 42}, None, "meeting_url", "must be a string"),
    ({"meeting_url": "ftp://zoom.us/j/1"}, None, "meeting_url", "http:// or https://"),
    ({"meeting_url": "https://"}, None, "meeting_url", "with a host"),
    ({"meeting_url": "https://x.io/" + "a" * 2100}, None, "meeting_url", "longer than 2048"),
    ({"meeting_url": MEETING, "bot_name": ""}, None, "bot_name", "1-100 characters"),
    ({"meeting_url": MEETING, "bot_name": "b" * 101}, None, "bot_name", "1-100 characters"),
    ({"meeting_url": MEETING, "bot_name": 7}, None, "bot_name", "must be a string"),
    ({"meeting_url": MEETING, "join_at": "tomorrow at 9"}, None, "join_at", "is not ISO 8601"),
    ({"meeting_url": MEETING, "join_at": "2026-11-24T09:00:00"}, None, "join_at", "needs a timezone"),
    ({"meeting_url": MEETING, "join_at": 1764000000}, None, "join_at", "ISO 8601 string"),
    ({"meeting_url": MEETING, "metadata": ["a"]}, None, "metadata", "object of string values"),
    ({"meeting_url": MEETING, "metadata": {"n": 1}}, None, "metadata.n", "must be a string"),
    ({"meeting_url": MEETING, "metadata": {"": "x"}}, None, "metadata", "keys must be 1-100 characters"),
    ({"meeting_url": MEETING, "events": "transcript.data"}, None, "events", "list of event names"),
    ({"meeting_url": MEETING, "events": ["video.everything"]}, None, "events", "'video.everything' is not one of"),
    ({"meeting_url": MEETING, "bot": "x"}, None, "bot", "unknown field"),
    # Hostile input (issue 12): each was a 500 or a traceback before.
    ({"meeting_url": "http://[::1"}, None, "meeting_url", "is not a valid URL"),
    ({"meeting_url": "https://zoom.us:99999/j/1"}, None, "meeting_url", "is not a valid URL"),
    ({"meeting_url": "https://zoom.us/j/1\r\nX-Evil: 1"}, None, "meeting_url", "printable ASCII"),
    ({"meeting_url": MEETING, "events": [["transcript.data"]]}, None, "events", "is not one of"),
    ({"meeting_url": MEETING, "events": [{"a": 1}]}, None, "events", "is not one of"),
    ({"meeting_url": MEETING, "join_at": "0001-01-01T00:00:00+14:00"}, None, "join_at", "between the years"),
    ({"meeting_url": MEETING, "join_at": "9999-12-31T23:59:59-14:00"}, None, "join_at", "between the years"),
    (None, "[" * 5000 + "]" * 5000, "body", "is not valid JSON"),
    (None, '{"meeting_url": ' + "[" * 100000 + "]" * 100000 + "}", "body", "is not valid JSON"),
]


def test_bad_input_is_a_400_that_says_what_is_wrong(bot_stack, aws, fake_recall, lambda_context, caplog, capsys,
                                                    subtests):
    # Subtests, not parametrize: one moto stack serves every case (its set-up is most of the time).
    for body, raw, field, detail in BAD_INPUTS:
        with subtests.test(field=field, body=str(body)[:60]):
            caplog.clear()
            capsys.readouterr()
            status, answer, _ = call(http_event("POST", "/bots", body, raw_body=raw), lambda_context)
            assert status == 400
            assert answer["error"] == "invalid_request" and answer["field"] == field and detail in answer["detail"]
            assert fake_recall.requests == [] and token_items(aws, bot_stack.table) == []
            [line] = [r for r in caplog.records if r.getMessage() == "bot request rejected"]
            assert (line.reason, line.field) == ("invalid_request", field)
            emf = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
            assert any("BotRequestRejected" in m and m.get("reason") == "invalid_request" for m in emf)


@pytest.mark.parametrize(
    "status, payload, headers, expect_status, error",
    [
        (401, {"detail": "Invalid token."}, {}, 502, "recall_unauthorized"),
        (400, {"meeting_url": ["Unsupported meeting platform."]}, {}, 400, "recall_bad_request"),
        (402, {"detail": "Out of credits."}, {}, 502, "recall_payment_required"),
        (507, {"detail": "No bots available."}, {}, 503, "recall_http_507"),
    ],
)
def test_recall_failures_register_nothing_and_pass_recalls_detail_on(
    bot_stack, aws, fake_recall, lambda_context, status, payload, headers, expect_status, error
):
    fake_recall.queue(status, payload, headers)
    code, body, resp_headers = call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    assert (code, body["error"], body["recall_status"]) == (expect_status, error, status)
    assert body["detail"] == (payload.get("detail") or json.dumps(payload))
    assert token_items(aws, bot_stack.table) == []
    if status == 507:  # 30 s does not fit the 5 s deadline: the caller is told when to retry
        assert body["retry_after"] == 30.0 and resp_headers["Retry-After"] == "30"


@pytest.mark.parametrize("answer", [["not", "a", "bot"], "a string", None, 42])
def test_a_201_that_is_not_a_bot_object_is_a_502_and_registers_nothing(
    bot_stack, aws, fake_recall, lambda_context, answer
):
    fake_recall.queue(201, answer)
    code, body, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    assert (code, body["error"]) == (502, "recall_bad_response")
    assert token_items(aws, bot_stack.table) == []


def test_a_placeholder_key_is_reported_as_such(bot_stack, aws, fake_recall, lambda_context):
    aws["secretsmanager"].put_secret_value(SecretId="framesink/recall-api-key",
                                           SecretString="REPLACE_WITH_RECALL_API_KEY")
    from framesink_handlers import _runtime

    _runtime.service.cache_clear()  # a fresh Service: no cached secret value
    code, body, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    assert (code, body["error"]) == (502, "recall_no_api_key") and fake_recall.requests == []


def test_a_missing_ingress_url_is_a_500_before_recall_is_called(bot_stack, fake_recall, lambda_context, monkeypatch):
    monkeypatch.delenv("FRAMESINK_WS_URL")
    from framesink_handlers import _runtime

    _runtime.service.cache_clear()
    code, body, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    assert (code, body["error"]) == (500, "misconfigured") and fake_recall.requests == []


def test_get_bots_returns_the_status_from_recall(bot_stack, fake_recall, lambda_context):
    _, created, _ = call(http_event("POST", "/bots", {"meeting_url": MEETING}), lambda_context)
    fake_recall.bots[created["bot_id"]]["status_changes"] = [{"code": "in_call_recording"}]
    code, body, _ = call(http_event("GET", f"/bots/{created['bot_id']}"), lambda_context)
    assert (code, body["bot_id"], body["status"]) == (200, created["bot_id"], "in_call_recording")
    code, body, _ = call(http_event("GET", f"/bots/{uuid.uuid4()}"), lambda_context)
    assert (code, body["error"], body["detail"]) == (404, "recall_not_found", "Not found.")
    code, body, _ = call(http_event("GET", "/bots/not.an.id"), lambda_context)
    assert (code, body["field"]) == (400, "bot_id")
