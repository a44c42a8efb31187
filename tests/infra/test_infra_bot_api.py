"""infra/bot_api.py in the real app (infra.build, real bundling), checked with
aws_cdk.assertions and cdk-nag: IAM-only routes, a least-privilege role, no secret value
in the template, and the context settings."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Template

from framesink_core.meeting.recall import API_KEY_PLACEHOLDER
from framesink_core.shared.settings import DEFAULT_BOT_TOKEN_TTL_SECONDS, DEFAULT_RECALL_DEADLINE_SECONDS
from infra import build, error_annotations
from infra.settings import InfraSettings

pytestmark = pytest.mark.slow

HANDLER = "framesink_handlers.create_bot.handler"
IMPORTED = {"recallApiKeySecretName": "recall/api-key", "recallRegion": "eu-central-1",
            "recallEndpointForm": "nested", "botTokenTtlSeconds": "3600"}


class Synth:
    def __init__(self, context, outdir):
        self.app, self.stack = build(context, outdir=str(outdir))
        self.assembly = self.app.synth()
        self.template = self.assembly.get_stack_artifact(self.stack.artifact_id).template
        self.assertions = Template.from_json(self.template)
        self.resources = self.template["Resources"]

    def of_type(self, kind):
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    def bot(self, kind):
        """The one resource of this type that belongs to the BotApi construct."""
        (logical_id,) = [k for k in self.of_type(kind) if k.startswith("BotApi")]
        return logical_id

    def function(self):
        (logical_id,) = [k for k, v in self.of_type("AWS::Lambda::Function").items()
                         if v["Properties"]["Handler"] == HANDLER]
        return logical_id

    def statements(self, function_id):
        role = self.resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        pairs = set()
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role} not in policy["Properties"]["Roles"]:
                continue
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                assert st["Effect"] == "Allow"
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                pairs |= {(a, json.dumps(r, sort_keys=True)) for a in actions for r in resources}
        return pairs


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return Synth(None, tmp_path_factory.mktemp("cdk-bot-default"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    return Synth(IMPORTED, tmp_path_factory.mktemp("cdk-bot-imported"))


def test_two_routes_both_iam_authorized_into_the_create_bot_function(default):
    api = default.bot("AWS::ApiGatewayV2::Api")
    assert default.resources[api]["Properties"]["ProtocolType"] == "HTTP"
    routes = [r["Properties"] for r in default.of_type("AWS::ApiGatewayV2::Route").values()
              if r["Properties"]["ApiId"] == {"Ref": api}]
    assert sorted(r["RouteKey"] for r in routes) == ["GET /bots/{id}", "POST /bots"]
    assert {r["AuthorizationType"] for r in routes} == {"AWS_IAM"}
    function = default.function()
    for route in routes:
        integration = default.resources[route["Target"]["Fn::Join"][1][1]["Ref"]]["Properties"]
        assert integration["IntegrationType"] == "AWS_PROXY" and integration["PayloadFormatVersion"] == "2.0"
        assert integration["IntegrationUri"] == {"Fn::GetAtt": [function, "Arn"]}
    permissions = [p["Properties"] for p in default.of_type("AWS::Lambda::Permission").values()
                   if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}]
    assert len(permissions) == 2
    for permission in permissions:  # only this API, only its two routes
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert {"Ref": api} in permission["SourceArn"]["Fn::Join"][1]
        assert permission["SourceArn"]["Fn::Join"][1][-1] in ("/*/*/bots", "/*/*/bots/{id}")


def test_the_role_reads_only_the_recall_key_and_only_puts_items(default):
    function = default.function()
    secret = default.bot("AWS::SecretsManager::Secret")
    table = next(iter(default.of_type("AWS::DynamoDB::Table")))
    log_group = default.resources[function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert default.statements(function) == {
        ("secretsmanager:GetSecretValue", json.dumps({"Ref": secret})),
        ("dynamodb:PutItem", json.dumps({"Fn::GetAtt": [table, "Arn"]}, sort_keys=True)),
        ("logs:CreateLogStream", json.dumps({"Fn::GetAtt": [log_group, "Arn"]}, sort_keys=True)),
        ("logs:PutLogEvents", json.dumps({"Fn::GetAtt": [log_group, "Arn"]}, sort_keys=True)),
        ("xray:PutTelemetryRecords", '"*"'),
        ("xray:PutTraceSegments", '"*"'),
    }
    # The websocket functions get no Recall settings and no access to the Recall key.
    for logical_id, fn in default.of_type("AWS::Lambda::Function").items():
        if logical_id != function and fn["Properties"]["Handler"].startswith("framesink_handlers."):
            env = fn["Properties"]["Environment"]["Variables"]
            assert not [k for k in env if k.startswith(("FRAMESINK_RECALL", "FRAMESINK_WS_URL"))]
            assert ("secretsmanager:GetSecretValue", json.dumps({"Ref": secret})) not in default.statements(logical_id)


def test_the_function_is_configured_by_name_never_by_value(default):
    function = default.function()
    props = default.resources[function]["Properties"]
    env = props["Environment"]["Variables"]
    secret = default.bot("AWS::SecretsManager::Secret")
    assert env["FRAMESINK_RECALL_API_KEY_SECRET_ID"] == {"Ref": secret}
    assert env["FRAMESINK_WS_URL"] == default.template["Outputs"]["WebSocketUrl"]["Value"]
    assert env["FRAMESINK_RECALL_REGION"] == "us-east-1" and env["FRAMESINK_RECALL_ENDPOINT_FORM"] == "flat"
    assert env["FRAMESINK_BOT_TOKEN_TTL_SECONDS"] == str(DEFAULT_BOT_TOKEN_TTL_SECONDS)
    # The Recall deadline fits the function's timeout, which fits the HTTP API's 30 s.
    assert float(env["FRAMESINK_RECALL_DEADLINE_SECONDS"]) < props["Timeout"] <= 30
    generated = default.resources[secret]["Properties"]
    assert "SecretString" not in generated
    assert json.loads(generated["GenerateSecretString"]["SecretStringTemplate"]) == {"api_key": API_KEY_PLACEHOLDER}
    assert "resolve:secretsmanager" not in json.dumps(default.template)


def test_stage_throttles_and_logs_the_caller(default):
    stage = default.resources[default.bot("AWS::ApiGatewayV2::Stage")]["Properties"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert 0 < stage["DefaultRouteSettings"]["ThrottlingRateLimit"] <= stage["DefaultRouteSettings"]["ThrottlingBurstLimit"]
    log_format = json.loads(stage["AccessLogSettings"]["Format"])
    assert log_format["caller"] == "$context.identity.userArn" and "routeKey" in log_format
    group = stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert default.resources[group]["Properties"]["RetentionInDays"] > 0


def test_outputs_name_the_api_url_and_the_key_secret(default):
    outputs = default.template["Outputs"]
    url = outputs["BotApiUrl"]["Value"]["Fn::Join"][1]
    assert url[0] == "https://" and url[1] == {"Ref": default.bot("AWS::ApiGatewayV2::Api")} and url[-1] == "/"
    assert outputs["RecallApiKeySecretArn"]["Value"] == {"Ref": default.bot("AWS::SecretsManager::Secret")}


def test_cdk_nag_is_clean_and_the_secret_suppression_says_why(default, imported):
    for synth in (default, imported):
        assert error_annotations(synth.assembly) == []
        assert [m for s in synth.assembly.stacks for m in s.messages if m.level == "warning"] == []
    rules = default.resources[default.bot("AWS::SecretsManager::Secret")]["Metadata"]["cdk_nag"]["rules_to_suppress"]
    assert [r["id"] for r in rules] == ["AwsSolutions-SMG4"] and "rotate" in rules[0]["reason"].lower()


def test_an_imported_key_secret_region_and_endpoint_form_come_from_context(imported):
    assert not [k for k in imported.of_type("AWS::SecretsManager::Secret") if k.startswith("BotApi")]
    function = imported.function()
    env = imported.resources[function]["Properties"]["Environment"]["Variables"]
    assert env["FRAMESINK_RECALL_API_KEY_SECRET_ID"] == "recall/api-key"
    assert (env["FRAMESINK_RECALL_REGION"], env["FRAMESINK_RECALL_ENDPOINT_FORM"]) == ("eu-central-1", "nested")
    assert env["FRAMESINK_BOT_TOKEN_TTL_SECONDS"] == "3600"
    [secret_arn] = [json.loads(r) for a, r in imported.statements(function) if a == "secretsmanager:GetSecretValue"]
    assert secret_arn["Fn::Join"][1][-1].endswith(":secret:recall/api-key-??????")
    # The output still tells you where to put the key.
    assert "recall/api-key" in json.dumps(imported.template["Outputs"]["RecallApiKeySecretArn"])


def test_context_defaults():
    # create-bot's keys live with every other setting (infra/settings.py, cdk.json).
    assert InfraSettings.from_context({}) == InfraSettings()
    assert InfraSettings().bot_token_ttl_seconds == DEFAULT_BOT_TOKEN_TTL_SECONDS
    assert (InfraSettings().recall_region, InfraSettings().recall_endpoint_form) == ("us-east-1", "flat")
    assert DEFAULT_RECALL_DEADLINE_SECONDS < 30
