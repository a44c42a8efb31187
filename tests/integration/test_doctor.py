"""`framesink doctor --local` and the canary against real local stacks (separate processes, real
sockets): the PASS run, and each injected failure giving its FAIL line (receiver down, a token
the receiver does not know, real frames sent to the API Gateway emulator, a synthesized
template whose alarm topic refuses CloudWatch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from framesink_core.access.probe import handshake
from framesink_core.shared import schema
from tests.integration.test_e2e_cli import framesink, wait_for_state

pytestmark = pytest.mark.slow
GUARD = 120


def doctor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run([sys.executable, "-m", "framesink", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=GUARD)


def lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """Step name -> its PASS/FAIL/SKIP line (and the cause/fix lines under a FAIL)."""
    steps: dict[str, str] = {}
    current = None
    for line in result.stdout.splitlines():
        if line[:4] in ("PASS", "FAIL", "SKIP"):
            current = line[6:34].strip()
            steps[current] = line
        elif line.startswith("      ") and current:
            steps[current] += "\n" + line
    return steps


def start(tmp_path: Path, *args: str):
    state_file = tmp_path / "local.json"
    proc = framesink("local", "--port", "0", "--state-file", str(state_file), *args)
    return proc, wait_for_state(proc, state_file), state_file


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def aws(state: dict, service: str):
    return boto3.client(service, endpoint_url=state["endpoint_url"], region_name=state["region"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    proc, state, state_file = start(tmp_path_factory.mktemp("doctor-direct"), "--ingress", "direct", "--frame-queue")
    yield state, state_file
    stop(proc)


def test_doctor_passes_on_the_container_receiver_and_leaves_nothing_behind(direct):
    state, state_file = direct
    result = doctor("--local", "--state-file", str(state_file))
    steps = lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [s for s, line in steps.items() if line.startswith("PASS")] == [
        "outputs", "handshake without a token", "token", "handshake with the token", "frames", "live feed",
        "novelty", "webhook", "cleanup"]
    assert steps["alarm -> topic"].startswith("SKIP")
    # the feed and novelty were proven on the doctor's own bus subscription, which it removed
    assert "the doctor's own subscription" in steps["live feed"] and "Frame Scored" in steps["novelty"]
    assert not [r for r in aws(state, "events").list_rules(EventBusName=state["event_bus"])["Rules"]
                if "doctor-" in r["Name"]]
    assert not [q for q in aws(state, "sqs").list_queues().get("QueueUrls", []) if "doctor-" in q]
    assert "byte-identical in S3 and indexed" in steps["frames"] and "1280x720" in steps["frames"]
    # Never a token: not the stack's, and no ?token= at all.
    assert state["token"] not in result.stdout + result.stderr and "token=" not in result.stdout
    # Cleaned up: no doctor object, recording, bot or token item is left.
    s3, dynamodb = aws(state, "s3"), aws(state, "dynamodb")
    assert not [o["Key"] for o in s3.list_objects_v2(Bucket=state["bucket"]).get("Contents", [])
                if "doctor-" in o["Key"]]
    items = dynamodb.scan(TableName=state["table"])["Items"]
    leftovers = [i for i in items if "doctor-" in json.dumps(i) and not i["pk"]["S"].startswith(("CONN#", "ONCE#"))]
    # Only the delete's tombstone, which expires by itself and keeps late writers (an analyzer
    # still working through the doctor's frames) from bringing anything back.
    assert [i["pk"]["S"].split("#")[0] for i in leftovers] == ["DELETED"] and "expires_at" in leftovers[0]
    tokens = [i for i in items if i["pk"]["S"].startswith("TOKEN#")]
    assert tokens == [], "the doctor's token item was not deleted"


def test_doctor_names_a_receiver_that_is_down(direct, tmp_path):
    state, _ = direct
    down = {**state, "ws_url": "ws://127.0.0.1:9/?token=x"}  # port 9 (discard): nothing listens
    (tmp_path / "down.json").write_text(json.dumps(down))
    result = doctor("--local", "--state-file", str(tmp_path / "down.json"))
    steps = lines(result)
    assert result.returncode == 1
    assert steps["handshake without a token"].startswith("FAIL")
    assert "the receiver is down" in steps["handshake without a token"]
    assert steps["frames"].startswith("SKIP") and steps["cleanup"].startswith("PASS")


def test_doctor_names_a_token_the_receiver_does_not_know(direct, tmp_path):
    """The doctor writes its token to the table the stack names; a receiver reading another
    table answers 403, and the FAIL line says so."""
    state, _ = direct
    other = f"{state['table']}-other"
    aws(state, "dynamodb").create_table(**schema.create_table_kwargs(other))
    (tmp_path / "other.json").write_text(json.dumps({**state, "table": other}))
    result = doctor("--local", "--state-file", str(tmp_path / "other.json"))
    steps = lines(result)
    assert result.returncode == 1
    assert steps["handshake with the token"].split()[:7] == ["FAIL", "handshake", "with", "the", "token", "got", "403"]
    assert f"does not know the token the doctor wrote to table {other}" in steps["handshake with the token"]
    assert steps["cleanup"].startswith("PASS")


def test_doctor_fails_an_alarm_topic_that_refuses_cloudwatch(direct, tmp_path):
    """A synthesized-template shape: alarms notify a topic whose policy holds only the SSL Deny
    (framesink's template before this fix); then the same with CloudWatch allowed."""
    _, state_file = direct
    topic_policy = {"Type": "AWS::SNS::TopicPolicy", "Properties": {"Topics": [{"Ref": "Topic"}], "PolicyDocument": {
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "sns:Publish", "Resource": {"Ref": "Topic"},
                       "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}}
    template = {"Resources": {
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {}},
        "Policy": topic_policy,
        "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"AlarmActions": [{"Ref": "Topic"}]}}}}
    (tmp_path / "bad.json").write_text(json.dumps(template))
    result = doctor("--local", "--state-file", str(state_file), "--template", str(tmp_path / "bad.json"))
    steps = lines(result)
    assert result.returncode == 1
    assert steps["alarm -> topic"].startswith("FAIL") and "cloudwatch.amazonaws.com" in steps["alarm -> topic"]
    topic_policy["Properties"]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish",
         "Resource": {"Ref": "Topic"}})
    (tmp_path / "good.json").write_text(json.dumps(template))
    result = doctor("--local", "--state-file", str(state_file), "--template", str(tmp_path / "good.json"))
    assert result.returncode == 0 and lines(result)["alarm -> topic"].startswith("PASS")


def test_doctor_says_real_frames_need_the_container_receiver(tmp_path):
    """On the API Gateway emulator the 1280x720 frame is over 128 KB: closed with 1009."""
    proc, _, state_file = start(tmp_path, "--ingress", "apigw")
    try:
        result = doctor("--local", "--state-file", str(state_file))
    finally:
        stop(proc)
    steps = lines(result)
    assert result.returncode == 1
    assert steps["frames"].split()[:5] == ["FAIL", "frames", "closed", "with", "1009"]
    assert "--ingress direct" in steps["frames"]


def test_canary_passes_through_the_receiver_and_fails_without_one(direct, monkeypatch):
    """The canary's run() against the local receiver: 401 without a token, 101 with its own,
    CanaryOk 1; against a closed port: not ok, the refusal named."""
    from framesink_core.service import Service
    from framesink_core.shared.settings import Settings
    from framesink_handlers import canary

    state, _ = direct
    service = Service(Settings(bucket=state["bucket"], table=state["table"]), dynamodb=aws(state, "dynamodb"))
    monkeypatch.setattr(canary, "service", lambda: service)
    url = state["ws_url"].split("?", 1)[0]
    result = canary.run(url)
    assert result["ok"] and (result["without_token"], result["with_token"]) == (401, 101)
    assert "token" not in result["url"] and result["handshake_ms"] > 0
    down = canary.run("ws://127.0.0.1:9/")
    assert not down["ok"] and down["with_token"] is None and "refused" in down["error"].lower()


def test_probe_reads_every_status_as_a_result(direct):
    state, _ = direct
    url = state["ws_url"].split("?", 1)[0]
    assert handshake(url, None).status == 401
    assert handshake(url, "not-a-token").status == 403
    assert handshake(url, state["token"]).status == 101
    assert handshake("https://example.invalid/").error.startswith("not a ws://")


def test_doctor_checks_a_deployed_stack_by_its_outputs(direct):
    """--stack: everything comes from a CloudFormation stack's outputs (here a stack in the
    local stack's moto naming its receiver, bucket, table, webhook route, webhook secret and an
    alarm topic). The webhook secret is read from Secrets Manager; the test alarm is created
    and deleted again. moto has no DescribeAlarmHistory, so that one step fails here, naming
    the call; in AWS it reads the action's outcome."""
    state, _ = direct
    secrets, cfn = aws(state, "secretsmanager"), aws(state, "cloudformation")
    secret_arn = secrets.create_secret(Name=f"doctor/{os.getpid()}", SecretString=state["webhook_secret"])["ARN"]
    stack = f"framesink-doctor-{os.getpid()}"
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps({
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {}}},
        "Outputs": {"WebSocketUrl": {"Value": state["ws_url"].split("?", 1)[0]},
                    "BucketName": {"Value": state["bucket"]}, "TableName": {"Value": state["table"]},
                    "Region": {"Value": state["region"]}, "RecallWebhookUrl": {"Value": state["webhook_url"]},
                    "RecallWebhookSecretArn": {"Value": secret_arn}, "AlarmTopicArn": {"Value": {"Ref": "Topic"}},
                    "FrameQueueUrl": {"Value": state["frame_queue_url"]}}}))
    env = {**os.environ, "AWS_ENDPOINT_URL": state["endpoint_url"], "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": state["region"]}
    result = subprocess.run([sys.executable, "-m", "framesink", "doctor", "--stack", stack], capture_output=True,
                            text=True, env=env, timeout=GUARD)
    steps = lines(result)
    assert [s for s, line in steps.items() if line.startswith("PASS")] == [
        "outputs", "handshake without a token", "token", "handshake with the token", "frames", "live feed",
        "webhook", "cleanup"], result.stdout + result.stderr
    assert f"stack {stack}" in steps["outputs"]
    assert steps["alarm -> topic"].startswith("FAIL") and "DescribeAlarmHistory" in steps["alarm -> topic"]
    assert "the test alarm" in steps["cleanup"]
    assert aws(state, "cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert state["webhook_secret"] not in result.stdout + result.stderr


def test_doctor_needs_a_target():
    result = doctor()
    assert result.returncode == 1
    assert "say which stack to check: --local, or --stack NAME" in result.stderr
    assert "Traceback" not in result.stderr
