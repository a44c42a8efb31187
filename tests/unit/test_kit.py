"""The analyzer kit's core (framesink_core/analyze/kit.py) over moto: loading MODULE:FUNCTION with
clear errors, the Frame (its PNG read once), what the Runner writes beside a frame (and with
which expiry) and what it skips, the tombstone check, and the Lambda handler that runs any
kit function from its environment."""

from __future__ import annotations

import json
import math

import pytest

from framesink.synthetic import frame_message, make_png
from framesink_core.analyze.kit import MAX_RESULT_BYTES, AnalyzerError, Context, Runner, load
from framesink_core.ingest.outlet import FRAME_STORED, SOURCE
from framesink_core.ingest.tombstones import write_tombstone
from framesink_core.read.feed import FrameRef
from framesink_core.read.query import FrameIndex, QueryError
from framesink_core.service import Service
from framesink_core.shared import schema

STORED_AT = 1_800_000_000_000


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


@pytest.fixture
def ctx(svc):
    return Context(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb, 30)


def stored(svc, rec: str, k: int = 0, pid: int = 7) -> FrameRef:
    outcome = svc.ingestor.handle(frame_message(make_png(64, 48, seed=k, detailed=False), recording_id=rec,
                                                participant_id=pid, relative=k / 2, name="Ada"), connection_id="c")
    assert outcome.status == "stored"
    ref = FrameRef.from_key(svc.settings.bucket, outcome.key)
    return FrameRef(ref.bucket, ref.key, ref.recording_id, ref.participant_id, ref.frame_type, ref.relative_ms,
                    record={"bucket": ref.bucket, "key": ref.key, "recording_id": rec, "participant_id": str(pid),
                            "type": "webcam", "relative_ms": ref.relative_ms, "stored_at": STORED_AT,
                            "participant_name": "Ada", "width": 64, "height": 48})


def test_load_names_what_to_fix(tmp_path):
    (tmp_path / "my_model.py").write_text("def analyze(frame):\n    return None\nnot_callable = 3\n")
    name, fn = load("my_model:analyze", search_path=tmp_path)
    assert name == "my_model" and callable(fn)
    for spec, says in (("my_model", "is not MODULE:FUNCTION"), ("no_such_module:analyze", "cannot import"),
                       ("my_model:missing", "has no function missing"), ("my_model:not_callable", "has no function"),
                       ("../etc:x", "is not MODULE:FUNCTION")):
        with pytest.raises(AnalyzerError, match=says):
            load(spec, search_path=tmp_path)


def test_a_result_is_written_beside_its_frame_with_the_frames_expiry(svc, ctx):
    ref = stored(svc, "rec-kit")
    reads = []
    real_get = svc.s3.get_object

    def counting_get(**kwargs):
        reads.append(kwargs["Key"])
        return real_get(**kwargs)

    ctx.s3 = type("S3", (), {"get_object": staticmethod(counting_get)})()

    def analyze(frame):
        assert frame.png() is frame.png()  # read once
        img = frame.image()
        return {"size": [img.width, img.height], "name": frame.participant_name, "t": frame.seconds}

    outcome = Runner("sizes", analyze, ctx).run(ref)
    assert outcome.status == "result" and reads == [ref.key]
    (result,) = FrameIndex(svc.settings.table, svc.dynamodb).results("rec-kit")
    assert result["result"] == {"size": [64, 48], "name": "Ada", "t": 0.0}
    assert (result["analyzer"], result["participant_id"], result["type"], result["s3_key"]) == ("sizes", "7", "webcam",
                                                                                               ref.key)
    item = svc.dynamodb.get_item(TableName=svc.settings.table, Key={
        "pk": {"S": "REC#rec-kit"}, "sk": {"S": f"RESULT#sizes#{0:010d}#7#webcam"}})["Item"]
    assert int(item["expires_at"]["N"]) == schema.index_expires_at(STORED_AT, 30)
    # a redelivery rewrites the same item: still one result
    Runner("sizes", analyze, Context(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb, 30)).run(ref)
    assert len(FrameIndex(svc.settings.table, svc.dynamodb).results("rec-kit", analyzer="sizes")) == 1


@pytest.mark.parametrize("returned, reason", [
    ([1, 2], "result_invalid"),
    ({"x": math.nan}, "result_invalid"),
    ({"blob": "x" * MAX_RESULT_BYTES}, "result_invalid"),
    ({"obj": object()}, "result_invalid"),
])
def test_what_cannot_be_stored_is_skipped_with_its_reason(svc, ctx, returned, reason):
    ref = stored(svc, "rec-bad")
    outcome = Runner("bad", lambda frame: returned, ctx).run(ref)
    assert (outcome.status, outcome.reason) == ("skipped", reason) and outcome.detail
    assert FrameIndex(svc.settings.table, svc.dynamodb).results("rec-bad") == []


def test_none_writes_nothing_and_an_exception_is_the_callers_to_retry(svc, ctx):
    ref = stored(svc, "rec-none")
    assert Runner("quiet", lambda frame: None, ctx).run(ref).status == "nothing"

    def broken(frame):
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        Runner("broken", broken, ctx).run(ref)
    assert FrameIndex(svc.settings.table, svc.dynamodb).results("rec-none") == []


def test_the_context_reaches_a_two_argument_function(svc, ctx):
    ref = stored(svc, "rec-ctx")
    seen = []
    Runner("ctx", lambda frame, context: seen.append(context.table) or None, ctx).run(ref)
    assert seen == [svc.settings.table]


def test_a_result_for_a_deleted_recording_does_not_stay(svc, ctx):
    ref = stored(svc, "rec-gone")
    write_tombstone(svc.dynamodb, svc.settings.table, "rec-gone")
    outcome = Runner("late", lambda frame: {"ok": True}, ctx).run(ref)
    assert (outcome.status, outcome.reason) == ("skipped", "deleted")
    assert FrameIndex(svc.settings.table, svc.dynamodb).results("rec-gone") == []
    # and a frame whose object went: skipped, not retried
    other = stored(svc, "rec-gone-2")
    svc.s3.delete_object(Bucket=other.bucket, Key=other.key)
    outcome = Runner("late", lambda frame: {"w": frame.image().width}, ctx).run(other)
    assert (outcome.status, outcome.reason) == ("skipped", "deleted")


def test_results_refuses_a_bad_analyzer_name(svc):
    with pytest.raises(QueryError, match="analyzer"):
        FrameIndex(svc.settings.table, svc.dynamodb).results("rec", analyzer="BAD NAME")


def test_the_lambda_handler_runs_the_function_its_environment_names(svc, stack, tmp_path, monkeypatch,
                                                                      lambda_context, caplog_json):
    (tmp_path / "brightness.py").write_text(
        "def analyze(frame):\n    g = frame.image().convert('L')\n"
        "    return {'mean': round(sum(g.getdata()) / (g.width * g.height), 1)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FRAMESINK_ANALYZER", "brightness:analyze")
    monkeypatch.setenv("FRAMESINK_ANALYZER_NAME", "bright")
    from framesink_handlers import analyzer

    analyzer._runner.cache_clear()
    ref = stored(svc, "rec-handler")
    event = json.loads(json.dumps({"source": SOURCE, "detail-type": FRAME_STORED, "detail": ref.record}))
    assert analyzer.handler(event, lambda_context) == {"status": "result", "reason": None}
    (result,) = FrameIndex(svc.settings.table, svc.dynamodb).results("rec-handler", analyzer="bright")
    assert set(result["result"]) == {"mean"}
    # anything but a frame event of this stack: one line with its reason, not a retry
    assert analyzer.handler({"source": "aws.s3", "detail-type": "Object Created"}, lambda_context) == {
        "status": "skipped", "reason": "not_a_frame"}
    other_bucket = {**event, "detail": {**event["detail"], "bucket": "someone-elses"}}
    assert analyzer.handler(other_bucket, lambda_context)["reason"] == "not_a_frame"
    assert [line["reason"] for line in caplog_json() if line.get("message") == "frame not analyzed"] == [
        "not_a_frame", "not_a_frame"]
    analyzer._runner.cache_clear()


def test_a_subscription_is_only_for_its_rules_and_survives_a_kept_one(aws):
    """`framesink analyze --stack`'s queue: only its rules may send (EventBridge User Guide,
    "Amazon SQS permissions": a queue policy allowing events.amazonaws.com with aws:SourceArn
    the rule), over TLS; a queue an earlier --keep run left is reused with this run's settings."""
    import boto3

    from framesink import target
    from framesink.subscription import Subscription

    boto3.client("events", region_name="us-east-1").create_event_bus(Name="frames")
    where = target.Target(local=False, region="us-east-1", bucket="b", table="t", stack_name="framesink-live")
    first = Subscription(where, "frames", "faces", [{"source": ["framesink"]}, {"source": ["framesink"]}], tries=3)
    again = Subscription(where, "frames", "faces", [{"source": ["framesink"]}, {"source": ["framesink"]}], tries=5)
    assert again.url == first.url
    attributes = again.sqs.get_queue_attributes(QueueUrl=again.url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5
    allow, deny = json.loads(attributes["Policy"])["Statement"]
    rule_arns = [again.events.describe_rule(Name=r, EventBusName="frames")["Arn"] for r in again.rules]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arns}} and len(rule_arns) == 2
    assert allow["Resource"] == attributes["QueueArn"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    again.remove()
    assert again.events.list_rules(EventBusName="frames")["Rules"] == []
    assert again.sqs.list_queues().get("QueueUrls", []) == []
