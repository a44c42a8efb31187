"""The live feed in the synthesized stack: the frame bus every ingress may publish to (and
its rules listen on), and with frameQueue=true and analyzer=slides the queue, its dead-letter
queue, the rules, the analyzer's least-privilege role on the media asset, the alarms on both
dead-letter queues; cdk-nag and cfn-lint clean."""

from __future__ import annotations

import json

import pytest

from framesink_core.ingest.outlet import FRAME_STORED, SOURCE
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


def frame_bus(template) -> str:
    (bus_id,) = of_type(template, "AWS::Events::EventBus")
    return bus_id


def test_every_ingress_may_publish_frame_events_on_the_bus_the_rules_listen_on(synth):
    """PutEvents needs events:PutEvents on the target bus's ARN (EventBridge User Guide, "Using
    identity-based policies": the resource of PutEvents is the event bus), and a rule sees
    only events put on its own bus (EventBusName; the default bus when absent)."""
    _, template, _ = synth
    bus_id = frame_bus(template)
    bus_arn = json.dumps({"Fn::GetAtt": [bus_id, "Arn"]}, sort_keys=True)
    publishers = {
        "ingest Lambda": [v for v in of_type(template, "AWS::Lambda::Function").values()
                          if v["Properties"].get("Handler") == "framesink_handlers.ingest.handler"],
        "receiver task": [v for v in of_type(template, "AWS::ECS::TaskDefinition").values()],
        # and "Frame Scored" events, after the frame's (analyze/novelty.py)
        "novelty Lambda": [v for v in of_type(template, "AWS::Lambda::Function").values()
                           if v["Properties"].get("Handler") == "framesink_handlers.novelty.handler"],
    }
    for name, (resource,) in publishers.items():
        props = resource["Properties"]
        role = props["Role"] if "Role" in props else props["TaskRoleArn"]
        role_id = role["Fn::GetAtt"][0]
        assert ("events:PutEvents", bus_arn) in statements(template, role_id), name
        env = (props["Environment"]["Variables"] if "Environment" in props else
               {e["Name"]: e["Value"] for e in props["ContainerDefinitions"][0]["Environment"]})
        assert env["FRAMESINK_EVENT_BUS"] == {"Ref": bus_id}, name  # Ref of an EventBus is its name
    rules = of_type(template, "AWS::Events::Rule").values()
    frame_rules = [r["Properties"] for r in rules if r["Properties"].get("EventPattern", {}).get("source") == [SOURCE]]
    assert len(frame_rules) == 3  # frame queue, slide analyzer, novelty
    assert all(r["EventBusName"] == {"Ref": bus_id} for r in frame_rules)
    # Every rule hears "Frame Stored" only: the novelty function's own "Frame Scored" events
    # never come back to it (no loop).
    assert all(r["EventPattern"]["detail-type"] == [FRAME_STORED] for r in frame_rules)
    # and S3 no longer notifies EventBridge: nothing needs its slower events
    assert not of_type(template, "Custom::S3BucketNotifications")


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
    assert rule["EventPattern"] == {"source": [SOURCE], "detail-type": [FRAME_STORED]}  # every frame
    assert rule["EventBusName"] == {"Ref": frame_bus(template)}
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
    assert rule["EventPattern"]["detail"] == {"type": ["screenshare"]}
    assert rule["EventBusName"] == {"Ref": frame_bus(template)}
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
    assert len(dlqs) == 4  # frame queue, analyzer, novelty, export job
