"""The container ingress in the synthesized CDK app (ingress=container and ingress=both):
ECS, ALB and network resources, least privilege, outputs, cdk-nag and cfn-lint; and that
synth stages the image's build context without Docker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from framesink_core.settings import Settings
from infra import build, error_annotations
from infra.container_ingress import CONTAINER_PORT, DOCKERFILE, task_environment
from infra.settings import InfraSettings, SettingsError

pytestmark = pytest.mark.slow

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0f5b8d2e-1111-2222-3333-444455556666"
CONTEXTS = {
    "container": {"ingress": "container", "frameExpiryDays": "7", "containerMinTasks": "2", "containerMaxTasks": "12"},
    # With a certificate, and on x86_64 (the image platform and task platform follow).
    "both": {"ingress": "both", "certificateArn": CERTIFICATE, "domainName": "frames.example.com",
             "architecture": "x86_64"},
}


class Synth:
    def __init__(self, context: dict, outdir: Path):
        self.outdir = outdir
        self.app, self.stack = build(context, outdir=str(outdir))
        self.assembly = self.app.synth()
        self.template = self.assembly.get_stack_artifact(self.stack.artifact_id).template
        self.assertions = Template.from_json(self.template)
        self.resources = self.template["Resources"]

    def of_type(self, kind: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    def one(self, kind: str) -> tuple[str, dict]:
        (item,) = self.of_type(kind).items()
        return item

    def props(self, kind: str) -> dict:
        return self.one(kind)[1]["Properties"]

    def security_group(self, description_start: str) -> str:
        (logical_id,) = [k for k, v in self.of_type("AWS::EC2::SecurityGroup").items()
                         if v["Properties"]["GroupDescription"].startswith(description_start)]
        return logical_id

    def role_statements(self, role_id: str) -> set[tuple[str, str]]:
        pairs = set()
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} not in policy["Properties"]["Roles"]:
                continue
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                pairs |= {(a, json.dumps(r, sort_keys=True)) for a in actions for r in resources}
        return pairs

    def function_role(self, handler: str) -> str:
        (fn,) = [v for v in self.of_type("AWS::Lambda::Function").values() if v["Properties"].get("Handler") == handler]
        return fn["Properties"]["Role"]["Fn::GetAtt"][0]

    def container_definition(self) -> dict:
        (definition,) = self.props("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
        return definition


@pytest.fixture(scope="module")
def synths(tmp_path_factory) -> dict[str, Synth]:
    return {name: Synth(context, tmp_path_factory.mktemp(f"cdk-{name}")) for name, context in CONTEXTS.items()}


@pytest.fixture(params=list(CONTEXTS))
def synth(request, synths) -> Synth:
    return synths[request.param]


def gid(logical_id: str) -> dict:
    return {"Fn::GetAtt": [logical_id, "GroupId"]}


# --- compliance -------------------------------------------------------------------------------


def test_cdk_nag_finds_nothing_unsuppressed(synth):
    assert error_annotations(synth.assembly) == []
    warnings = [m for st in synth.assembly.stacks_recursively for m in st.messages if m.level.name == "WARNING"]
    assert [str(w.entry.data) for w in warnings if "AwsSolutions" in str(w.entry.data)] == []


def test_cfn_lint_finds_no_problems(synth):
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(synth.template), config=ManualArgs(regions=["us-east-1", "eu-west-1"],
                                                                   ignore_checks=["W3005"]))
    assert [str(m) for m in matches] == []


# --- network ----------------------------------------------------------------------------------


def test_no_nat_gateway_public_subnets_and_gateway_endpoints_only(synth):
    assert synth.of_type("AWS::EC2::NatGateway") == {} and synth.of_type("AWS::EC2::EIP") == {}
    subnets = synth.of_type("AWS::EC2::Subnet")
    assert len(subnets) == 2 and all(s["Properties"]["MapPublicIpOnLaunch"] for s in subnets.values())
    endpoints = {json.dumps(v["Properties"]["ServiceName"]): v["Properties"]["VpcEndpointType"]
                 for v in synth.of_type("AWS::EC2::VPCEndpoint").values()}
    assert sorted(endpoints.values()) == ["Gateway", "Gateway"]
    assert any(".s3" in k for k in endpoints) and any(".dynamodb" in k for k in endpoints)
    assert synth.props("AWS::EC2::FlowLog")["TrafficType"] == "REJECT"
    service = synth.props("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert service["AssignPublicIp"] == "ENABLED"


def test_only_the_alb_reaches_the_tasks(synth):
    alb_sg = synth.security_group("framesink receiver ALB")
    task_sg = synth.security_group("framesink receiver tasks")
    alb_props = synth.resources[alb_sg]["Properties"]
    task_props = synth.resources[task_sg]["Properties"]
    # The task group has no inline ingress; its one ingress rule names the ALB's group.
    assert "SecurityGroupIngress" not in task_props
    rules = [v["Properties"] for v in synth.of_type("AWS::EC2::SecurityGroupIngress").values()
             if v["Properties"]["GroupId"] == gid(task_sg)]
    assert [(r["SourceSecurityGroupId"], r["FromPort"], r["ToPort"]) for r in rules] == [
        (gid(alb_sg), CONTAINER_PORT, CONTAINER_PORT)]
    assert all(v["Properties"]["GroupId"] == gid(task_sg) for v in synth.of_type("AWS::EC2::SecurityGroupIngress").values())
    # The task group's egress is HTTPS only; the ALB's goes to the tasks only.
    assert [(e["CidrIp"], e["FromPort"], e["ToPort"]) for e in task_props["SecurityGroupEgress"]] == [("0.0.0.0/0", 443, 443)]
    assert "SecurityGroupEgress" not in alb_props
    egress = [v["Properties"] for v in synth.of_type("AWS::EC2::SecurityGroupEgress").values()]
    assert [(e["GroupId"], e["DestinationSecurityGroupId"], e["FromPort"]) for e in egress] == [
        (gid(alb_sg), gid(task_sg), CONTAINER_PORT)]
    # The ALB's only ingress is its listener port, from anywhere.
    listener_port = synth.props("AWS::ElasticLoadBalancingV2::Listener")["Port"]
    assert [(i["CidrIp"], i["FromPort"]) for i in alb_props["SecurityGroupIngress"]] == [("0.0.0.0/0", listener_port)]


# --- load balancer and service ------------------------------------------------------------------


def test_http_listener_without_a_certificate(synths):
    listener = synths["container"].props("AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    assert "Certificates" not in listener


def test_https_listener_with_the_certificate(synths):
    listener = synths["both"].props("AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["Certificates"] == [{"CertificateArn": CERTIFICATE}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")


def test_target_group_checks_healthz_and_drains_briefly(synth):
    target_id, target = synth.one("AWS::ElasticLoadBalancingV2::TargetGroup")
    props = target["Properties"]
    assert (props["HealthCheckPath"], props["Matcher"], props["TargetType"], props["Port"]) == (
        "/healthz", {"HttpCode": "200"}, "ip", CONTAINER_PORT)
    attributes = {a["Key"]: a["Value"] for a in props["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "30"
    assert attributes.get("stickiness.enabled", "false") == "false"
    listener = synth.props("AWS::ElasticLoadBalancingV2::Listener")
    assert listener["DefaultActions"] == [{"TargetGroupArn": {"Ref": target_id}, "Type": "forward"}]
    alb = {a["Key"]: a["Value"] for a in synth.props("AWS::ElasticLoadBalancingV2::LoadBalancer")["LoadBalancerAttributes"]}
    assert int(alb["idle_timeout.timeout_seconds"]) >= 120
    assert alb["routing.http.drop_invalid_header_fields.enabled"] == "true"


def test_task_definition_platform_image_and_environment(synths):
    for name, arch, platform in (("container", "ARM64", "linux/arm64"), ("both", "X86_64", "linux/amd64")):
        synth = synths[name]
        task = synth.props("AWS::ECS::TaskDefinition")
        assert task["RuntimePlatform"] == {"CpuArchitecture": arch, "OperatingSystemFamily": "LINUX"}
        assert task["RequiresCompatibilities"] == ["FARGATE"]
        container = synth.container_definition()
        assert container["PortMappings"] == [{"ContainerPort": CONTAINER_PORT, "Protocol": "tcp"}]
        assert container["ReadonlyRootFilesystem"] is True and container["LogConfiguration"]["LogDriver"] == "awslogs"
        assert "Secrets" not in container  # no secret values, not even as ECS secrets: the core reads them
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert sorted(env) == sorted(task_environment(Settings(bucket="b", table="t", token_secret_id="s"),
                                                      service_name="x"))
        assert env["FRAMESINK_TOKEN_SECRET_ID"] == {"Ref": synth.template["Outputs"]["TokenSecretArn"]["Value"]["Ref"]}
        # The receiver's index items expire with the frames' S3 lifecycle (context frameExpiryDays).
        (bucket,) = [v["Properties"] for v in synth.of_type("AWS::S3::Bucket").values() if "LifecycleConfiguration"
                     in v["Properties"] and v["Properties"]["LifecycleConfiguration"]["Rules"][0]["Id"] == "expire-frames"]
        expiry = InfraSettings.from_context(CONTEXTS[name]).frame_expiry_days
        assert env["FRAMESINK_FRAME_EXPIRY_DAYS"] == str(expiry)
        assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == expiry
        (image,) = json.loads((synth.outdir / "Framesink.assets.json").read_text())["dockerImages"].values()
        assert (image["source"]["dockerFile"], image["source"]["platform"]) == (DOCKERFILE, platform)


def test_synth_stages_the_image_context_without_docker(synths):
    """DockerImageAsset copies and hashes the build context at synth; Docker runs at deploy."""
    synth = synths["container"]
    (image,) = json.loads((synth.outdir / "Framesink.assets.json").read_text())["dockerImages"].values()
    staged = synth.outdir / image["source"]["directory"]
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert {"container/Dockerfile", "container/requirements.txt", "framesink/receiver.py",
            "lambdas/framesink_core/ingest.py"} <= files
    assert not {f for f in files if f.startswith(("tests/", ".venv/", "node_modules/", "lambdas/framesink_handlers/"))
                or "__pycache__" in f}


def test_task_role_has_the_websocket_functions_actions_and_nothing_more(synths):
    synth = synths["both"]
    task = synth.props("AWS::ECS::TaskDefinition")
    task_role = task["TaskRoleArn"]["Fn::GetAtt"][0]
    granted = synth.role_statements(task_role)
    lambdas = set()
    for handler in ("connect", "disconnect", "ingest"):
        lambdas |= synth.role_statements(synth.function_role(f"framesink_handlers.{handler}.handler"))
    # The functions' own log group and X-Ray grants are theirs; the data-plane ones must match.
    data_plane = {(a, r) for a, r in lambdas if not a.startswith(("logs:", "xray:"))}
    assert granted == data_plane
    assert {a for a, _ in granted} == {"s3:PutObject", "dynamodb:GetItem", "dynamodb:PutItem",
                                       "dynamodb:UpdateItem", "secretsmanager:GetSecretValue"}
    s3_resources = [json.loads(r) for a, r in granted if a == "s3:PutObject"]
    assert all(r["Fn::Join"][1][-1] == "/recordings/*" for r in s3_resources)
    assert "ManagedPolicyArns" not in synth.resources[task_role]["Properties"]


def test_autoscaling_on_cpu(synth):
    target = synth.props("AWS::ApplicationAutoScaling::ScalableTarget")
    settings = synth.stack.settings
    assert (target["MinCapacity"], target["MaxCapacity"]) == (settings.container_min_tasks, settings.container_max_tasks)
    assert synth.props("AWS::ECS::Service")["DesiredCount"] == settings.container_min_tasks
    policy = synth.props("AWS::ApplicationAutoScaling::ScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert policy["ScaleInCooldown"] > policy["ScaleOutCooldown"]


def test_alarms_cover_the_container(synth):
    alarms = [v["Properties"] for v in synth.of_type("AWS::CloudWatch::Alarm").values()]
    assert any(a.get("MetricName") == "HealthyHostCount" for a in alarms)
    filters = [v["Properties"] for v in synth.of_type("AWS::Logs::MetricFilter").values()]
    container_logs = synth.container_definition()["LogConfiguration"]["Options"]["awslogs-group"]
    assert any(f["LogGroupName"] == container_logs for f in filters)


# --- outputs and create-bot -------------------------------------------------------------------


def test_container_only_has_no_websocket_api_and_bots_get_the_alb_url(synths):
    synth = synths["container"]
    apis = [v for v in synth.of_type("AWS::ApiGatewayV2::Api").values() if v["Properties"]["ProtocolType"] == "WEBSOCKET"]
    assert apis == []
    outputs = synth.template["Outputs"]
    alb_id, _ = synth.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    url = {"Fn::Join": ["", ["ws://", {"Fn::GetAtt": [alb_id, "DNSName"]}, "/"]]}
    assert outputs["WebSocketUrl"]["Value"] == outputs["ContainerWebSocketUrl"]["Value"] == url
    assert "ApiGatewayWebSocketUrl" not in outputs
    create_bot = [v for v in synth.of_type("AWS::Lambda::Function").values()
                  if v["Properties"].get("Handler") == "framesink_handlers.create_bot.handler"]
    assert [f["Properties"]["Environment"]["Variables"]["FRAMESINK_WS_URL"] for f in create_bot] == [url]


def test_both_sends_bots_to_the_container_and_keeps_the_api_gateway_url(synths):
    outputs = synths["both"].template["Outputs"]
    assert outputs["WebSocketUrl"]["Value"] == outputs["ContainerWebSocketUrl"]["Value"] == "wss://frames.example.com/"
    assert "execute-api" in json.dumps(outputs["ApiGatewayWebSocketUrl"]["Value"])
    assert "LoadBalancerDnsName" in outputs


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("context, message", [
    ({"ingress": "fargate"}, "'ingress' must be one of ['apigw', 'both', 'container']"),
    ({"certificateArn": CERTIFICATE}, "'certificateArn' and 'domainName' go together"),
    ({"domainName": "frames.example.com"}, "'certificateArn' and 'domainName' go together"),
    ({"certificateArn": "arn:aws:iam::123456789012:role/x", "domainName": "a.example.com"}, "ACM certificate ARN"),
    ({"certificateArn": CERTIFICATE, "domainName": "not a host"}, "must be a DNS name"),
    ({"containerMinTasks": 5, "containerMaxTasks": 4}, "1 <= min <= max <= 100"),
    ({"containerMinTasks": 0}, "1 <= min <= max <= 100"),
    ({"containerMaxTasks": "many"}, "'containerMaxTasks' must be a whole number"),
])
def test_bad_ingress_settings_fail_with_the_key_named(context, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        InfraSettings.from_context(context)


def test_ingress_choices():
    assert [(s.apigw_ingress, s.container_ingress) for s in
            (InfraSettings.from_context({"ingress": i}) for i in ("apigw", "container", "both"))] == [
        (True, False), (False, True), (True, True)]
