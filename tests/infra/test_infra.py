"""The CDK app, synthesized for real (in-process, with the real bundling) and checked with
aws_cdk.assertions, cdk-nag and cfn-lint.

Three apps are built per module: the defaults (cdk.json), a variant with every setting
changed, and the defaults plus one deliberately non-compliant bucket (proves cdk-nag is live).
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from framesink_core.shared import schema
from infra import build, cdk_json, error_annotations
from infra.bundling import PACKAGES, RUNTIME_PROVIDED_MODULES
from infra.meetings import EXPORT_CONCURRENCY, WEBHOOK_CONCURRENCY
from infra.settings import DEFAULTS, InfraSettings, SettingsError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = {
    "$connect": "framesink_handlers.connect.handler",
    "$disconnect": "framesink_handlers.disconnect.handler",
    "$default": "framesink_handlers.ingest.handler",
}
VARIANT = {
    "stage": "dev",
    "architecture": "x86_64",
    "frameExpiryDays": "0",  # as `cdk synth -c frameExpiryDays=0` passes it: a string
    "removalPolicy": "destroy",
    "logRetentionDays": 7,
    "maxFrameBytes": 1048576,
    "staticToken": "false",
    "verificationSecretName": "recall/whsec",
    "apiGatewayCloudWatchRole": True,
    "exportMemoryMb": 4096,
    "reservedConcurrency": False,
    "canary": False,
}
CANARY = "NagCanary"


class Synth:
    """One synthesized app: the stack, its template (dict + assertions) and asset folder."""

    def __init__(self, context: dict | None, outdir: Path):
        self.app, self.stack = build(context, outdir=str(outdir))
        self.assembly = self.app.synth()
        artifact = self.assembly.get_stack_artifact(self.stack.artifact_id)
        self.template = artifact.template
        self.assertions = Template.from_json(self.template)
        self.resources = self.template["Resources"]
        # The folders CDK staged for framesink's functions: the ingest/query functions share one
        # asset; the export job (and the analyzer) share the media asset (PyAV, Pillow).
        def key_of(handlers):
            functions = self.functions()
            (key,) = {self.resources[functions[h]]["Properties"]["Code"]["S3Key"] for h in handlers if h in functions}
            return outdir / f"asset.{key.removesuffix('.zip')}"

        media = {"framesink_handlers.export.handler", "framesink_handlers.slides.handler",
                 "framesink_handlers.novelty.handler"}
        self.asset = key_of(set(self.functions()) - media)
        self.media_asset = key_of(media) if media & set(self.functions()) else None

    def of_type(self, kind: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    def only(self, kind: str) -> str:
        (logical_id,) = self.of_type(kind)
        return logical_id

    def props_of_only(self, kind: str) -> dict:
        return self.resources[self.only(kind)]["Properties"]

    def frames_bucket(self) -> str:
        (logical_id,) = [k for k, v in self.of_type("AWS::S3::Bucket").items() if "LoggingConfiguration" in v["Properties"]]
        return logical_id

    def websocket_api(self) -> str:
        (api,) = [k for k, v in self.of_type("AWS::ApiGatewayV2::Api").items()
                  if v["Properties"]["ProtocolType"] == "WEBSOCKET"]  # fmt: skip
        return api

    def websocket(self, kind: str) -> dict[str, dict]:
        """Resources of one kind that belong to the WebSocket API (routes, stage, ...)."""
        api = ref(self.websocket_api())
        return {k: v for k, v in self.of_type(kind).items() if v["Properties"].get("ApiId") == api}

    def token_secret(self) -> str:
        return self.template["Outputs"]["TokenSecretArn"]["Value"]["Ref"]

    def functions(self) -> dict[str, str]:
        """handler -> logical id of framesink's functions (CDK's own helpers excluded)."""
        return {
            v["Properties"]["Handler"]: k
            for k, v in self.of_type("AWS::Lambda::Function").items()
            if v["Properties"]["Handler"].startswith("framesink_handlers.")
        }

    def statements(self, function_id: str) -> set[tuple[str, str]]:
        """(action, resource) pairs of every policy attached to a function's role."""
        role = self.resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        assert "ManagedPolicyArns" not in self.resources[role]["Properties"]
        docs = [p["PolicyDocument"] for p in self.resources[role]["Properties"].get("Policies", [])]
        docs += [
            v["Properties"]["PolicyDocument"]
            for v in self.of_type("AWS::IAM::Policy").values()
            if {"Ref": role} in v["Properties"]["Roles"]
        ]
        pairs = set()
        for doc in docs:
            for st in doc["Statement"]:
                assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                pairs |= {(a, json.dumps(r, sort_keys=True)) for a in actions for r in resources}
        return pairs

    def env(self, function_id: str) -> dict:
        return self.resources[function_id]["Properties"]["Environment"]["Variables"]


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> Synth:
    return Synth(None, tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> Synth:
    return Synth(VARIANT, tmp_path_factory.mktemp("cdk-variant"))


def ref(logical_id: str) -> dict:
    return {"Ref": logical_id}


def arn(logical_id: str) -> dict:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def pairs(actions: list[str], resource) -> set[tuple[str, str]]:
    return {(a, json.dumps(resource, sort_keys=True)) for a in actions}


# --- settings -------------------------------------------------------------------------------


def test_cdk_json_lists_every_default_and_runs_the_venv_offline():
    config = cdk_json()
    assert {k: config["context"][k] for k in DEFAULTS} == DEFAULTS
    assert config["app"].split()[0] == ".venv/bin/python"
    assert config["notices"] is False and config["context"]["cli-telemetry"] is False


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("stage", "Live!", "stage"),
        ("logRetentionDays", 31, "logRetentionDays"),
        ("logRetentionDays", True, "whole number"),
        ("frameExpiryDays", "-1", ">= 0"),
        ("frameExpiryDays", "ten", "whole number"),
        ("maxFrameBytes", 0, "positive"),
        ("removalPolicy", "snapshot", "['destroy', 'retain']"),
        ("architecture", "arm", "['arm64', 'x86_64']"),
        ("staticToken", "yes", "true or false"),
        ("verificationSecretName", "whsec_c2VjcmV0", "never the value"),
        ("verificationSecretName", "bad name", "secret name"),
        ("recallRegion", "us-east-2", "recallRegion"),
        ("recallApiKeySecretName", "not a name!", "never the key itself"),
        ("recallEndpointForm", "deep", "['flat', 'nested']"),
        ("botTokenTtlSeconds", "10", ">= 60"),
        ("botTokenTtlSeconds", True, ">= 60"),
        ("botTokenTtlSeconds", "a day", ">= 60"),
    ],
)
def test_bad_settings_fail_with_the_key_named(key, value, fragment):
    with pytest.raises(SettingsError) as caught:
        InfraSettings.from_context({key: value})
    assert key in str(caught.value) and fragment in str(caught.value)


def test_settings_accept_cli_strings():
    s = InfraSettings.from_context({"logRetentionDays": "90", "staticToken": "False", "architecture": "X86_64"})
    assert (s.log_retention_days, s.static_token, s.architecture_name) == (90, False, "x86_64")
    assert InfraSettings.from_context({}) == InfraSettings()
    assert InfraSettings.from_context({"stage": "qa"}).stack_name == "framesink-qa"


# --- websocket API --------------------------------------------------------------------------


def test_three_routes_each_invoke_their_handler(default):
    functions = {v: k for k, v in default.functions().items()}
    routes = default.websocket("AWS::ApiGatewayV2::Route")
    assert sorted(r["Properties"]["RouteKey"] for r in routes.values()) == sorted(HANDLERS)
    api = default.websocket_api()
    for route in routes.values():
        props = route["Properties"]
        integration_id = props["Target"]["Fn::Join"][1][1]["Ref"]
        integration = default.resources[integration_id]["Properties"]
        assert integration["IntegrationType"] == "AWS_PROXY"
        function_id = next(part["Fn::GetAtt"][0] for part in integration["IntegrationUri"]["Fn::Join"][1]
                           if isinstance(part, dict) and "Fn::GetAtt" in part)  # fmt: skip
        assert functions[function_id] == HANDLERS[props["RouteKey"]]
    # API Gateway may invoke each route's function, and only from this API.
    for function_id in (default.functions()[h] for h in HANDLERS.values()):
        default.assertions.has_resource_properties(
            "AWS::Lambda::Permission",
            {
                "Action": "lambda:InvokeFunction",
                "FunctionName": arn(function_id),
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": {"Fn::Join": ["", Match.array_with([ref(api)])]},
            },
        )


def test_stage_auto_deploys_throttles_and_logs_without_the_token(default):
    (stage,) = [v["Properties"] for v in default.websocket("AWS::ApiGatewayV2::Stage").values()]
    assert stage["StageName"] == "live" and stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] >= stage["DefaultRouteSettings"]["ThrottlingRateLimit"]
    log_format = json.loads(stage["AccessLogSettings"]["Format"])
    assert {"connectionId", "eventType", "routeKey", "status"} <= set(log_format)
    assert not any("querystring" in v.lower() or "token" in v.lower() for v in log_format.values())
    log_group = stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert default.resources[log_group]["Type"] == "AWS::Logs::LogGroup"
    # The account-wide API Gateway CloudWatch role is opt-in (the last stack to set it owns it):
    # the default leaves it to the account (docs/deploy.md "Before your first deploy"); the variant sets it.
    assert not default.of_type("AWS::ApiGateway::Account")


def test_outputs_name_the_url_bucket_table_and_token_secret_arn(default):
    outputs = default.template["Outputs"]
    # The default (ingress=both) sends bots to the container (tests/infra/test_infra_container.py);
    # the API Gateway URL stays an output of its own.
    assert outputs["WebSocketUrl"]["Value"]["Fn::Join"][1][0] == "wss://"
    url = outputs["ApiGatewayWebSocketUrl"]["Value"]["Fn::Join"][1]
    assert url[0] == "wss://" and url[-1] == "/live" and ref(default.websocket_api()) in url
    assert outputs["BucketName"]["Value"] == ref(default.frames_bucket())
    assert outputs["TableName"]["Value"] == ref(default.only("AWS::DynamoDB::Table"))
    assert outputs["FrameExpiryDays"]["Value"] == "30"  # framesink reindex reads it
    # framesink export-job sends to it: the queue the export function reads.
    from framesink.commands.export_job import OUTPUT_EXPORT_QUEUE

    (mapping,) = [m["Properties"] for m in default.of_type("AWS::Lambda::EventSourceMapping").values()
                  if "Export" in json.dumps(m["Properties"]["EventSourceArn"])]
    queue = mapping["EventSourceArn"]["Fn::GetAtt"][0]
    assert outputs[OUTPUT_EXPORT_QUEUE]["Value"] == ref(queue)
    token = default.resources[default.token_secret()]
    assert token["Type"] == "AWS::SecretsManager::Secret" and "connection token" in token["Properties"]["Description"]


# --- least privilege ------------------------------------------------------------------------


def test_each_function_has_exactly_the_permissions_its_handler_uses(default):
    functions = {h: f for h, f in default.functions().items() if h in HANDLERS.values()}
    assert sorted(functions) == sorted(HANDLERS.values())
    table = arn(default.only("AWS::DynamoDB::Table"))
    token = ref(default.token_secret())
    frames = {"Fn::Join": ["", [arn(default.frames_bucket()), "/recordings/*"]]}
    expected = {
        HANDLERS["$connect"]: pairs(["dynamodb:GetItem", "dynamodb:PutItem"], table)
        | pairs(["secretsmanager:GetSecretValue"], token),
        HANDLERS["$disconnect"]: pairs(["dynamodb:UpdateItem"], table),
        # PutObject (If-None-Match), GetObject to compare a redelivery with the stored frame;
        # PutEvents of the frame's event, on the stack's frame bus only.
        HANDLERS["$default"]: pairs(["s3:PutObject", "s3:GetObject"], frames)
        | pairs(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], table)
        | pairs(["events:PutEvents"], arn(default.only("AWS::Events::EventBus"))),
    }
    roles = set()
    for handler, function_id in functions.items():
        log_group = default.resources[function_id]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        baseline = pairs(["logs:CreateLogStream", "logs:PutLogEvents"], arn(log_group)) | pairs(
            ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "*"
        )
        assert default.statements(function_id) == expected[handler] | baseline, handler
        roles.add(json.dumps(default.resources[function_id]["Properties"]["Role"]))
    assert len(roles) == len(functions)  # one role per function


# --- storage --------------------------------------------------------------------------------


def test_buckets_are_private_encrypted_ssl_only_and_frames_expire(default):
    frames = default.frames_bucket()
    buckets = default.of_type("AWS::S3::Bucket")
    assert len(buckets) == 2
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        }  # fmt: skip
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        assert sse == {"SSEAlgorithm": "AES256"}
        assert bucket["DeletionPolicy"] == "Retain"
        default.assertions.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": ref(logical_id),
                "PolicyDocument": {
                    "Statement": Match.array_with([
                        {
                            "Action": "s3:*",
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            "Effect": "Deny",
                            "Principal": {"AWS": "*"},
                            "Resource": [arn(logical_id), {"Fn::Join": ["", [arn(logical_id), "/*"]]}],
                        }
                    ])
                },
            },
        )  # fmt: skip
    props = buckets[frames]["Properties"]
    (access_logs,) = set(buckets) - {frames}
    assert props["LoggingConfiguration"]["DestinationBucketName"] == ref(access_logs)
    assert props["LifecycleConfiguration"]["Rules"] == [
        {"Id": "expire-frames", "Prefix": "recordings/", "ExpirationInDays": DEFAULTS["frameExpiryDays"], "Status": "Enabled"}
    ]
    assert "VersioningConfiguration" not in props


def test_table_is_the_core_schema_with_pitr_and_ttl(default):
    table = default.resources[default.only("AWS::DynamoDB::Table")]
    props = table["Properties"]
    spec = schema.create_table_kwargs("x")
    assert props["KeySchema"] == spec["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(spec["AttributeDefinitions"], key=str)
    assert sorted(props["GlobalSecondaryIndexes"], key=str) == sorted(spec["GlobalSecondaryIndexes"], key=str)
    assert [g["IndexName"] for g in props["GlobalSecondaryIndexes"]] == [
        g["name"] for g in schema.TABLE_SCHEMA["global_secondary_indexes"]
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": schema.TTL_ATTRIBUTE, "Enabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}  # AWS-managed KMS key
    assert props["DeletionProtectionEnabled"] is True and table["DeletionPolicy"] == "Retain"


def test_log_groups_have_retention_and_every_function_has_its_own(default):
    groups = default.of_type("AWS::Logs::LogGroup")
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {DEFAULTS["logRetentionDays"]}
    assert {g["DeletionPolicy"] for g in groups.values()} == {"Retain"}
    used = [default.resources[f]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in default.functions().values()]
    assert len(set(used)) == len(used) and set(used) <= set(groups)


def test_functions_are_traced_latest_python_arm64_with_powertools_env(default):
    for function_id in default.functions().values():
        props = default.resources[function_id]["Properties"]
        assert props["Runtime"] == "python3.14" and props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        # Reserved only where a flood elsewhere must not starve a function (infra/meetings.py).
        reserved = {"framesink_handlers.webhooks.handler": WEBHOOK_CONCURRENCY,
                    "framesink_handlers.export.handler": EXPORT_CONCURRENCY}
        assert props.get("ReservedConcurrentExecutions") == reserved.get(props["Handler"])
        env = default.env(function_id)
        assert env["POWERTOOLS_SERVICE_NAME"] == "framesink-live"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "framesink" and env["LOG_LEVEL"] == "INFO"
        assert env["FRAMESINK_BUCKET"] == ref(default.frames_bucket())
        assert env["FRAMESINK_TABLE"] == ref(default.only("AWS::DynamoDB::Table"))
        assert env["FRAMESINK_MAX_FRAME_BYTES"] == str(DEFAULTS["maxFrameBytes"])


def test_ingest_gets_the_frame_expiry_its_bucket_lifecycle_uses(default, variant):
    """Index items expire (TTL) after as many days as the S3 objects: same context key."""
    ingest = HANDLERS["$default"]
    rules = default.resources[default.frames_bucket()]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert default.env(default.functions()[ingest])["FRAMESINK_FRAME_EXPIRY_DAYS"] == str(
        DEFAULTS["frameExpiryDays"]) == str(rules[0]["ExpirationInDays"])
    # frameExpiryDays=0: no lifecycle rule and no TTL either (the core writes none for 0).
    assert variant.env(variant.functions()[ingest])["FRAMESINK_FRAME_EXPIRY_DAYS"] == VARIANT["frameExpiryDays"]
    assert "LifecycleConfiguration" not in variant.resources[variant.frames_bucket()]["Properties"]


def test_no_secret_value_reaches_the_template(default):
    secret_id = default.token_secret()
    assert default.resources[secret_id]["Properties"]["GenerateSecretString"]["ExcludePunctuation"] is True  # URL-safe
    for secret in default.of_type("AWS::SecretsManager::Secret").values():
        assert "SecretString" not in secret["Properties"]  # generated by Secrets Manager at deploy time
    assert "resolve:secretsmanager" not in json.dumps(default.template)  # no dynamic references
    for function_id in default.functions().values():
        env = default.env(function_id)
        # The secret appears only by ARN (Ref of a Secret is its ARN), in one variable.
        assert [k for k, v in env.items() if secret_id in json.dumps(v)] == ["FRAMESINK_TOKEN_SECRET_ID"]
        assert env["FRAMESINK_TOKEN_SECRET_ID"] == ref(secret_id)
        assert not any("whsec_" in json.dumps(v) for v in env.values())


def metric_of(alarm: dict) -> list[tuple[str, dict]]:
    """(metric name, dimensions) of an alarm, whether on one metric or a math expression."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [(props["MetricName"], {d["Name"]: d["Value"] for d in props.get("Dimensions", [])})]
    return [(m["MetricStat"]["Metric"]["MetricName"], {d["Name"]: d["Value"] for d in m["MetricStat"]["Metric"].get("Dimensions", [])})
            for m in props["Metrics"] if "MetricStat" in m]


def test_every_alarm_notifies_the_alarm_topic(default, variant):
    for synth in (default, variant):
        (topic,) = synth.of_type("AWS::SNS::Topic")
        alarms = synth.of_type("AWS::CloudWatch::Alarm")
        assert alarms and all(a["Properties"]["AlarmActions"] == [ref(topic)] for a in alarms.values())
        assert all(a["Properties"].get("ActionsEnabled", True) for a in alarms.values())
        assert synth.template["Outputs"]["AlarmTopicArn"]["Value"] == ref(topic)
        # encrypted with a key CloudWatch may use (the AWS-managed SNS key refuses CloudWatch)
        key = synth.resources[topic]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
        statements = synth.resources[key]["Properties"]["KeyPolicy"]["Statement"]
        assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in statements)


def test_alarms_cover_what_can_go_wrong(default):
    alarms = {k: metric_of(a) for k, a in default.of_type("AWS::CloudWatch::Alarm").items()}
    metrics = [m for ms in alarms.values() for m in ms]

    def alarmed(name, **dims):
        return [m for m in metrics if m[0] == name and all(m[1].get(k) == v for k, v in dims.items())]

    (lost,) = [ms for ms in alarms.values() if {m[0] for m in ms} == {"FrameStoreFailed"}]
    assert sorted(d["reason"] for _, d in lost) == ["index_write_failed", "internal_error", "s3_write_failed",
                                                    "spool_full"]
    # The receiver's spool gauge (emitted every minute, EMF with the task's service name as its
    # one dimension) alarms after 5 minutes of holding frames.
    ((container,),) = [t["Properties"]["ContainerDefinitions"] for t in default.of_type("AWS::ECS::TaskDefinition").values()]
    service = {e["Name"]: e["Value"] for e in container["Environment"]}["POWERTOOLS_SERVICE_NAME"]
    (spool,) = [k for k, ms in alarms.items() if ms == [("SpoolDepth", {"service": service})]]
    spool_props = default.resources[spool]["Properties"]
    (stat,) = [m["MetricStat"] for m in spool_props["Metrics"]]
    assert (spool_props["EvaluationPeriods"], spool_props["DatapointsToAlarm"], stat["Period"], stat["Stat"],
            spool_props["Threshold"]) == (5, 5, 60, "Maximum", 1)
    for code in ("1009", "1011"):  # websocket closes by code ($disconnect and the receiver)
        assert alarmed("ConnectionClosed", code=code)
    for function_id in default.functions().values():
        name = {"Ref": function_id}
        assert [m for m in metrics if m[0] == "Errors" and m[1].get("FunctionName") == name]
        assert [m for m in metrics if m[0] == "Throttles" and m[1].get("FunctionName") == name]
    assert alarmed("IntegrationError") and alarmed("ExecutionError")  # API Gateway WebSocket
    assert alarmed("ReadThrottleEvents") and alarmed("WriteThrottleEvents")  # DynamoDB
    assert alarmed("HealthyHostCount")  # receiver tasks below containerMinTasks
    assert alarmed("HTTPCode_ELB_5XX_Count") and alarmed("HTTPCode_Target_5XX_Count")
    [cloudfront] = [k for k, ms in alarms.items() if ms and ms[0][0] == "5xxErrorRate"]
    assert default.resources[cloudfront]["Condition"]  # only where CloudFront's metrics are (us-east-1)
    default.assertions.has_resource_properties(
        "AWS::Logs::MetricFilter", {"FilterPattern": '{ $.message = "message rejected" }'}
    )


def test_one_dashboard_shows_frames_latency_and_connections(default):
    (dashboard,) = default.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for what in ("FrameStored", "MessageRejected", "FrameStoreFailed", "StoreLatency", "p99", "OpenConnections"):
        assert what in body, what
    assert default.template["Outputs"]["DashboardName"]["Value"] == "framesink-live"


# --- checks: cdk-nag, cfn-lint --------------------------------------------------------------


def test_cdk_nag_has_no_unsuppressed_findings_and_every_suppression_says_why(default):
    assert error_annotations(default.assembly) == []
    warnings = [m for s in default.assembly.stacks for m in s.messages if m.level == "warning"]
    assert warnings == []
    reasons = []
    for resource in default.resources.values():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            reasons.append((rule["id"], rule["reason"]))
    assert {rule for rule, _ in reasons} >= {"AwsSolutions-APIG4", "AwsSolutions-IAM5", "AwsSolutions-SMG4"}
    assert all(len(reason) >= 60 for _, reason in reasons), reasons


def test_cdk_nag_findings_fail_the_synth(tmp_path, monkeypatch, capsys):
    app, stack = build(outdir=str(tmp_path))
    s3.Bucket(stack, CANARY)  # no SSL-only policy, no access logs
    import app as cdk_app

    monkeypatch.setattr(cdk_app, "build", lambda: (app, stack))
    assert cdk_app.main() == 1
    report = capsys.readouterr().err
    assert "AwsSolutions-S1:" in report and "AwsSolutions-S10:" in report
    flagged = {line.split()[0] for line in report.splitlines() if line.strip().startswith("Framesink/")}
    assert flagged == {f"Framesink/{CANARY}/Resource"}  # the canary, and nothing of ours


@pytest.mark.parametrize("which", ["default", "variant"])
def test_cfn_lint_finds_no_problems(which, request):
    from cfnlint.api import ManualArgs, lint

    synth = request.getfixturevalue(which)
    matches = lint(
        json.dumps(synth.template),
        config=ManualArgs(
            regions=["us-east-1", "eu-west-1"],
            # W3005 "DependsOn already enforced by GetAtt": CDK makes every function depend
            # on its role explicitly; harmless, and not ours to change.
            ignore_checks=["W3005"],
        ),
    )
    assert [str(m) for m in matches] == []


# --- the Lambda asset -----------------------------------------------------------------------


def test_asset_holds_the_packages_and_aarch64_wheels_but_no_sdk(default):
    top = {p.name for p in default.asset.iterdir()}
    assert set(PACKAGES) <= top and "aws_lambda_powertools" in top and "aws_xray_sdk" in top
    assert not top & {*RUNTIME_PROVIDED_MODULES, "six.py"}
    assert not any(name.startswith(RUNTIME_PROVIDED_MODULES) and name.endswith(".dist-info") for name in top)
    assert list(default.asset.glob("wrapt/_wrappers.cpython-314-aarch64-linux-gnu.so"))
    assert not list(default.asset.rglob("*x86_64*.so")) and not list(default.asset.rglob("__pycache__"))
    for package in PACKAGES:  # the exact sources, nothing added or dropped
        source = sorted(p.relative_to(ROOT / "lambdas").as_posix() for p in (ROOT / "lambdas" / package).rglob("*.py"))
        bundled = sorted(p.relative_to(default.asset).as_posix() for p in (default.asset / package).rglob("*.py"))
        assert bundled == source


# Core modules that decode pixels: only the functions on the media asset (export job,
# analyzer) import them, and nothing on the base asset imports them at module level.
MEDIA_MODULES = {"framesink_core/read/video.py", "framesink_core/analyze/slides.py", "framesink_core/read/contact_sheet.py",
                 "framesink_core/analyze/kit.py", "framesink_handlers/analyzer.py",  # kit analyzers: Pillow, on their own asset
                 "framesink_core/read/export.py", "framesink_handlers/export.py", "framesink_handlers/slides.py"}


def _imports(path: Path, *, top_level_only: bool = False) -> Iterator[tuple[str, int]]:
    """(module, level) of every import in a file (or only those at module level)."""
    tree = ast.parse(path.read_text())
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            yield from ((a.name, 0) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, node.level


def _missing_imports(asset: Path, skip: set[str]) -> set[str]:
    available = {p.name.removesuffix(".py") for p in asset.iterdir()} | set(RUNTIME_PROVIDED_MODULES)
    missing = set()
    for path in [*(asset / "framesink_core").rglob("*.py"), *(asset / "framesink_handlers").rglob("*.py")]:
        if str(path.relative_to(asset)) in skip:
            continue
        for name, level in _imports(path):
            top = name.split(".")[0]
            if level == 0 and top not in sys.stdlib_module_names and top not in available and top != "__future__":
                missing.add(f"{path.relative_to(asset)}: {name}")
    return missing


# Core modules only the container receiver runs (their dependencies are in
# container/requirements.txt, not in a Lambda asset); no Lambda code imports them.
CONTAINER_MODULES = {"framesink_core/ingest/native_objects.py"}


def test_every_import_of_the_lambda_code_is_bundled_or_provided(default):
    """A dependency added to the core must also be in lambdas/requirements.txt (or, for the
    pixel-decoding modules, lambdas/requirements-media.txt)."""
    assert _missing_imports(default.asset, skip=MEDIA_MODULES | CONTAINER_MODULES) == set()
    assert default.media_asset is not None  # the export job
    assert _missing_imports(default.media_asset, skip=CONTAINER_MODULES) == set()
    # the base asset's handlers never load a media module when they are imported
    core = default.asset / "framesink_core"
    for path in [*core.glob("*.py"), *(default.asset / "framesink_handlers").glob("*.py")]:
        rel = str(path.relative_to(default.asset))
        if rel in MEDIA_MODULES:
            continue
        for name, level in _imports(path, top_level_only=True):
            target = name.split(".")[-1] if level else name.removeprefix("framesink_core.")
            assert f"framesink_core/{target}.py" not in MEDIA_MODULES, f"{rel} imports {name} at module level"
    # the container-only modules: imported nowhere in the Lambda code but by Service, lazily
    lambda_code = [*core.rglob("*.py"), *(default.asset / "framesink_handlers").rglob("*.py")]
    for path in lambda_code:
        rel = str(path.relative_to(default.asset))
        for name, level in _imports(path, top_level_only=rel != "framesink_core/service.py"):
            target = name.split(".")[-1] if level else name.removeprefix("framesink_core.")
            assert f"framesink_core/{target}.py" not in CONTAINER_MODULES or rel == "framesink_core/service.py", \
                f"{rel} imports {name}"


def test_x86_64_asset_has_x86_64_wheels_and_its_own_hash(default, variant):
    assert list(variant.asset.glob("wrapt/_wrappers.cpython-314-x86_64-linux-gnu.so"))
    assert not list(variant.asset.rglob("*aarch64*.so"))
    assert variant.asset.name != default.asset.name  # a changed architecture is re-uploaded


# --- settings change the template -----------------------------------------------------------


def test_variant_settings_reach_the_template(variant):
    functions = variant.functions()
    for function_id in (functions[h] for h in HANDLERS.values()):
        props = variant.resources[function_id]["Properties"]
        assert props["Architectures"] == ["x86_64"]
        env = variant.env(function_id)
        assert env["FRAMESINK_MAX_FRAME_BYTES"] == "1048576"
        assert env["FRAMESINK_VERIFICATION_SECRET_ID"] == "recall/whsec"  # a name, not a value
        assert "FRAMESINK_TOKEN_SECRET_ID" not in env
        assert env["POWERTOOLS_SERVICE_NAME"] == "framesink-dev"
    assert variant.stack.stack_name == "framesink-dev"
    assert [v["Properties"]["StageName"] for v in variant.websocket("AWS::ApiGatewayV2::Stage").values()] == ["dev"]
    assert "LifecycleConfiguration" not in variant.resources[variant.frames_bucket()]["Properties"]
    assert {g["Properties"]["RetentionInDays"] for g in variant.of_type("AWS::Logs::LogGroup").values()} == {7}
    # destroy: everything goes with the stack, buckets emptied first.
    ours = {k: v for k, v in variant.resources.items() if v["Type"] in (
        "AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::Logs::LogGroup") and CANARY not in k}  # fmt: skip
    assert {v.get("DeletionPolicy") for v in ours.values()} == {"Delete"}
    assert len(variant.of_type("Custom::S3AutoDeleteObjects")) == 2
    assert variant.resources[variant.only("AWS::DynamoDB::Table")]["Properties"]["DeletionProtectionEnabled"] is False
    # No static token: no secret, no output; the verification secret is read by name-ARN.
    assert "TokenSecretArn" not in variant.template["Outputs"]
    assert not [s for s in variant.of_type("AWS::SecretsManager::Secret").values()
                if "connection token" in s["Properties"].get("Description", "")]  # fmt: skip
    # removalPolicy=destroy reaches the alarm topic's key too (scheduled for deletion with the stack).
    assert {k["DeletionPolicy"] for k in variant.of_type("AWS::KMS::Key").values()} == {"Delete"}
    (account,) = variant.of_type("AWS::ApiGateway::Account").values()
    assert account["DeletionPolicy"] == "Retain"  # never leave the account pointing at a deleted role
    # No reserved concurrency, no canary; export memory as set.
    assert not [f for f in functions.values() if "ReservedConcurrentExecutions" in variant.resources[f]["Properties"]]
    assert "framesink_handlers.canary.handler" not in functions
    assert variant.resources[functions["framesink_handlers.export.handler"]]["Properties"]["MemorySize"] == 4096
    connect = functions[HANDLERS["$connect"]]
    secret_arn = {"Fn::Join": ["", ["arn:", ref("AWS::Partition"), ":secretsmanager:", ref("AWS::Region"), ":",
                                    ref("AWS::AccountId"), ":secret:recall/whsec-??????"]]}  # fmt: skip
    assert pairs(["secretsmanager:GetSecretValue"], secret_arn) <= variant.statements(connect)
    assert not any(a.startswith("secretsmanager:") for a, _ in variant.statements(functions[HANDLERS["$default"]]))


def test_the_cost_model_counts_the_standing_parts_the_default_deploys(default):
    """bench/cost.py prices what a deployment keeps running; its counts are this template's."""
    from bench.cost import Workload

    w = Workload()
    counts = {kind: len(default.of_type(kind)) for kind in (
        "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::KMS::Key", "AWS::SecretsManager::Secret")}
    assert counts == {"AWS::CloudWatch::Alarm": w.alarms, "AWS::CloudWatch::Dashboard": w.dashboards,
                      "AWS::KMS::Key": w.kms_keys, "AWS::SecretsManager::Secret": w.secrets}
    assert default.props_of_only("AWS::ECS::Service")["DesiredCount"] == w.min_tasks


def test_the_canary_probes_the_bots_url_every_5_minutes_and_alarms_after_3_failures(default):
    """The canary's function gets the URL bots get (WebSocketUrl), may only write its short-lived
    token, runs on a 5-minute schedule without retries, and its CanaryOk alarm (minimum < 1 for
    3 periods of 5 minutes) notifies the alarm topic."""
    from framesink_core.access.probe import CANARY_URL_ENV

    canary = default.functions()["framesink_handlers.canary.handler"]
    assert default.env(canary)[CANARY_URL_ENV] == default.template["Outputs"]["WebSocketUrl"]["Value"]
    table = default.only("AWS::DynamoDB::Table")
    granted = default.statements(canary)
    assert pairs(["dynamodb:PutItem"], arn(table)) <= granted
    assert not [a for a, _ in granted if a.startswith(("s3:", "sqs:", "secretsmanager:"))
                or a in ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:DeleteItem", "dynamodb:UpdateItem")]
    (rule,) = [r["Properties"] for r in default.of_type("AWS::Events::Rule").values()
               if r["Properties"].get("ScheduleExpression")]
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == arn(canary) and target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    (alarm,) = [a["Properties"] for a in default.of_type("AWS::CloudWatch::Alarm").values()
                if "CanaryOk" in json.dumps(a["Properties"].get("Metrics", []))]
    (query,) = alarm["Metrics"]
    stat = query["MetricStat"]
    assert (stat["Stat"], stat["Period"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Minimum", 300, 1, "LessThanThreshold")
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 3
    # The metric the alarm reads is the one the function emits: Powertools' namespace and its
    # service name as the one dimension (EMF).
    env = default.env(canary)
    assert stat["Metric"]["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert stat["Metric"]["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert alarm["TreatMissingData"] == "missing"  # a fresh stack has no runs yet
    assert alarm["AlarmActions"] == [ref(default.only("AWS::SNS::Topic"))]
