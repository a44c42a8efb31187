"""The live feed in the synthesized stack: the bucket's EventBridge notifications (always),
and with frameQueue=true and analyzer=slides the queue, its dead-letter queue, the rules, the
analyzer's least-privilege role on the media asset, the alarms on both dead-letter queues;
cdk-nag and cfn-lint clean."""

from __future__ import annotations

import json

import pytest

from framesink_core.read.feed import SCREENSHARE_WILDCARD
from infra import build, error_annotations

pytestmark = pytest.mark.slow

CONTEXT = {"frameQueue": "true", "analyzer": "slides"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("cdk-feed")
    app, stack = build(CONTEXT, outdir=str(out))
    assembly = app.synth()
    template = assembly.get_stack_artifact(stack.artifact_id).template
    return assembly, template, out


def of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements(template, role_id):
    pairs = set()
    for policy in of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                pairs |= {(a, json.dumps(r, sort_keys=True)) for a in actions for r in resources}
    return pairs


def test_nag_and_cfn_lint_are_clean(synth):
    assembly, template, _ = synth
    assert error_annotations(assembly) == []
    from cfnlint.api import ManualArgs, lint

    assert [str(m) for m in lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"], ignore_checks=["W3005"]))] == []


def test_the_frames_bucket_sends_its_events_to_eventbridge(synth):
    _, template, _ = synth
    (notifications,) = of_type(template, "Custom::S3BucketNotifications").values()
    assert notifications["Properties"]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}
    frames = [k for k, v in of_type(template, "AWS::S3::Bucket").items() if "LoggingConfiguration" in v["Properties"]]
    assert notifications["Properties"]["BucketName"] == {"Ref": frames[0]}


def test_the_frame_queue_is_encrypted_with_a_dead_letter_queue_and_fed_by_one_rule(synth):
    _, template, _ = synth
    queues = of_type(template, "AWS::SQS::Queue")
    (queue_id,) = [k for k, v in queues.items() if "RedrivePolicy" in v["Properties"] and "FrameQueue" in k]
    queue = queues[queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queue["RedrivePolicy"]["maxReceiveCount"] == 5
    dlq = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert queues[dlq]["Properties"]["SqsManagedSseEnabled"] is True
    assert template["Outputs"]["FrameQueueUrl"]["Value"] == {"Ref": queue_id}
    rules = [v["Properties"] for v in of_type(template, "AWS::Events::Rule").values()
             if any(t["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]} for t in v["Properties"]["Targets"])]
    (rule,) = rules
    assert rule["EventPattern"]["detail"]["object"]["key"] == [{"prefix": "recordings/"}]
    assert rule["EventPattern"]["detail-type"] == ["Object Created"]
    # Only that rule may send to the queue; everything else is refused over plain HTTP.
    policies = [v["Properties"] for v in of_type(template, "AWS::SQS::QueuePolicy").values()
                if {"Ref": queue_id} in v["Properties"]["Queues"]]
    docs = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    sends = [s for s in docs if s["Effect"] == "Allow"]
    # (CDK's SqsQueue target grants send rights: SendMessage and the two reads it needs.)
    assert [(s["Principal"], sorted(s["Action"])) for s in sends] == [(
        {"Service": "events.amazonaws.com"}, ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"])]
    assert "aws:SourceArn" in json.dumps(sends[0]["Condition"])
    assert any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s) for s in docs)


def test_the_analyzer_gets_screenshares_and_holds_only_what_it_uses(synth):
    _, template, out = synth
    (fn_id, fn), = [(k, v) for k, v in of_type(template, "AWS::Lambda::Function").items()
                    if v["Properties"].get("Handler") == "framesink_handlers.slides.handler"]
    rules = [v["Properties"] for v in of_type(template, "AWS::Events::Rule").values()
             if any(t["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]} for t in v["Properties"]["Targets"])]
    (rule,) = rules
    assert rule["EventPattern"]["detail"]["object"]["key"] == [{"wildcard": SCREENSHARE_WILDCARD}]
    (target,) = rule["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2 and "DeadLetterConfig" in target
    granted = {a for a, _ in statements(template, fn["Properties"]["Role"]["Fn::GetAtt"][0])}
    assert granted == {"s3:GetObject", "s3:ListBucket", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:GetItem",
                       "dynamodb:DeleteItem", "logs:CreateLogStream",
                       "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    listing = [st for p in of_type(template, "AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
               for st in p["Properties"]["PolicyDocument"]["Statement"] if st["Action"] == "s3:ListBucket"]
    assert [st["Condition"] for st in listing] == [{"StringLike": {"s3:prefix": ["recordings/*"]}}]
    # the media asset: Pillow is there (and the ingest path's asset does not carry it)
    asset = out / f"asset.{fn['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    assert (asset / "PIL").is_dir() and (asset / "framesink_core" / "analyze" / "slides.py").is_file()
    (ingest,) = [v for v in of_type(template, "AWS::Lambda::Function").values()
                 if v["Properties"].get("Handler") == "framesink_handlers.ingest.handler"]
    assert not (out / f"asset.{ingest['Properties']['Code']['S3Key'].removesuffix('.zip')}" / "PIL").exists()


def test_every_dead_letter_queue_alarms(synth):
    _, template, _ = synth
    dlqs = {k for k, v in of_type(template, "AWS::SQS::Queue").items() if "RedrivePolicy" not in v["Properties"]}
    alarmed = {json.dumps(d["Value"]) for a in of_type(template, "AWS::CloudWatch::Alarm").values()
               for d in a["Properties"].get("Dimensions", []) if d["Name"] == "QueueName"}
    assert {json.dumps({"Fn::GetAtt": [q, "QueueName"]}) for q in dlqs} == alarmed
    assert len(dlqs) == 3  # frame queue, analyzer, export job
