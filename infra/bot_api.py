"""create-bot: an IAM-authenticated HTTP API (``POST /bots``, ``GET /bots/{id}``) in front of
one Lambda that calls Recall's Create Bot with a per-bot connection token.

Context keys (``cdk synth -c key=value``; defaults below):
- ``recallRegion``: the Recall region whose API (and API key) the bots use (us-east-1).
- ``recallApiKeySecretName``: an existing Secrets Manager secret holding the Recall API key;
  empty = the stack creates one holding a placeholder, and you put the key in after deploy.
- ``recallEndpointForm``: ``flat`` (Recall's current realtime endpoint shape) or ``nested``
  (the older ``{"type", "config": {url, events}}``).
- ``botTokenTtlSeconds``: how long a bot's token stays valid after the bot's join time.

Callers need ``execute-api:Invoke`` on the API (SigV4, e.g. `framesink create-bot`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsii
from aws_cdk import ArnFormat, CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.aws_apigatewayv2_authorizers import HttpIamAuthorizer
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.recall import API_KEY_PLACEHOLDER, ENDPOINT_FORMS, REGIONS
from framesink_core.settings import DEFAULT_BOT_TOKEN_TTL_SECONDS, DEFAULT_RECALL_DEADLINE_SECONDS, Settings

from .settings import SECRET_NAME_PATTERN, SettingsError

if TYPE_CHECKING:
    from .stack import FramesinkStack

DEFAULTS: dict[str, Any] = {
    "recallRegion": "us-east-1",
    "recallApiKeySecretName": "",
    "recallEndpointForm": "flat",
    "botTokenTtlSeconds": DEFAULT_BOT_TOKEN_TTL_SECONDS,
}
# Recall rate-limits Create Bot per workspace (60-120/min); more than this is a runaway script.
THROTTLE_RATE = 5
THROTTLE_BURST = 10
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTimeEpoch",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "caller": "$context.identity.userArn",
    "sourceIp": "$context.identity.sourceIp",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "error": "$context.error.message",
}


@dataclass(frozen=True)
class BotApiSettings:
    recall_region: str = DEFAULTS["recallRegion"]
    api_key_secret_name: str = DEFAULTS["recallApiKeySecretName"]
    endpoint_form: str = DEFAULTS["recallEndpointForm"]
    token_ttl_seconds: int = DEFAULTS["botTokenTtlSeconds"]

    @classmethod
    def from_context(cls, get) -> "BotApiSettings":
        def value(key: str) -> Any:
            found = get(key)
            return DEFAULTS[key] if found is None else found

        region = str(value("recallRegion")).strip()
        if region not in REGIONS:
            raise SettingsError(f"context 'recallRegion' must be one of {sorted(REGIONS)}; got {region!r}")
        name = str(value("recallApiKeySecretName")).strip()
        if name and not SECRET_NAME_PATTERN.fullmatch(name):
            raise SettingsError(f"context 'recallApiKeySecretName' must be a Secrets Manager secret name "
                                f"(never the key itself); got {name!r}")
        form = str(value("recallEndpointForm")).strip().lower()
        if form not in ENDPOINT_FORMS:
            raise SettingsError(f"context 'recallEndpointForm' must be one of {list(ENDPOINT_FORMS)}; got {form!r}")
        raw_ttl = value("botTokenTtlSeconds")
        try:
            ttl = int(str(raw_ttl).strip())
        except ValueError:
            ttl = 0
        if isinstance(raw_ttl, bool) or ttl < 60:
            raise SettingsError(f"context 'botTokenTtlSeconds' must be a whole number >= 60; got {raw_ttl!r}")
        return cls(region, name, form, ttl)


class BotApi(Construct):
    """``function`` (create-bot), ``api`` + ``stage`` (HTTP API), ``api_key_secret``."""

    def __init__(self, scope: Construct, id: str, *, stack: "FramesinkStack"):
        super().__init__(scope, id)
        infra = stack.settings
        config = BotApiSettings.from_context(self.node.try_get_context)

        if config.api_key_secret_name:
            self.api_key_secret = secretsmanager.Secret.from_secret_name_v2(
                self, "RecallApiKey", config.api_key_secret_name
            )
            # By name: the function looks it up by name; IAM matches Secrets Manager's suffix.
            secret_id = config.api_key_secret_name
            secret_resource = Stack.of(self).format_arn(
                service="secretsmanager", resource="secret", resource_name=f"{config.api_key_secret_name}-??????",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
        else:
            self.api_key_secret = secretsmanager.Secret(
                self,
                "RecallApiKey",
                description="framesink: the Recall.ai API key create-bot uses (put-secret-value the bare key)",
                # Generated, so no value sits in the template; the placeholder tells the
                # function (and you) that the real key is not in yet.
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template=json.dumps({"api_key": API_KEY_PLACEHOLDER}),
                    generate_string_key="nonce",
                    exclude_punctuation=True,
                ),
                removal_policy=infra.removal_policy,
            )
            NagSuppressions.add_resource_suppressions(
                self.api_key_secret,
                [
                    NagPackSuppression(
                        id="AwsSolutions-SMG4",
                        reason="A third-party (Recall.ai) API key: Secrets Manager cannot rotate it. "
                        "Rotate it in Recall's dashboard, then put-secret-value; the function picks "
                        "the new key up within its 5-minute cache.",
                    )
                ],
            )
            secret_id = secret_resource = self.api_key_secret.secret_arn

        environment = Settings(
            bucket="", table="", ws_url=stack.ingress_url, recall_region=config.recall_region,
            recall_api_key_secret_id=secret_id, bot_token_ttl_seconds=config.token_ttl_seconds,
            recall_endpoint_form=config.endpoint_form, recall_deadline_seconds=DEFAULT_RECALL_DEADLINE_SECONDS,
        ).create_bot_env()

        # Calls the handler makes: Service.secret (GetSecretValue on the Recall key) and
        # TokenStore.register (two PutItems). Recall itself is reached over the internet.
        self.function = stack.functions.create(
            self,
            "CreateBot",
            handler="framesink_handlers.create_bot.handler",
            description="create-bot: Recall Create Bot with a per-bot connection token",
            statements=[
                iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secret_resource]),
                iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[stack.storage.table.table_arn]),
            ],
            # Inside the HTTP API's 30 s integration limit: the Recall deadline (25 s) plus slack.
            timeout=Duration.seconds(DEFAULT_RECALL_DEADLINE_SECONDS + 4),
            environment=environment,
        )

        self.api = apigwv2.HttpApi(
            self,
            "Api",
            description=f"framesink {infra.stage}: create Recall bots that stream to this stack (IAM auth)",
            create_default_stage=False,
            default_authorizer=HttpIamAuthorizer(),
        )
        integration = HttpLambdaIntegration("CreateBot", self.function.function)
        self.api.add_routes(path="/bots", methods=[apigwv2.HttpMethod.POST], integration=integration)
        self.api.add_routes(path="/bots/{id}", methods=[apigwv2.HttpMethod.GET], integration=integration)

        self.access_log_group = logs.LogGroup(
            self, "AccessLogs", retention=infra.log_retention, removal_policy=infra.removal_policy
        )
        self.stage = apigwv2.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
            access_log_settings=_HttpAccessLogs(self.access_log_group),
        )
        self.url: str = self.stage.url

        # Top-level ids: `framesink create-bot` reads them with describe-stacks.
        CfnOutput(Stack.of(self), "BotApiUrl", value=self.url,
                  description="create-bot HTTP API (IAM auth): POST /bots, GET /bots/{id}")  # fmt: skip
        CfnOutput(Stack.of(self), "RecallApiKeySecretArn", value=self.api_key_secret.secret_arn,
                  description="Put your Recall API key here: aws secretsmanager put-secret-value --secret-id <this>")  # fmt: skip


@jsii.implements(apigwv2.IAccessLogSettings)
class _HttpAccessLogs:
    """JSON access log lines into a log group (jsii interface: destination + format)."""

    def __init__(self, log_group: logs.ILogGroup):
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":")))
