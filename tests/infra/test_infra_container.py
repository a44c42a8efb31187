"""The container ingress in the synthesized CDK app, for each way bots reach it:

- ``default`` (no context): ingress=both, CloudFront (VPC origin) in front of an internal ALB,
  the image built in CodeBuild at deploy time;
- ``container``: ingress=container, CloudFront with a custom domain (us-east-1 certificate),
  an image URI in private ECR, 2-12 tasks;
- ``alb``: containerFront=alb with a regional certificate (HTTPS on an internet-facing ALB),
  x86_64, the image built by the local Docker;
- ``plaintext``: containerFront=alb without a certificate, accepted only with allowPlaintext.

Checked: CloudFront in front of the ALB and the ALB answering only it; no internet-reachable
plaintext listener without the opt-in (and synth's refusal); wss:// URLs; least privilege;
timeouts that fit together; cdk-nag and cfn-lint clean for every variant; the image built
without Docker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from framesink_core.shared.schema import RECEIVERS_PK
from framesink_core.shared.settings import Settings
from framesink_receiver.config import DEFAULT_SHUTDOWN_GRACE
from infra import build, error_annotations
from infra.container_ingress import (
    ALB_IDLE_TIMEOUT,
    CLOUDFRONT_ORIGIN_FACING,
    CONTAINER_PORT,
    DEREGISTRATION_DELAY,
    DEREGISTRATION_WATCH_SECONDS,
    DOCKERFILE,
    ORIGIN_READ_TIMEOUT,
    STOP_TIMEOUT,
    task_environment,
)
from infra.settings import InfraSettings, SettingsError

pytestmark = pytest.mark.slow

US_EAST_1_CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0f5b8d2e-1111-2222-3333-444455556666"
REGIONAL_CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/0f5b8d2e-1111-2222-3333-444455556666"
ECR_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/framesink-receiver:1.2.3"
CONTEXTS = {
    "default": {},
    "container": {"ingress": "container", "frameExpiryDays": "7", "containerMinTasks": "2", "containerMaxTasks": "12",
                  "certificateArn": US_EAST_1_CERTIFICATE, "domainName": "frames.example.com",
                  "containerImage": ECR_IMAGE, "alarmEmail": "oncall@example.com", "rateLimitPerIp": "300"},
    "alb": {"ingress": "both", "containerFront": "alb", "certificateArn": REGIONAL_CERTIFICATE,
            "domainName": "frames.example.com", "architecture": "x86_64", "containerImage": "local"},
    "plaintext": {"ingress": "container", "containerFront": "alb", "allowPlaintext": "true"},
}
CLOUDFRONT_VARIANTS = ("default", "container")
# CloudFront's managed policies (their ids are fixed by AWS).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_AND_CLOUDFRONT_2022 = "33f36d7e-f396-46d9-90e0-52428a34d9dc"


class Synth:
    def __init__(self, context: dict, outdir: Path):
        self.outdir = outdir
        self.app, self.stack = build(context, outdir=str(outdir))
        self.assembly = self.app.synth()
        self.template = self.assembly.get_stack_artifact(self.stack.artifact_id).template
        self.assertions = Template.from_json(self.template)
        self.resources = self.template["Resources"]
        self.outputs = self.template["Outputs"]
        self.assets = json.loads((outdir / "Framesink.assets.json").read_text())

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

    def environment(self) -> dict:
        return {e["Name"]: e["Value"] for e in self.container_definition()["Environment"]}

    def subnet_kind(self, subnet_id: str) -> str:
        """'public' if its route table sends 0.0.0.0/0 to the internet gateway, else 'isolated'."""
        (assoc,) = [v["Properties"] for v in self.of_type("AWS::EC2::SubnetRouteTableAssociation").values()
                    if v["Properties"]["SubnetId"] == {"Ref": subnet_id}]
        routes = [v["Properties"] for v in self.of_type("AWS::EC2::Route").values()
                  if v["Properties"]["RouteTableId"] == assoc["RouteTableId"]]
        return "public" if any("GatewayId" in r and r["DestinationCidrBlock"] == "0.0.0.0/0" for r in routes) else "isolated"


@pytest.fixture(scope="module")
def synths(tmp_path_factory) -> dict[str, Synth]:
    return {name: Synth(context, tmp_path_factory.mktemp(f"cdk-{name}")) for name, context in CONTEXTS.items()}


@pytest.fixture(params=list(CONTEXTS))
def synth(request, synths) -> Synth:
    return synths[request.param]


def gid(logical_id: str) -> dict:
    return {"Fn::GetAtt": [logical_id, "GroupId"]}


# --- compliance -------------------------------------------------------------------------------


def test_a_rate_limit_puts_a_waf_rule_on_the_distribution_and_only_then(synths):
    """rateLimitPerIp: a CLOUDFRONT-scoped web ACL (the only scope a distribution takes), one
    rate-based rule per IP over WAF's 5-minute window, attached to the distribution."""
    synth = synths["container"]
    acl_id, acl = synth.one("AWS::WAFv2::WebACL")
    props = acl["Properties"]
    assert props["Scope"] == "CLOUDFRONT" and props["DefaultAction"] == {"Allow": {}}
    (rule,) = props["Rules"]
    assert rule["Action"] == {"Block": {}}
    assert rule["Statement"]["RateBasedStatement"] == {"AggregateKeyType": "IP", "EvaluationWindowSec": 300,
                                                       "Limit": 300}
    config = synth.props("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert config["WebACLId"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert not synths["default"].of_type("AWS::WAFv2::WebACL")


@pytest.mark.parametrize("context, region, message", [
    ({}, "cn-north-1", "no CloudFront VPC origins"),
    ({}, "us-gov-west-1", "containerFront=alb"),
    ({"rateLimitPerIp": "100"}, "eu-west-1", "us-east-1"),
    ({"certificateArn": US_EAST_1_CERTIFICATE, "domainName": "frames.example.com"}, "eu-west-1",
     "set originCertificateArn"),
])
def test_synth_refuses_what_the_region_cannot_deploy(context, region, message):
    from infra.settings import check_region

    settings = InfraSettings.from_context(context)
    with pytest.raises(SettingsError, match=message):
        check_region(settings, region)
    check_region(settings, "us-east-1")  # and accepts where it can
    check_region(settings, None)  # unknown region: CloudFormation decides


def test_the_image_build_cannot_hang_a_deploy_nor_keep_images_and_logs_forever(synths):
    """CloudFormation waits an hour for a custom resource that never answers unless it has a
    ServiceTimeout (AWS::CloudFormation::CustomResource, seconds, at most 3600)."""
    synth = synths["default"]
    (_, build) = synth.one("Custom::CDKContainerImageBuild")
    assert 0 < int(build["Properties"]["ServiceTimeout"]) <= 3600
    (_, repository) = synth.one("AWS::ECR::Repository")
    rules = json.loads(repository["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert [r["selection"]["countType"] for r in rules] == ["imageCountMoreThan"]
    project = synth.props("AWS::CodeBuild::Project")
    group = project["LogsConfig"]["CloudWatchLogs"]["GroupName"]["Ref"]
    assert synth.resources[group]["Properties"]["RetentionInDays"] == 30


def test_a_us_east_1_only_setting_makes_cloudformation_check_the_region_first(synths):
    """rateLimitPerIp and a certificate on the ALB without originCertificateArn need us-east-1:
    a template rule (checked before anything is created) names why, for deploys whose region
    synth did not know."""
    rules = synths["container"].template["Rules"]
    region_rules = {k: v for k, v in rules.items() if "Region" in k}
    assert len(region_rules) == 2
    for rule in region_rules.values():
        (assertion,) = rule["Assertions"]
        assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
        assert "us-east-1" in assertion["AssertDescription"]
    assert not [k for k in synths["default"].template.get("Rules", {}) if "Region" in k]


def test_cdk_nag_finds_nothing_unsuppressed(synth):
    assert error_annotations(synth.assembly) == []
    warnings = [m for st in synth.assembly.stacks_recursively for m in st.messages if m.level.name == "WARNING"]
    assert [str(w.entry.data) for w in warnings if "AwsSolutions" in str(w.entry.data) or "CdkNag" in str(w.entry.data)] == []


def test_every_suppression_has_a_written_reason(synth):
    for resource in synth.resources.values():
        for suppression in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert len(suppression["reason"]) >= 40, suppression


def test_cfn_lint_finds_no_problems(synth):
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(synth.template), config=ManualArgs(regions=["us-east-1", "eu-west-1"],
                                                                   ignore_checks=["W3005"]))
    assert [str(m) for m in matches] == []


# --- TLS: CloudFront in front, nothing plaintext on the internet unless asked for --------------


@pytest.mark.parametrize("name", CLOUDFRONT_VARIANTS)
def test_cloudfront_is_in_front_of_an_internal_alb_that_answers_only_it(synths, name):
    synth = synths[name]
    alb_id, alb = synth.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert alb["Properties"]["Scheme"] == "internal"
    assert {synth.subnet_kind(s["Ref"]) for s in alb["Properties"]["Subnets"]} == {"isolated"}
    (_, vpc_origin) = synth.one("AWS::CloudFront::VpcOrigin")
    endpoint = vpc_origin["Properties"]["VpcOriginEndpointConfig"]
    # With a certificate the CloudFront -> ALB leg is TLS too: an https-only origin on the ALB's
    # HTTPS listener; without one it stays HTTP inside the VPC.
    tls = bool(CONTEXTS[name].get("certificateArn"))
    port = 443 if tls else 80
    assert endpoint["Arn"] == {"Ref": alb_id}
    assert endpoint["OriginProtocolPolicy"] == ("https-only" if tls else "http-only")
    assert endpoint["HTTPSPort" if tls else "HTTPPort"] == port
    listeners = [v["Properties"] for v in synth.of_type("AWS::ElasticLoadBalancingV2::Listener").values()]
    assert [(li["Port"], li["Protocol"]) for li in listeners] == [(port, "HTTPS" if tls else "HTTP")]
    config = synth.props("AWS::CloudFront::Distribution")["DistributionConfig"]
    (origin,) = config["Origins"]
    assert "VpcOriginConfig" in origin and "CustomOriginConfig" not in origin
    # AWS documents two sources for VPC-origin traffic: CloudFront's origin-facing managed
    # prefix list, or the CloudFront-VPCOrigins-Service-SG group CloudFront creates ("Restrict
    # access with VPC origins", CloudFront Developer Guide). A VPC-CIDR rule is neither (teams
    # report 504s with one). Every way into the ALB must be one of the two, resolved by name.
    alb_sg = synth.security_group("framesink receiver ALB")
    inline = synth.resources[alb_sg]["Properties"].get("SecurityGroupIngress", [])
    rules = inline + [v["Properties"] for v in synth.of_type("AWS::EC2::SecurityGroupIngress").values()
                      if v["Properties"]["GroupId"] == gid(alb_sg)]
    assert rules, "the ALB admits nothing: CloudFront cannot reach it"
    for rule in rules:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", port, port)
        assert "CidrIp" not in rule and "CidrIpv6" not in rule, f"a CIDR is not CloudFront's documented source: {rule}"
        assert documented_cloudfront_source(synth, rule), rule


def documented_cloudfront_source(synth: Synth, rule: dict) -> bool:
    """The rule's source is the origin-facing prefix list or CloudFront's VPC-origin group, each
    found at deploy time by the name AWS gives it (a custom resource's SDK call)."""
    for key, (action, filter_name, value) in {
        "SourcePrefixListId": ("describeManagedPrefixLists", "prefix-list-name", CLOUDFRONT_ORIGIN_FACING),
        "SourceSecurityGroupId": ("describeSecurityGroups", "group-name", "CloudFront-VPCOrigins-Service-SG"),
    }.items():
        source = rule.get(key)
        if not isinstance(source, dict) or "Fn::GetAtt" not in source:
            continue
        lookup = synth.resources[source["Fn::GetAtt"][0]]
        if lookup["Type"] != "Custom::AWS":
            continue
        for phase in ("Create", "Update"):
            call = json.loads(lookup["Properties"][phase])
            filters = {f["Name"]: f["Values"] for f in call["parameters"]["Filters"]}
            if (call["service"], call["action"], filters.get(filter_name)) != ("EC2", action, [value]):
                return False
        return True
    return False


@pytest.mark.parametrize("name", CLOUDFRONT_VARIANTS)
def test_cloudfront_carries_the_token_signed_headers_and_websockets_uncached(synths, name):
    behavior = synths[name].props("AWS::CloudFront::Distribution")["DistributionConfig"]["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert behavior["CachePolicyId"] == CACHING_DISABLED
    # All viewer headers (Recall's webhook-*/svix-*, the websocket handshake) and the query
    # string (?token=), plus CloudFront-Viewer-Address for the connection log.
    assert behavior["OriginRequestPolicyId"] == ALL_VIEWER_AND_CLOUDFRONT_2022
    config = synths[name].props("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert config["HttpVersion"] == "http1.1"
    assert "Logging" not in config  # standard logs would record ?token= (see the CFR3 suppression)


def test_the_default_deploy_gives_create_bot_a_wss_cloudfront_url(synths):
    synth = synths["default"]
    dist_id, _ = synth.one("AWS::CloudFront::Distribution")
    url = {"Fn::Join": ["", ["wss://", {"Fn::GetAtt": [dist_id, "DomainName"]}, "/"]]}
    assert synth.outputs["WebSocketUrl"]["Value"] == synth.outputs["ContainerWebSocketUrl"]["Value"] == url
    assert "execute-api" in json.dumps(synth.outputs["ApiGatewayWebSocketUrl"]["Value"])  # ingress=both
    create_bot = [v["Properties"]["Environment"]["Variables"] for v in synth.of_type("AWS::Lambda::Function").values()
                  if v["Properties"].get("Handler") == "framesink_handlers.create_bot.handler"]
    assert [env["FRAMESINK_WS_URL"] for env in create_bot] == [url]
    assert synth.environment()["FRAMESINK_TRUST_CLOUDFRONT_HEADERS"] == "true"


def test_a_custom_domain_on_cloudfront_uses_the_us_east_1_certificate(synths):
    synth = synths["container"]
    config = synth.props("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert config["Aliases"] == ["frames.example.com"]
    assert config["ViewerCertificate"]["AcmCertificateArn"] == US_EAST_1_CERTIFICATE
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert synth.outputs["WebSocketUrl"]["Value"] == "wss://frames.example.com/"
    assert not [v for v in synth.of_type("AWS::ApiGatewayV2::Api").values()
                if v["Properties"]["ProtocolType"] == "WEBSOCKET"]  # ingress=container


def test_containerfront_alb_with_a_certificate_is_https_only(synths):
    synth = synths["alb"]
    assert synth.of_type("AWS::CloudFront::Distribution") == {}
    (listener,) = [v["Properties"] for v in synth.of_type("AWS::ElasticLoadBalancingV2::Listener").values()]
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["Certificates"] == [{"CertificateArn": REGIONAL_CERTIFICATE}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert synth.props("AWS::ElasticLoadBalancingV2::LoadBalancer")["Scheme"] == "internet-facing"
    assert synth.outputs["WebSocketUrl"]["Value"] == "wss://frames.example.com/"


def test_no_internet_reachable_plaintext_listener_without_the_opt_in(synths):
    for name, synth in synths.items():
        scheme = synth.props("AWS::ElasticLoadBalancingV2::LoadBalancer")["Scheme"]
        listeners = [v["Properties"] for v in synth.of_type("AWS::ElasticLoadBalancingV2::Listener").values()]
        plaintext_public = scheme == "internet-facing" and any(li["Protocol"] == "HTTP" for li in listeners)
        assert plaintext_public == (name == "plaintext"), name
        url = json.dumps(synth.outputs["WebSocketUrl"]["Value"])
        assert url.startswith('{"Fn::Join": ["", ["ws://') == (name == "plaintext"), name


def test_the_plaintext_opt_in_is_warned_about_at_synth(synths):
    messages = [str(m.entry.data) for st in synths["plaintext"].assembly.stacks_recursively for m in st.messages]
    assert any("allowPlaintext=true" in m and "unencrypted" in m for m in messages)


@pytest.mark.parametrize("context", [
    {"containerFront": "alb"},
    {"ingress": "container", "containerFront": "alb", "allowPlaintext": "false"},
])
def test_synth_refuses_a_plaintext_listener_without_the_opt_in(context):
    with pytest.raises(SettingsError, match=r"allowPlaintext=true") as err:
        InfraSettings.from_context(context)
    assert "\n" not in str(err.value)  # one line


def test_apigw_only_synth_warns_that_camera_frames_do_not_fit(tmp_path):
    app, stack = build({"ingress": "apigw"}, outdir=str(tmp_path))
    assembly = app.synth()
    messages = [str(m.entry.data) for st in assembly.stacks_recursively for m in st.messages]
    assert any("32 KB" in m and "no camera frame fits" in m for m in messages)
    template = assembly.get_stack_artifact(stack.artifact_id).template
    assert "execute-api" in json.dumps(template["Outputs"]["WebSocketUrl"]["Value"])
    assert not [v for v in template["Resources"].values() if v["Type"].startswith(("AWS::ECS::", "AWS::CloudFront::"))]


# --- network ----------------------------------------------------------------------------------


def test_no_nat_gateway_and_gateway_endpoints_only(synth):
    assert synth.of_type("AWS::EC2::NatGateway") == {} and synth.of_type("AWS::EC2::EIP") == {}
    endpoints = {json.dumps(v["Properties"]["ServiceName"]): v["Properties"]["VpcEndpointType"]
                 for v in synth.of_type("AWS::EC2::VPCEndpoint").values()}
    assert sorted(endpoints.values()) == ["Gateway", "Gateway"]
    assert any(".s3" in k for k in endpoints) and any(".dynamodb" in k for k in endpoints)
    assert synth.props("AWS::EC2::FlowLog")["TrafficType"] == "REJECT"
    service = synth.props("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert service["AssignPublicIp"] == "ENABLED"
    assert {synth.subnet_kind(s["Ref"]) for s in service["Subnets"]} == {"public"}


def test_only_the_alb_reaches_the_tasks(synth):
    alb_sg = synth.security_group("framesink receiver ALB")
    task_sg = synth.security_group("framesink receiver tasks")
    task_props = synth.resources[task_sg]["Properties"]
    assert "SecurityGroupIngress" not in task_props
    rules = [v["Properties"] for v in synth.of_type("AWS::EC2::SecurityGroupIngress").values()
             if v["Properties"]["GroupId"] == gid(task_sg)]
    assert [(r["SourceSecurityGroupId"], r["FromPort"], r["ToPort"]) for r in rules] == [
        (gid(alb_sg), CONTAINER_PORT, CONTAINER_PORT)]
    assert [(e["CidrIp"], e["FromPort"], e["ToPort"]) for e in task_props["SecurityGroupEgress"]] == [("0.0.0.0/0", 443, 443)]
    egress = [v["Properties"] for v in synth.of_type("AWS::EC2::SecurityGroupEgress").values()
              if v["Properties"]["GroupId"] == gid(alb_sg)]
    assert [(e["DestinationSecurityGroupId"], e["FromPort"]) for e in egress] == [(gid(task_sg), CONTAINER_PORT)]


# --- timeouts, draining, the task -------------------------------------------------------------


def test_timeouts_on_the_way_fit_the_receiver_keepalive_and_shutdown(synth):
    ping_interval = 20  # lambdas/framesink_receiver: ReceiverConfig.ping_interval
    alb = {a["Key"]: a["Value"] for a in synth.props("AWS::ElasticLoadBalancingV2::LoadBalancer")["LoadBalancerAttributes"]}
    assert int(alb["idle_timeout.timeout_seconds"]) == ALB_IDLE_TIMEOUT.to_seconds() > ping_interval
    assert alb["routing.http.drop_invalid_header_fields.enabled"] == "true"
    if synth.of_type("AWS::CloudFront::Distribution"):
        (origin,) = synth.props("AWS::CloudFront::Distribution")["DistributionConfig"]["Origins"]
        assert origin["VpcOriginConfig"]["OriginReadTimeout"] == ORIGIN_READ_TIMEOUT.to_seconds() > ping_interval
    _, target = synth.one("AWS::ElasticLoadBalancingV2::TargetGroup")
    attributes = {a["Key"]: a["Value"] for a in target["Properties"]["TargetGroupAttributes"]}
    # The receiver notices it was deregistered (no health checks) and moves its bots before the
    # ALB cuts them; ECS then sends SIGTERM, and the shutdown grace fits the stop timeout.
    assert int(attributes["deregistration_delay.timeout_seconds"]) == DEREGISTRATION_DELAY.to_seconds()
    assert DEREGISTRATION_WATCH_SECONDS < DEREGISTRATION_DELAY.to_seconds()
    env = synth.environment()
    assert env["FRAMESINK_DEREGISTRATION_WATCH_SECONDS"] == str(DEREGISTRATION_WATCH_SECONDS)
    assert float(env["FRAMESINK_SHUTDOWN_GRACE_SECONDS"]) == DEFAULT_SHUTDOWN_GRACE < STOP_TIMEOUT.to_seconds()
    assert synth.container_definition()["StopTimeout"] == STOP_TIMEOUT.to_seconds() == 120  # Fargate's maximum
    assert target["Properties"]["HealthCheckPath"] == "/healthz"


def test_task_definition_platform_and_environment(synths):
    for name, arch in (("default", "ARM64"), ("container", "ARM64"), ("alb", "X86_64")):
        synth = synths[name]
        task = synth.props("AWS::ECS::TaskDefinition")
        assert task["RuntimePlatform"] == {"CpuArchitecture": arch, "OperatingSystemFamily": "LINUX"}
        container = synth.container_definition()
        assert container["PortMappings"] == [{"ContainerPort": CONTAINER_PORT, "Protocol": "tcp"}]
        assert container["ReadonlyRootFilesystem"] is True and container["LogConfiguration"]["LogDriver"] == "awslogs"
        assert "Secrets" not in container  # no secret values, not even as ECS secrets: the core reads them
        env = synth.environment()
        expected = task_environment(Settings(bucket="b", table="t", token_secret_id="s", event_bus="e"), service_name="x",
                                    behind_cloudfront=name in CLOUDFRONT_VARIANTS)
        assert sorted(env) == sorted(expected)
        expiry = InfraSettings.from_context(CONTEXTS[name]).frame_expiry_days
        assert env["FRAMESINK_FRAME_EXPIRY_DAYS"] == str(expiry)
        # The spool: the one writable path, a task volume (no host path: the task's own storage).
        assert container["MountPoints"] == [{"ContainerPath": env["FRAMESINK_SPOOL_DIR"], "ReadOnly": False,
                                             "SourceVolume": "spool"}]
        assert task["Volumes"] == [{"Name": "spool"}]
        spool_mb = InfraSettings.from_context(CONTEXTS[name]).spool_max_mb
        assert env["FRAMESINK_SPOOL_MAX_BYTES"] == str(spool_mb * 1024 * 1024)


def test_task_role_holds_what_the_core_calls_and_nothing_more(synths):
    synth = synths["default"]
    task_role = synth.props("AWS::ECS::TaskDefinition")["TaskRoleArn"]["Fn::GetAtt"][0]
    granted = synth.role_statements(task_role)
    assert {a for a, _ in granted} == {"s3:PutObject", "s3:GetObject", "dynamodb:GetItem", "dynamodb:PutItem",
                                       "dynamodb:UpdateItem", "dynamodb:BatchWriteItem", "dynamodb:Query",
                                       "dynamodb:DeleteItem", "secretsmanager:GetSecretValue", "events:PutEvents"}
    s3_resources = [json.loads(r) for a, r in granted if a.startswith("s3:")]
    assert all(r["Fn::Join"][1][-1] == "/recordings/*" for r in s3_resources)
    # The websocket Lambdas (the same core) hold the same data-plane actions, but BatchWriteItem:
    # a Lambda writes one index item per invocation.
    lambdas = set()
    for handler in ("connect", "disconnect", "ingest"):
        lambdas |= synth.role_statements(synth.function_role(f"framesink_handlers.{handler}.handler"))
    data_plane = {(a, r) for a, r in lambdas if not a.startswith(("logs:", "xray:"))}
    receiver_only = ("dynamodb:BatchWriteItem", "dynamodb:Query", "dynamodb:DeleteItem")
    assert granted - data_plane == {(a, r) for a, r in granted if a in receiver_only}
    # Query and DeleteItem are the receiver leases' (access/connections.py): only on that one
    # partition, by the dynamodb:LeadingKeys condition ("access items that have a specific
    # partition key value", DynamoDB developer guide, fine-grained access control).
    lease_statements = [st for policy in synth.of_type("AWS::IAM::Policy").values()
                        if {"Ref": task_role} in policy["Properties"]["Roles"]
                        for st in policy["Properties"]["PolicyDocument"]["Statement"]
                        if {"dynamodb:Query", "dynamodb:DeleteItem"} & set(st["Action"] if isinstance(st["Action"], list)
                                                                          else [st["Action"]])]
    assert lease_statements and all(
        st.get("Condition") == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [RECEIVERS_PK]}}
        for st in lease_statements)
    assert "ManagedPolicyArns" not in synth.resources[task_role]["Properties"]


def test_autoscaling_on_cpu(synth):
    target = synth.props("AWS::ApplicationAutoScaling::ScalableTarget")
    settings = synth.stack.settings
    assert (target["MinCapacity"], target["MaxCapacity"]) == (settings.container_min_tasks, settings.container_max_tasks)
    assert synth.props("AWS::ECS::Service")["DesiredCount"] == settings.container_min_tasks
    policy = synth.props("AWS::ApplicationAutoScaling::ScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert policy["ScaleInCooldown"] > policy["ScaleOutCooldown"]


# --- the image, without Docker --------------------------------------------------------------------


def test_the_default_image_is_built_in_codebuild_from_a_source_asset(synths):
    synth = synths["default"]
    assert synth.assets.get("dockerImages", {}) == {}  # nothing for a local Docker to build
    (_, project) = synth.one("AWS::CodeBuild::Project")
    assert project["Properties"]["Environment"]["Type"] == "ARM_CONTAINER"  # the task's platform, natively
    (_, build) = synth.one("Custom::CDKContainerImageBuild")
    command = build["Properties"]["buildCommand"]
    assert f"--file {DOCKERFILE}" in command.replace("\"", "").replace("'", "") or DOCKERFILE in command
    assert "linux/arm64" in command
    # The source asset holds the allow-list of .dockerignore: the core and the receiver.
    staged = [synth.outdir / f["source"]["path"] for f in synth.assets["files"].values()
              if (synth.outdir / f["source"]["path"] / "container" / "Dockerfile").exists()]
    assert len(staged) == 1
    files = {p.relative_to(staged[0]).as_posix() for p in staged[0].rglob("*") if p.is_file()}
    assert {"container/Dockerfile", "container/requirements.txt", "lambdas/framesink_core/ingest/ingestor.py",
            "lambdas/framesink_receiver/server.py"} <= files
    assert not {f for f in files if f.startswith(("tests/", ".venv/", "node_modules/", "framesink/", "cdk.out/",
                                                  "lambdas/framesink_handlers/")) or "__pycache__" in f}
    image = synth.container_definition()["Image"]
    assert "Fn::Join" in image and "ImageTag" in json.dumps(image)


def test_an_image_uri_is_used_as_is_with_pull_rights_on_its_repository_only(synths):
    synth = synths["container"]
    assert synth.of_type("AWS::CodeBuild::Project") == {} and synth.assets.get("dockerImages", {}) == {}
    image = json.dumps(synth.container_definition()["Image"])
    assert "framesink-receiver" in image and "1.2.3" in image and "dkr.ecr.eu-west-1" in image
    execution_role = synth.props("AWS::ECS::TaskDefinition")["ExecutionRoleArn"]["Fn::GetAtt"][0]
    pulls = [r for a, r in synth.role_statements(execution_role) if a == "ecr:BatchGetImage"]
    assert pulls and all("repository/framesink-receiver" in r for r in pulls)


def test_containerimage_local_builds_with_the_local_docker(synths):
    (image,) = synths["alb"].assets["dockerImages"].values()
    assert (image["source"]["dockerFile"], image["source"]["platform"]) == (DOCKERFILE, "linux/amd64")
    assert synths["alb"].of_type("AWS::CodeBuild::Project") == {}


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("context, message", [
    ({"ingress": "fargate"}, "'ingress' must be one of ['apigw', 'both', 'container']"),
    ({"containerFront": "nlb"}, "'containerFront' must be one of ['alb', 'cloudfront']"),
    ({"certificateArn": US_EAST_1_CERTIFICATE}, "'certificateArn' and 'domainName' go together"),
    ({"domainName": "frames.example.com"}, "'certificateArn' and 'domainName' go together"),
    ({"certificateArn": "arn:aws:iam::123456789012:role/x", "domainName": "a.example.com"}, "ACM certificate ARN"),
    ({"certificateArn": US_EAST_1_CERTIFICATE, "domainName": "not a host"}, "must be a DNS name"),
    ({"certificateArn": REGIONAL_CERTIFICATE, "domainName": "a.example.com"}, "only uses certificates from us-east-1"),
    ({"containerMinTasks": 5, "containerMaxTasks": 4}, "1 <= min <= max <= 100"),
    ({"containerMinTasks": 0}, "1 <= min <= max <= 100"),
    ({"containerMaxTasks": "many"}, "'containerMaxTasks' must be a whole number"),
    ({"containerImage": "not an image"}, "'containerImage' must be empty"),
    ({"containerImage": "repo/without-a-tag"}, "'containerImage' must be empty"),
    ({"alarmEmail": "nobody"}, "'alarmEmail' must be an email address"),
    ({"allowPlaintext": "yes"}, "'allowPlaintext' must be true or false"),
    ({"originCertificateArn": REGIONAL_CERTIFICATE}, "needs containerFront=cloudfront with certificateArn"),
    ({"certificateArn": US_EAST_1_CERTIFICATE, "domainName": "a.example.com", "originCertificateArn": "x"},
     "'originCertificateArn' must be an ACM certificate ARN"),
    ({"rateLimitPerIp": "5"}, "'rateLimitPerIp' must be 0"),
    ({"containerFront": "alb", "allowPlaintext": "true", "rateLimitPerIp": "100"}, "only ingress=both|container with"),
    ({"exportMemoryMb": "4000000"}, "'exportMemoryMb' must be 1024-10240"),
    ({"spoolMaxMb": "-1"}, "'spoolMaxMb' must be 0-16384"),
])
def test_bad_ingress_settings_fail_with_the_key_named(context, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        InfraSettings.from_context(context)


def test_ingress_choices():
    assert [(s.apigw_ingress, s.container_ingress) for s in
            (InfraSettings.from_context({"ingress": i}) for i in ("apigw", "container", "both"))] == [
        (True, False), (False, True), (True, True)]
    assert InfraSettings.from_context({}).ingress == "both"
