"""Kit analyzers deployed from the ``analyzers`` setting alone (no edit of infra/): a Lambda on its
own asset and a container service reading its own queue, in the synthesized stack. Checked
against what AWS documents, not against the code: cdk-nag and cfn-lint clean (cfn-lint's
E3047 is Fargate's CPU/memory table), each rule's pattern matches the events the ingress and
the novelty function publish (EventBridge's TestEventPattern semantics: exact values), each
role may do what the kit's Runner calls and nothing else, every dead-letter queue alarms, and
the service scales on its queue's depth (Application Auto Scaling step policies on the
queue's ApproximateNumberOfMessagesVisible). The wiring walk (test_wiring.py) covers the
rule -> queue / Lambda permissions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framesink_core.ingest.outlet import FRAME_SCORED, FRAME_STORED, SOURCE
from infra import build, error_annotations
from infra.settings import InfraSettings, SettingsError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MEAN = {"name": "mean", "path": "tests/fixtures/analyzers/mean", "handler": "mean:analyze", "runtime": "lambda",
        "type": "screenshare", "memoryMb": 512}
FACES = {"name": "faces", "path": "analyzers/faces", "handler": "faces:analyze", "runtime": "container",
         "novelOnly": True, "cpu": 512, "workers": 2, "latestOnly": True, "minTasks": 0, "maxTasks": 3}
# As `cdk deploy -c analyzers='[...]'` passes it: a JSON string.
CONTEXT = {"analyzers": json.dumps([MEAN, FACES]), "ingress": "apigw"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("cdk-analyzers")
    app, stack = build(CONTEXT, outdir=str(out))
    assembly = app.synth()
    return assembly, assembly.get_stack_artifact(stack.artifact_id).template, out


def of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def policy_actions(template, role_id) -> dict[str, set[str]]:
    """action -> the resources (JSON) the role's policies allow it on."""
    out: dict[str, set[str]] = {}
    for policy in of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                for action in st["Action"] if isinstance(st["Action"], list) else [st["Action"]]:
                    resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                    out.setdefault(action, set()).update(json.dumps(r, sort_keys=True) for r in resources)
    return out


def matches(pattern: dict, event: dict) -> bool:
    """EventBridge's matching for the patterns framesink writes: each field a list of exact
    values, nested under detail (EventBridge User Guide, "Event patterns")."""
    for key, wanted in pattern.items():
        if isinstance(wanted, dict):
            if not isinstance(event.get(key), dict) or not matches(wanted, event[key]):
                return False
        elif event.get(key) not in wanted:
            return False
    return True


def event(detail_type: str, frame_type: str, **detail) -> dict:
    return {"source": SOURCE, "detail-type": detail_type, "detail": {"type": frame_type, **detail}}


def test_nag_and_cfn_lint_are_clean(synth):
    assembly, template, _ = synth
    assert error_annotations(assembly) == []
    from cfnlint.api import ManualArgs, lint

    assert [str(m) for m in lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"],
                                                                          ignore_checks=["W3005"]))] == []


def test_the_lambda_analyzer_runs_the_kit_handler_on_its_own_asset(synth):
    _, template, out = synth
    (fn_id, fn), = [(k, v) for k, v in of_type(template, "AWS::Lambda::Function").items()
                    if v["Properties"].get("Handler") == "framesink_handlers.analyzer.handler"]
    props = fn["Properties"]
    env = props["Environment"]["Variables"]
    assert (env["FRAMESINK_ANALYZER"], env["FRAMESINK_ANALYZER_NAME"], props["MemorySize"]) == ("mean:analyze", "mean",
                                                                                              512)
    asset = out / f"asset.{props['Code']['S3Key'].split('.')[0]}"
    # the analyzer's module at the root, beside the kit it imports and Pillow for Frame.image()
    assert (asset / "mean.py").is_file() and (asset / "framesink_handlers" / "analyzer.py").is_file()
    assert (asset / "framesink_core" / "analyze" / "kit.py").is_file() and (asset / "PIL").is_dir()
    assert not (asset / "av").exists()  # not the media asset: no FFmpeg
    role = props["Role"]["Fn::GetAtt"][0]
    actions = policy_actions(template, role)
    kit = {"s3:GetObject", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"}
    assert kit <= set(actions) and not {a for a in actions if a.startswith(("s3:", "dynamodb:"))} - kit
    assert all("recordings/*" in r for r in actions["s3:GetObject"])


def rule_of(template, target_id: str) -> dict:
    for rule in of_type(template, "AWS::Events::Rule").values():
        if any(t["Arn"].get("Fn::GetAtt", [None])[0] == target_id for t in rule["Properties"]["Targets"]):
            return rule["Properties"]
    raise AssertionError(f"no rule targets {target_id}")


def test_each_rule_hears_what_its_setting_asks_for(synth):
    _, template, _ = synth
    functions = of_type(template, "AWS::Lambda::Function")
    (mean_id,) = [k for k, v in functions.items() if v["Properties"].get("Handler") == "framesink_handlers.analyzer.handler"]
    mean = rule_of(template, mean_id)
    assert matches(mean["EventPattern"], event(FRAME_STORED, "screenshare"))
    assert not matches(mean["EventPattern"], event(FRAME_STORED, "webcam"))
    assert not matches(mean["EventPattern"], event(FRAME_SCORED, "screenshare", novel=True))  # no double delivery
    (target,) = mean["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2 and "DeadLetterConfig" in target
    queues = of_type(template, "AWS::SQS::Queue")
    (faces_queue,) = [k for k in queues if "AnalyzerFaces" in k and "Queue" in k and "DeadLetters" not in k]
    faces = rule_of(template, faces_queue)
    assert matches(faces["EventPattern"], event(FRAME_SCORED, "webcam", novel=True))
    assert not matches(faces["EventPattern"], event(FRAME_SCORED, "webcam", novel=False))
    assert not matches(faces["EventPattern"], event(FRAME_STORED, "webcam"))
    # the bus the ingresses publish on
    (bus_id,) = of_type(template, "AWS::Events::EventBus")
    assert mean["EventBusName"] == {"Ref": bus_id} == faces["EventBusName"]


def test_the_container_analyzer_reads_its_own_queue_and_scales_on_its_depth(synth):
    _, template, _ = synth
    queues = of_type(template, "AWS::SQS::Queue")
    (queue_id,) = [k for k in queues if "AnalyzerFaces" in k and "Queue" in k and "DeadLetters" not in k]
    queue = queues[queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queue["RedrivePolicy"]["maxReceiveCount"] == 5
    (task_id, task), = of_type(template, "AWS::ECS::TaskDefinition").items()
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["FRAMESINK_ANALYZER_QUEUE_URL"] == {"Ref": queue_id}
    assert (env["FRAMESINK_ANALYZER"], env["FRAMESINK_ANALYZER_WORKERS"], env["FRAMESINK_ANALYZER_LATEST_ONLY"]) == (
        "faces:analyze", "2", "true")
    assert (task["Properties"]["Cpu"], task["Properties"]["Memory"]) == ("512", "1024")  # memory: 2 x cpu
    assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    role = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    actions = policy_actions(template, role)
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= set(actions)
    assert all(r == json.dumps({"Fn::GetAtt": [queue_id, "Arn"]}) for a, rs in actions.items() if a.startswith("sqs:")
               for r in rs)
    kit = {"s3:GetObject", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"}
    assert kit <= set(actions) and not {a for a in actions if a.startswith(("s3:", "dynamodb:"))} - kit
    # scaling: 0-3 tasks, step policies on the queue's visible messages
    (target,) = of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (0, 3)
    alarms = of_type(template, "AWS::CloudWatch::Alarm").values()
    depth = [a for a in alarms if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
             and a["Properties"]["Dimensions"][0]["Value"].get("Fn::GetAtt", [None])[0] == queue_id]
    assert len(depth) == 2  # scale out and scale in
    # the service has no way in: its security group admits nothing
    (service,) = of_type(template, "AWS::ECS::Service").values()
    (sg_ref,) = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    sg = template["Resources"][sg_ref["Fn::GetAtt"][0]]["Properties"]
    assert "SecurityGroupIngress" not in sg and [e["FromPort"] for e in sg["SecurityGroupEgress"]] == [443]


def test_every_analyzer_dead_letter_queue_alarms(synth):
    _, template, _ = synth
    queues = [k for k in of_type(template, "AWS::SQS::Queue") if "Analyzer" in k and "DeadLetters" in k]
    assert len(queues) == 2
    alarmed = {a["Properties"]["Dimensions"][0]["Value"].get("Fn::GetAtt", [None])[0]
               for a in of_type(template, "AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("Namespace") == "AWS/SQS" and a["Properties"].get("Dimensions")}
    assert set(queues) <= alarmed


@pytest.mark.parametrize("entry, complaint", [
    ({**MEAN, "name": "Mean"}, "name must be unique"),
    ({**MEAN, "path": "nowhere"}, "must be a directory holding mean.py"),
    ({**MEAN, "handler": "mean"}, "module:function"),
    ({**MEAN, "runtime": "gpu"}, "runtime"),
    ({**MEAN, "latestOnly": True}, "latestOnly needs runtime container"),
    ({**MEAN, "memoryMb": 64}, "128-10240"),
    ({**FACES, "cpu": 1024, "memoryMb": 1024}, "memoryMb one Fargate allows"),
    ({**FACES, "minTasks": 5, "maxTasks": 2}, "minTasks <= maxTasks"),
    ({**MEAN, "typo": 1}, "unknown keys ['typo']"),
])
def test_a_bad_entry_fails_synth_with_what_to_change(entry, complaint):
    with pytest.raises(SettingsError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        InfraSettings.from_context({"analyzers": [entry]})
    with pytest.raises(SettingsError, match="novelty=false"):
        InfraSettings.from_context({"analyzers": [FACES], "novelty": "false"})
