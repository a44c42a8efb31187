"""Every service that writes to a resource is allowed by that resource's policy.

An assertion that restates the code (this rule targets this queue) proves nothing about a
deploy: AWS checks the *target's* resource policy (and its KMS key policy) when the writing
service calls it, and a missing Allow fails only at run time, silently (an alarm that never
notifies, an event that never arrives). So these tests walk the synthesized template for
every writer -> target pair and look for the Allow AWS documents, whatever code made it:

- CloudWatch alarm actions -> SNS topic: the topic policy (when there is one: it replaces SNS's
  default policy) allows ``cloudwatch.amazonaws.com`` ``sns:Publish``, and a KMS-encrypted
  topic's key policy lets CloudWatch ``kms:GenerateDataKey*`` + ``kms:Decrypt`` (SNS Developer
  Guide, "Configure AWS KMS permissions": CloudWatch alarms; AWS re:Post
  "cloudwatch-receive-sns-for-alarm-trigger").
- EventBridge rule -> SQS target or dead-letter queue: the queue policy allows
  ``events.amazonaws.com`` ``sqs:SendMessage`` (EventBridge User Guide, "Using resource-based
  policies for Amazon EventBridge": Amazon SQS permissions; "Using dead-letter queues").
- EventBridge rule -> Lambda target: a Lambda permission for ``events.amazonaws.com`` from that
  rule (same guide: AWS Lambda permissions).
- S3 -> EventBridge: the bucket has EventBridge notifications on, and every rule on its events
  sits on the default bus, the only one S3 sends to (S3 User Guide, "Using EventBridge").
- a publisher -> its custom event bus: every function or task whose environment names a bus
  (``FRAMESINK_EVENT_BUS``) may ``events:PutEvents`` on that bus's ARN, and every rule on a
  custom bus has such a publisher (EventBridge User Guide, "Using identity-based policies":
  PutEvents is authorized on the event bus resource; a rule sees only its own bus's events).
- API Gateway -> Lambda integration: a Lambda permission for ``apigateway.amazonaws.com``
  scoped to that API (API Gateway Developer Guide, "Control access to a Lambda integration").
- SQS -> Lambda event source mapping: the function's role may ReceiveMessage, DeleteMessage
  and GetQueueAttributes on the queue (Lambda Developer Guide, "Execution role permissions"
  for Amazon SQS).
- CodeBuild -> ECR and its log group: the image build's role may push to the repository
  the build writes and write its log group.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from infra import build

pytestmark = pytest.mark.slow

CONTEXTS = {
    "default": {},
    # Every optional writer on: the frame queue, the analyzer (rule -> Lambda, DLQ), an email,
    # and kit analyzers (rule -> Lambda with its DLQ; rule -> a container analyzer's queue).
    "everything": {"frameQueue": "true", "analyzer": "slides", "alarmEmail": "oncall@example.com",
                   "analyzers": [{"name": "mean", "path": "tests/fixtures/analyzers/mean", "handler": "mean:analyze",
                                  "runtime": "lambda"},
                                 {"name": "faces", "path": "analyzers/faces", "handler": "faces:analyze",
                                  "runtime": "container", "novelOnly": True}]},
}


class Template:
    def __init__(self, template: dict):
        self.resources = template["Resources"]

    def of_type(self, kind: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    def props(self, logical_id: str) -> dict:
        return self.resources[logical_id].get("Properties", {})


def listed(value) -> list:
    return value if isinstance(value, list) else [value]


def logical_id(ref) -> str | None:
    """The logical id a Ref / Fn::GetAtt points at, else None."""
    if isinstance(ref, dict):
        if "Ref" in ref:
            return ref["Ref"]
        if "Fn::GetAtt" in ref:
            return ref["Fn::GetAtt"][0]
    return None


def service_principals(statement: dict) -> set[str]:
    principal = statement.get("Principal", {})
    if principal == "*":
        return {"*"}
    return set(listed(principal.get("Service", [])))


def action_allowed(statement: dict, action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(statement.get("Action", [])))


def resource_covers(statement: dict, target_id: str) -> bool:
    """The statement's Resource names the target (by Ref/GetAtt) or is '*'."""
    for resource in listed(statement.get("Resource", "*")):
        if resource == "*" or logical_id(resource) == target_id:
            return True
    return False


def allows(document: dict, service: str, action: str, target_id: str | None = None) -> bool:
    """An Allow for ``service`` to do ``action`` (on ``target_id``), and no Deny of it that
    holds for a service calling over TLS (the only Deny condition framesink writes)."""
    allowed = False
    for statement in document["Statement"]:
        if service not in service_principals(statement) and "*" not in service_principals(statement):
            continue
        if not action_allowed(statement, action) or (target_id and not resource_covers(statement, target_id)):
            continue
        if statement["Effect"] == "Deny":
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                continue  # AWS services publish over TLS
            return False
        if "*" not in service_principals(statement) or service == "*":
            allowed = True
    return allowed


def role_allows(t: Template, role_id: str, action: str, target_id: str) -> bool:
    for policy in list(t.of_type("AWS::IAM::Policy").values()):
        if {"Ref": role_id} not in policy["Properties"].get("Roles", []):
            continue
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if st["Effect"] != "Allow" or not action_allowed(st, action):
                continue
            for resource in listed(st.get("Resource", [])):
                if resource == "*" or target_id in json.dumps(resource):
                    return True
    return False


def topic_policy(t: Template, topic_id: str) -> dict | None:
    for policy in t.of_type("AWS::SNS::TopicPolicy").values():
        if {"Ref": topic_id} in policy["Properties"]["Topics"]:
            return policy["Properties"]["PolicyDocument"]
    return None


def queue_policy(t: Template, queue_id: str) -> dict | None:
    for policy in t.of_type("AWS::SQS::QueuePolicy").values():
        if {"Ref": queue_id} in policy["Properties"]["Queues"]:
            return policy["Properties"]["PolicyDocument"]
    return None


def lambda_permitted(t: Template, function_id: str, principal: str, source_id: str) -> bool:
    for permission in t.of_type("AWS::Lambda::Permission").values():
        p = permission["Properties"]
        if logical_id(p["FunctionName"]) == function_id and p["Principal"] == principal \
                and p["Action"] == "lambda:InvokeFunction" and source_id in json.dumps(p.get("SourceArn")):
            return True
    return False


# --- the pairs ---------------------------------------------------------------------------------


def alarm_topic_gaps(t: Template) -> list[str]:
    gaps = []
    for alarm_id, alarm in t.of_type("AWS::CloudWatch::Alarm").items():
        for kind in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            for action in alarm["Properties"].get(kind, []):
                topic_id = logical_id(action)
                if topic_id and t.resources[topic_id]["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy":
                    # A step-scaling alarm (a container analyzer's queue depth): CloudWatch invokes
                    # Application Auto Scaling through its service-linked role, no resource policy
                    # ("Step scaling policies for Application Auto Scaling").
                    continue
                if topic_id is None or t.resources[topic_id]["Type"] != "AWS::SNS::Topic":
                    gaps.append(f"{alarm_id}: {kind} {action} is not a topic of this stack")
                    continue
                document = topic_policy(t, topic_id)
                if document is not None and not allows(document, "cloudwatch.amazonaws.com", "sns:Publish", topic_id):
                    gaps.append(f"{alarm_id} -> {topic_id}: the topic policy does not let CloudWatch publish")
                key_id = logical_id(t.props(topic_id).get("KmsMasterKeyId"))
                if key_id:
                    key_policy = t.props(key_id)["KeyPolicy"]
                    for key_action in ("kms:GenerateDataKey", "kms:Decrypt"):
                        if not allows(key_policy, "cloudwatch.amazonaws.com", key_action):
                            gaps.append(f"{alarm_id} -> {topic_id}: key {key_id} refuses CloudWatch {key_action}")
    return gaps


def rule_target_gaps(t: Template) -> list[str]:
    gaps = []
    for rule_id, rule in t.of_type("AWS::Events::Rule").items():
        for target in rule["Properties"].get("Targets", []):
            destinations = [("target", target["Arn"])]
            if "DeadLetterConfig" in target:
                destinations.append(("dead-letter queue", target["DeadLetterConfig"]["Arn"]))
            for what, arn in destinations:
                target_id = logical_id(arn)
                kind = t.resources[target_id]["Type"] if target_id else None
                if kind == "AWS::SQS::Queue":
                    document = queue_policy(t, target_id)
                    if document is None or not allows(document, "events.amazonaws.com", "sqs:SendMessage", target_id):
                        gaps.append(f"{rule_id} -> {what} {target_id}: the queue policy does not let EventBridge send")
                    elif "KmsMasterKeyId" in t.props(target_id):
                        gaps.append(f"{rule_id} -> {target_id}: a KMS-encrypted target queue needs its key policy "
                                    "checked (framesink uses SSE-SQS)")
                elif kind == "AWS::Lambda::Function":
                    if not lambda_permitted(t, target_id, "events.amazonaws.com", rule_id):
                        gaps.append(f"{rule_id} -> {target_id}: no Lambda permission for EventBridge from this rule")
                else:
                    gaps.append(f"{rule_id} -> {what} {arn}: a target this test does not know how to check")
    return gaps


def s3_event_gaps(t: Template) -> list[str]:
    gaps = []
    eventbridge_buckets = {logical_id(n["Properties"]["BucketName"])
                           for n in t.of_type("Custom::S3BucketNotifications").values()
                           if "EventBridgeConfiguration" in n["Properties"]["NotificationConfiguration"]}
    for rule_id, rule in t.of_type("AWS::Events::Rule").items():
        pattern = rule["Properties"].get("EventPattern", {})
        if "aws.s3" not in listed(pattern.get("source", [])):
            continue
        if rule["Properties"].get("EventBusName", "default") != "default":
            gaps.append(f"{rule_id}: S3 sends its events to the default bus only")
        for name in listed(pattern.get("detail", {}).get("bucket", {}).get("name", [])):
            if logical_id(name) not in eventbridge_buckets:
                gaps.append(f"{rule_id}: bucket {name} does not send its events to EventBridge")
    return gaps


def event_bus_gaps(t: Template) -> list[str]:
    gaps = []
    buses = set(t.of_type("AWS::Events::EventBus"))
    publishers: dict[str, set[str]] = {bus: set() for bus in buses}
    writers = [(fid, f["Properties"].get("Environment", {}).get("Variables", {}), logical_id(f["Properties"]["Role"]))
               for fid, f in t.of_type("AWS::Lambda::Function").items()]
    writers += [(tid, {e["Name"]: e.get("Value") for c in d["Properties"]["ContainerDefinitions"]
                       for e in c.get("Environment", [])}, logical_id(d["Properties"].get("TaskRoleArn")))
                for tid, d in t.of_type("AWS::ECS::TaskDefinition").items()]
    for writer_id, env, role_id in writers:
        bus = logical_id(env.get("FRAMESINK_EVENT_BUS"))
        if bus is None:
            continue
        if bus not in buses:
            gaps.append(f"{writer_id}: FRAMESINK_EVENT_BUS names {bus}, not an event bus of this stack")
        elif role_id is None or not role_allows(t, role_id, "events:PutEvents", bus):
            gaps.append(f"{writer_id}: its role may not events:PutEvents on {bus}")
        else:
            publishers[bus].add(writer_id)
    for rule_id, rule in t.of_type("AWS::Events::Rule").items():
        bus = logical_id(rule["Properties"].get("EventBusName"))
        if bus in buses and not publishers[bus]:
            gaps.append(f"{rule_id}: nothing in the stack may publish to its bus {bus}")
    return gaps


def api_integration_gaps(t: Template) -> list[str]:
    gaps = []
    for integration_id, integration in t.of_type("AWS::ApiGatewayV2::Integration").items():
        props = integration["Properties"]
        function_id = logical_id(props.get("IntegrationUri"))
        if function_id is None or t.resources[function_id]["Type"] != "AWS::Lambda::Function":
            continue
        api_id = logical_id(props["ApiId"])
        if not lambda_permitted(t, function_id, "apigateway.amazonaws.com", api_id):
            gaps.append(f"{integration_id}: API {api_id} may not invoke {function_id}")
    return gaps


def event_source_gaps(t: Template) -> list[str]:
    gaps = []
    for mapping_id, mapping in t.of_type("AWS::Lambda::EventSourceMapping").items():
        props = mapping["Properties"]
        queue_id = logical_id(props["EventSourceArn"])
        role_id = logical_id(t.props(logical_id(props["FunctionName"]))["Role"])
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
            if not role_allows(t, role_id, action, queue_id):
                gaps.append(f"{mapping_id}: role {role_id} lacks {action} on {queue_id}")
    return gaps


def image_build_gaps(t: Template) -> list[str]:
    gaps = []
    for build_id, build_resource in t.of_type("Custom::CDKContainerImageBuild").items():
        project_id = logical_id(build_resource["Properties"]["codeBuildProjectName"])
        project = t.props(project_id)
        role_id = logical_id(project["ServiceRole"])
        repository_id = logical_id(build_resource["Properties"]["repositoryUri"]["Fn::Join"][1][-1])
        for action in ("ecr:PutImage", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"):
            if not role_allows(t, role_id, action, repository_id):
                gaps.append(f"{build_id}: CodeBuild role {role_id} may not {action} to {repository_id}")
        group = project.get("LogsConfig", {}).get("CloudWatchLogs", {}).get("GroupName")
        if group is None:
            gaps.append(f"{project_id}: CodeBuild writes to a log group it creates itself (no retention)")
        elif not role_allows(t, role_id, "logs:PutLogEvents", logical_id(group)):
            gaps.append(f"{project_id}: CodeBuild role may not write its log group")
    return gaps


def lambda_failure_target_gaps(t: Template) -> list[str]:
    """A function's dead-letter queue and its async invocation destinations are written with the
    function's own role (Lambda Developer Guide, "Dead-letter queues" and "Destinations":
    execution role permissions)."""
    gaps = []
    targets = []
    for function_id, function in t.of_type("AWS::Lambda::Function").items():
        if "DeadLetterConfig" in function["Properties"]:
            targets.append((function_id, function["Properties"]["DeadLetterConfig"]["TargetArn"]))
    for config in t.of_type("AWS::Lambda::EventInvokeConfig").values():
        function_id = logical_id(config["Properties"]["FunctionName"])
        for outcome in config["Properties"].get("DestinationConfig", {}).values():
            targets.append((function_id, outcome["Destination"]))
    for function_id, arn in targets:
        target_id = logical_id(arn)
        kind = t.resources[target_id]["Type"] if target_id else None
        action = {"AWS::SQS::Queue": "sqs:SendMessage", "AWS::SNS::Topic": "sns:Publish",
                  "AWS::Lambda::Function": "lambda:InvokeFunction"}.get(kind)
        role_id = logical_id(t.props(function_id)["Role"])
        if action is None or not role_allows(t, role_id, action, target_id):
            gaps.append(f"{function_id}: its role may not {action or 'write'} to {arn}")
    return gaps


CHECKS = {
    "CloudWatch -> SNS": alarm_topic_gaps,
    "EventBridge -> targets": rule_target_gaps,
    "S3 -> EventBridge": s3_event_gaps,
    "ingress -> frame bus": event_bus_gaps,
    "API Gateway -> Lambda": api_integration_gaps,
    "SQS -> Lambda": event_source_gaps,
    "CodeBuild -> ECR, logs": image_build_gaps,
    "Lambda -> DLQ, destinations": lambda_failure_target_gaps,
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Template]:
    out = {}
    for name, context in CONTEXTS.items():
        outdir: Path = tmp_path_factory.mktemp(f"wiring-{name}")
        app, stack = build(context, outdir=str(outdir))
        out[name] = Template(app.synth().get_stack_artifact(stack.artifact_id).template)
    return out


@pytest.mark.parametrize("name", list(CONTEXTS))
@pytest.mark.parametrize("check", list(CHECKS))
def test_every_writer_is_allowed_by_its_target(templates, name, check):
    assert CHECKS[check](templates[name]) == []


def test_the_pairs_are_really_there(templates):
    """The walk is not vacuous: each kind of writer exists in the variant with everything on."""
    t = templates["everything"]
    assert len(t.of_type("AWS::CloudWatch::Alarm")) >= 20
    targets = [target for rule in t.of_type("AWS::Events::Rule").values() for target in rule["Properties"]["Targets"]]
    kinds = {t.resources[logical_id(target["Arn"])]["Type"] for target in targets}
    assert {"AWS::SQS::Queue", "AWS::Lambda::Function"} <= kinds
    assert any("DeadLetterConfig" in target for target in targets)
    assert t.of_type("AWS::ApiGatewayV2::Integration") and t.of_type("AWS::Lambda::EventSourceMapping")
    assert t.of_type("Custom::CDKContainerImageBuild")
    assert t.of_type("AWS::Events::EventBus") and any(
        logical_id(r["Properties"].get("EventBusName")) for r in t.of_type("AWS::Events::Rule").values())


def test_the_walk_catches_an_ingress_that_may_not_publish(templates):
    """Take events:PutEvents away from the roles: each publisher is named, and the rules on
    the bus are flagged as hearing nothing."""
    t = Template(json.loads(json.dumps({"Resources": templates["everything"].resources})))
    for policy in t.of_type("AWS::IAM::Policy").values():
        document = policy["Properties"]["PolicyDocument"]
        document["Statement"] = [st for st in document["Statement"] if st.get("Action") != "events:PutEvents"]
    gaps = event_bus_gaps(t)
    assert sum("may not events:PutEvents" in g for g in gaps) == 3  # the ingest function, the task, novelty
    assert sum("nothing in the stack may publish" in g for g in gaps) == len(
        [r for r in t.of_type("AWS::Events::Rule").values() if r["Properties"].get("EventBusName")])


def test_the_walk_catches_a_topic_policy_without_cloudwatch(templates):
    """The template before this fix: a topic policy holding only the SSL Deny. The check must
    name every alarm's action, not pass."""
    t = Template(json.loads(json.dumps({"Resources": templates["default"].resources})))
    (policy,) = t.of_type("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    policy["Properties"]["PolicyDocument"]["Statement"] = [s for s in statements if s["Effect"] == "Deny"]
    gaps = alarm_topic_gaps(t)
    assert len(gaps) == len(t.of_type("AWS::CloudWatch::Alarm"))
    assert all("does not let CloudWatch publish" in g for g in gaps)


def test_the_walk_catches_a_queue_without_an_eventbridge_allow(templates):
    t = Template(json.loads(json.dumps({"Resources": templates["everything"].resources})))
    for policy in t.of_type("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow":
                statement["Principal"] = {"Service": "sns.amazonaws.com"}
    assert any("does not let EventBridge send" in g for g in rule_target_gaps(t))


def test_the_walk_catches_a_function_whose_role_cannot_reach_its_dead_letter_queue():
    """framesink's functions have no dead-letter queue of their own today (EventBridge's and
    SQS's carry failures), so this pair is checked on a small template of that shape."""
    t = Template({"Resources": {
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {
            "Role": {"Fn::GetAtt": ["Role", "Arn"]}, "DeadLetterConfig": {"TargetArn": {"Fn::GetAtt": ["Queue", "Arn"]}}}},
    }})
    assert lambda_failure_target_gaps(t) == ["Fn: its role may not sqs:SendMessage to {'Fn::GetAtt': ['Queue', 'Arn']}"]
    t.resources["Policy"] = {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "Role"}], "PolicyDocument": {
        "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["Queue", "Arn"]}}]}}}
    assert lambda_failure_target_gaps(t) == []
