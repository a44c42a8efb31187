"""Recall's bot status webhooks through the real handler (API Gateway HTTP API events), on
moto: signatures, once-only delivery, status precedence, the timeline, and the export job
queued exactly once."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from conftest import api_event

from framesink.synthetic import frame_message, make_png
from framesink_core.access.auth import sign_headers
from framesink_core.service import Service
from framesink_core.shared.items import from_item
from framesink_handlers import _runtime, webhooks

SECRET = "whsec_" + base64.b64encode(b"webhook-signing-key-for-tests-32").decode()
OTHER = "whsec_" + base64.b64encode(b"a-different-key-nobody-configured").decode()
BOT = "bot-7f3a"


pytestmark = pytest.mark.usefixtures("no_export_settling")


@pytest.fixture
def meeting(stack, aws, monkeypatch, export_queue):
    """The stack plus the webhook secret and the export queue, as the Lambda sees them."""
    arn = aws["secretsmanager"].create_secret(Name="recall-webhook", SecretString=SECRET)["ARN"]
    monkeypatch.setenv("FRAMESINK_WEBHOOK_SECRET_ID", arn)
    _runtime.service.cache_clear()
    sqs, queue = export_queue
    return {"settings": stack, "sqs": sqs, "queue": queue, "secret_arn": arn}


def status_body(code: str, bot: str = BOT, updated_at: str | None = None, legacy: bool = False) -> bytes:
    updated_at = updated_at or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    if legacy:
        return json.dumps({"event": "bot.status_change",
                           "data": {"bot_id": bot, "status": {"code": code, "sub_code": None,
                                                              "created_at": updated_at}}}).encode()
    return json.dumps({"event": f"bot.{code}", "data": {"data": {"code": code, "sub_code": None,
                                                                  "updated_at": updated_at},
                                                         "bot": {"id": bot, "metadata": {}}}}).encode()


def deliver(lambda_context, body: bytes, *, secret: str = SECRET, msg_id: str | None = None,
            timestamp: int | None = None, headers: dict | None = None, prefix: str = "webhook-"):
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    signed = sign_headers(secret, msg_id, int(time.time()) if timestamp is None else timestamp, body)
    signed = {k.replace("webhook-", prefix): v for k, v in signed.items()}
    event = api_event("/recall/events", method="POST", iam=False,
                      body=base64.b64encode(body).decode(), headers={**signed, **(headers or {})})
    event["isBase64Encoded"] = True
    answer = webhooks.handler(event, lambda_context)
    return answer["statusCode"], json.loads(answer["body"])


def items(aws, stack, pk: str) -> list[dict]:
    result = aws["dynamodb"].query(TableName=stack.table, KeyConditionExpression="pk = :pk",
                                   ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True)
    return [from_item(i) for i in result["Items"]]


def export_messages(meeting) -> list[dict]:
    out = []
    while True:
        got = meeting["sqs"].receive_message(QueueUrl=meeting["queue"], MaxNumberOfMessages=10,
                                             WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(json.loads(m["Body"]))
            meeting["sqs"].delete_message(QueueUrl=meeting["queue"], ReceiptHandle=m["ReceiptHandle"])


def stream(aws, stack, recording_id: str, bot: str = BOT, frames: int = 2):
    svc = Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])
    for i in range(frames):
        msg = frame_message(make_png(16, 16, seed=i, detailed=False), recording_id=recording_id, participant_id=1,
                            relative=i / 2, bot_id=bot)
        assert svc.ingestor.handle(msg).stored


# --- signatures -----------------------------------------------------------------------------


def test_a_good_signature_records_the_status_and_its_timeline(meeting, aws, lambda_context, caplog_json):
    status, body = deliver(lambda_context, status_body("in_call_recording"))
    assert (status, body) == (200, {"result": "recorded"})
    bot = items(aws, meeting["settings"], f"BOT#{BOT}")
    meta = next(i for i in bot if i["sk"] == "META")
    assert meta["status"] == "in_call_recording"
    assert [i["event"] for i in bot if i["sk"].startswith("EVENT#")] == ["bot.in_call_recording"]
    lines = caplog_json()
    assert any(line.get("BotStatus") == [1.0] and line.get("status") == "in_call_recording" for line in lines)


@pytest.mark.parametrize("case", ["wrong_secret", "tampered_body", "stale", "future", "missing", "garbage_stamp"])
def test_a_bad_or_stale_signature_is_401_and_stores_nothing(meeting, aws, lambda_context, caplog_json, case):
    body = status_body("done")
    kwargs = {}
    if case == "wrong_secret":
        kwargs["secret"] = OTHER
    elif case == "stale":
        kwargs["timestamp"] = int(time.time()) - 360  # the window is 5 minutes either way
    elif case == "future":
        kwargs["timestamp"] = int(time.time()) + 360
    if case == "tampered_body":
        signed = sign_headers(SECRET, "msg_t", int(time.time()), body)
        event = api_event("/recall/events", method="POST", iam=False, headers=signed,
                          body=status_body("fatal").decode())
        answer = webhooks.handler(event, lambda_context)
        status, reply = answer["statusCode"], json.loads(answer["body"])
    elif case == "missing":
        answer = webhooks.handler(api_event("/recall/events", method="POST", iam=False, body=body.decode()),
                                  lambda_context)
        status, reply = answer["statusCode"], json.loads(answer["body"])
    elif case == "garbage_stamp":
        status, reply = deliver(lambda_context, body, headers={"webhook-timestamp": "9" * 400})
    else:
        status, reply = deliver(lambda_context, body, **kwargs)
    assert status == 401 and reply["error"] in ("bad_signature", "stale_signature", "missing_signature")
    assert items(aws, meeting["settings"], f"BOT#{BOT}") == []
    assert export_messages(meeting) == []
    [log] = [line for line in caplog_json() if line.get("message") == "webhook refused"]
    assert log["reason"] == reply["error"] and SECRET not in json.dumps(log)


def test_any_of_several_v1_signatures_may_match_and_the_svix_prefix_is_accepted(meeting, aws, lambda_context):
    body = status_body("joining_call")
    stamp = int(time.time())
    good = sign_headers(SECRET, "msg_multi", stamp, body)["webhook-signature"]
    bad = sign_headers(OTHER, "msg_multi", stamp, body)["webhook-signature"]
    headers = {"webhook-id": "msg_multi", "webhook-timestamp": str(stamp),
               "webhook-signature": f"v2,abc {bad} {good}"}
    event = api_event("/recall/events", method="POST", iam=False, headers=headers, body=body.decode())
    assert webhooks.handler(event, lambda_context)["statusCode"] == 200
    assert deliver(lambda_context, status_body("in_waiting_room"), prefix="svix-")[0] == 200
    statuses = [i["status"] for i in items(aws, meeting["settings"], f"BOT#{BOT}") if i["sk"].startswith("EVENT#")]
    assert sorted(statuses) == ["in_waiting_room", "joining_call"]


def test_a_replayed_delivery_is_acknowledged_once_and_recorded_once(meeting, aws, lambda_context):
    body = status_body("call_ended")
    assert deliver(lambda_context, body, msg_id="msg_same") == (200, {"result": "recorded"})
    assert deliver(lambda_context, body, msg_id="msg_same") == (200, {"result": "duplicate"})
    events = [i for i in items(aws, meeting["settings"], f"BOT#{BOT}") if i["sk"].startswith("EVENT#")]
    assert len(events) == 1


def test_the_stacks_placeholder_secret_refuses_every_delivery_with_a_clear_reason(meeting, aws, lambda_context):
    aws["secretsmanager"].put_secret_value(SecretId=meeting["secret_arn"], SecretString="REPLACE-ME with whsec_...")
    _runtime.service.cache_clear()
    status, reply = deliver(lambda_context, status_body("done"))
    assert (status, reply["error"]) == (401, "no_secret")


def test_unknown_events_are_acknowledged_and_counted(meeting, aws, lambda_context, caplog_json):
    body = json.dumps({"event": "transcript.done", "data": {"bot": {"id": BOT}}}).encode()
    assert deliver(lambda_context, body) == (200, {"result": "ignored"})
    assert items(aws, meeting["settings"], f"BOT#{BOT}") == []
    assert any(line.get("WebhookIgnored") == [1.0] for line in caplog_json())


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not_json"),
    (b"[1, 2]", "not_an_event"),
    (json.dumps({"event": "bot.done", "data": {"bot": {"id": "../../etc"}}}).encode(), "bad_bot_id"),
    (json.dumps({"event": "bot.status_change", "data": {"bot_id": BOT, "status": {"code": 7}}}).encode(), "bad_status"),
])
def test_a_signed_body_that_is_not_a_status_event_is_a_400_naming_why(meeting, aws, lambda_context, body, reason):
    status, reply = deliver(lambda_context, body)
    assert (status, reply["error"]) == (400, reason)
    assert items(aws, meeting["settings"], f"BOT#{BOT}") == []


# --- statuses -------------------------------------------------------------------------------


def test_out_of_order_events_end_on_the_right_status(meeting, aws, lambda_context):
    stream(aws, meeting["settings"], "rec-ooo")
    t0 = "2026-12-01T10:00:00.000Z"
    # Recall's order: in_call_recording (t0), call_ended (t1), done (t2); delivered: done first.
    assert deliver(lambda_context, status_body("done", updated_at="2026-12-01T10:30:05.000Z"))[0] == 200
    assert deliver(lambda_context, status_body("call_ended", updated_at="2026-12-01T10:30:00.000Z"))[0] == 200
    assert deliver(lambda_context, status_body("in_call_recording", updated_at=t0, legacy=True))[0] == 200
    bot = items(aws, meeting["settings"], f"BOT#{BOT}")
    assert next(i for i in bot if i["sk"] == "META")["status"] == "done"
    # the timeline is in Recall's time order, whatever the delivery order
    assert [i["status"] for i in bot if i["sk"].startswith("EVENT#")] == ["in_call_recording", "call_ended", "done"]
    rec_meta = next(i for i in items(aws, meeting["settings"], "REC#rec-ooo") if i["sk"] == "META")
    assert rec_meta["status"] == "done"
    link = next(i for i in bot if i["sk"] == "REC#rec-ooo")
    assert link["status"] == "done"


def test_a_later_status_wins_and_fatal_is_terminal(meeting, aws, lambda_context):
    assert deliver(lambda_context, status_body("joining_call", updated_at="2026-12-01T09:00:00.000Z"))[0] == 200
    assert deliver(lambda_context, status_body("fatal", updated_at="2026-12-01T09:00:01.000Z"))[0] == 200
    assert deliver(lambda_context, status_body("in_call_recording", updated_at="2026-12-01T09:05:00.000Z"))[0] == 200
    meta = next(i for i in items(aws, meeting["settings"], f"BOT#{BOT}") if i["sk"] == "META")
    assert meta["status"] == "fatal"


@pytest.mark.parametrize("first, then, expected", [
    # Text order put a bare second after its own fraction, and an offset time after a later UTC one.
    (("in_call_recording", "2026-12-01T10:00:05.250Z"), ("call_ended", "2026-12-01T10:00:06Z"), "call_ended"),
    (("call_ended", "2026-12-01T10:00:05.250Z"), ("in_call_recording", "2026-12-01T10:00:05Z"), "call_ended"),
    (("in_call_recording", "2026-12-01T10:30:00+02:00"), ("call_ended", "2026-12-01T09:00:00Z"), "call_ended"),
    (("call_ended", "2026-12-01T09:00:00Z"), ("in_call_recording", "2026-12-01T10:30:00+02:00"), "call_ended"),
    # A time far in the future, or one that does not parse, never pins the status.
    (("joining_call", "9999-12-31T23:59:59Z"), ("call_ended", "2026-12-01T09:00:00Z"), "call_ended"),
    (("joining_call", "yesterday at noon"), ("in_call_recording", "2026-12-01T09:00:00Z"), "in_call_recording"),
    (("in_call_recording", "2026-12-01T09:00:00Z"), ("joining_call", "9999-12-31T23:59:59+14:00"), "in_call_recording"),
])
def test_status_precedence_is_by_real_time(meeting, aws, lambda_context, first, then, expected):
    for code, at in (first, then):
        assert deliver(lambda_context, status_body(code, updated_at=at))[0] == 200
    meta = next(i for i in items(aws, meeting["settings"], f"BOT#{BOT}") if i["sk"] == "META")
    assert meta["status"] == expected


def test_a_status_key_written_before_parsed_times_does_not_freeze_the_status(meeting, aws, lambda_context):
    """Keys stored by earlier versions held the raw ISO text; the parsed form sorts above them."""
    settings = meeting["settings"]
    aws["dynamodb"].put_item(TableName=settings.table, Item={
        "pk": {"S": f"BOT#{BOT}"}, "sk": {"S": "META"}, "status": {"S": "in_call_recording"},
        "status_key": {"S": "0#2026-12-01T09:00:00.000Z#06"}})
    assert deliver(lambda_context, status_body("call_ended", updated_at="2026-12-01T09:30:00Z"))[0] == 200
    meta = next(i for i in items(aws, settings, f"BOT#{BOT}") if i["sk"] == "META")
    assert meta["status"] == "call_ended"


def test_a_recording_first_seen_after_the_bot_status_takes_it(meeting, aws, lambda_context):
    assert deliver(lambda_context, status_body("in_call_recording"))[0] == 200
    stream(aws, meeting["settings"], "rec-late")
    meta = next(i for i in items(aws, meeting["settings"], "REC#rec-late") if i["sk"] == "META")
    assert meta["status"] == "in_call_recording" and meta["bot_id"] == BOT
    svc = Service(meeting["settings"], s3=aws["s3"], dynamodb=aws["dynamodb"])
    assert [r["recording_id"] for r in svc.index.recordings(status="in_call_recording")] == ["rec-late"]
    assert [r["status"] for r in svc.index.recordings(bot_id=BOT)] == ["in_call_recording"]


# --- the export job is queued once -------------------------------------------------------------


def test_two_deliveries_of_bot_done_queue_one_export(meeting, aws, lambda_context):
    stream(aws, meeting["settings"], "rec-done")
    assert deliver(lambda_context, status_body("done"), msg_id="msg_a")[0] == 200
    assert deliver(lambda_context, status_body("done"), msg_id="msg_a")[1] == {"result": "duplicate"}
    assert deliver(lambda_context, status_body("done"), msg_id="msg_b")[0] == 200  # a second event, new id
    messages = export_messages(meeting)
    # the second event finds the job queued and queues it again (a lost message is resent)...
    assert {m["recording_id"] for m in messages} == {"rec-done"} and 1 <= len(messages) <= 2
    svc = _runtime.service()  # as the export Lambda builds it (the queue included)
    # ...but the job starts once: the first message runs it, any other is skipped
    outcomes = [svc.exports.plan(m["recording_id"]) for m in messages]
    assert outcomes[0].startswith("planned") and all(o.startswith("skipped") for o in outcomes[1:])
    assert svc.exports.job("rec-done")["attempts"] == 1


def delayed(meeting) -> int:
    attrs = meeting["sqs"].get_queue_attributes(QueueUrl=meeting["queue"],
                                                AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"])


def test_call_ended_waits_for_a_quiet_period(meeting, aws, lambda_context):
    stream(aws, meeting["settings"], "rec-ce")
    assert deliver(lambda_context, status_body("call_ended"))[0] == 200
    svc = _runtime.service()
    job = svc.exports.job("rec-ce")
    assert job["job_status"] == "pending" and job["trigger"] == "bot.call_ended"
    assert export_messages(meeting) == [] and delayed(meeting) == 1  # sent with the quiet period as delay
    # frames were stored just now: the quiet period (600 s by default) has not passed; it checks again later
    assert svc.exports.plan("rec-ce").startswith("waiting")
    assert delayed(meeting) == 2
    assert svc.exports.plan("rec-ce", now=time.time() + 601).startswith("planned 1 streams")
    assert svc.exports.plan("rec-ce", now=time.time() + 602).startswith("skipped")


def test_done_takes_over_a_job_waiting_out_call_ended(meeting, aws, lambda_context):
    stream(aws, meeting["settings"], "rec-ce2")
    assert deliver(lambda_context, status_body("call_ended"))[0] == 200
    assert deliver(lambda_context, status_body("done"))[0] == 200
    svc = _runtime.service()
    assert svc.exports.job("rec-ce2")["job_status"] == "queued"
    [message] = export_messages(meeting)  # no delay: done means all media is ready
    assert message["trigger"] == "bot.done"
    assert svc.exports.plan(message["recording_id"]).startswith("planned 1 streams")


def endpoint_body(code: str, recording_id: str | None, bot: str = BOT) -> bytes:
    """A realtime_endpoint.* status webhook (docs/meetings.md: its shape)."""
    return json.dumps({"event": f"realtime_endpoint.{code}", "data": {
        "data": {"code": code, "sub_code": "connection_failed" if code == "failed" else None,
                 "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())},
        "realtime_endpoint": {"id": "ep-1", "metadata": {}},
        "recording": {"id": recording_id, "metadata": {}} if recording_id else None,
        "bot": {"id": bot, "metadata": {}}}}).encode()


def test_realtime_endpoint_status_is_recorded_and_failed_alarms(meeting, aws, lambda_context, caplog_json):
    """Verified like bot.*; on the bot's timeline and its recording, never the bot's status;
    failed: one error line and the EndpointFailed metric the RealtimeEndpointFailed alarm reads."""
    stream(aws, meeting["settings"], "rec-ep")
    assert deliver(lambda_context, status_body("in_call_recording"))[0] == 200
    assert deliver(lambda_context, endpoint_body("running", "rec-ep")) == (200, {"result": "recorded"})
    assert deliver(lambda_context, endpoint_body("failed", None)) == (200, {"result": "recorded"})  # the bot's
    bot = items(aws, meeting["settings"], f"BOT#{BOT}")
    assert next(i for i in bot if i["sk"] == "META")["status"] == "in_call_recording"
    assert sorted(i["event"] for i in bot if i["sk"].startswith("EVENT#")) == [
        "bot.in_call_recording", "realtime_endpoint.failed", "realtime_endpoint.running"]
    meta = next(i for i in items(aws, meeting["settings"], "REC#rec-ep") if i["sk"] == "META")
    assert (meta["status"], meta["endpoint_status"], meta["endpoint_sub_code"]) == (
        "in_call_recording", "failed", "connection_failed")
    lines = caplog_json()
    assert any(line.get("message") == "realtime endpoint failed" and line.get("reason") == "endpoint_failed"
               for line in lines)
    assert any(line.get("EndpointFailed") == [1.0] for line in lines)
    assert export_messages(meeting) == []  # an endpoint's end starts no export
    # a forged one changes nothing
    assert deliver(lambda_context, endpoint_body("done", "rec-ep"), secret=OTHER)[0] == 401
