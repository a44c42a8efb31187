"""create-bot: an IAM-authenticated HTTP API (``POST /bots``, ``GET /bots/{id}``) in front of
one Lambda that calls Recall's Create Bot with a per-bot connection token.

Its context keys (recallRegion, recallApiKeySecretName, recallEndpointForm,
botTokenTtlSeconds) are read and checked with every other setting in infra/settings.py.

Callers need ``execute-api:Invoke`` on the API (SigV4, e.g. `framesink create-bot`).
"""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, CfnOutput, Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.aws_apigatewayv2_authorizers import HttpIamAuthorizer
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.meeting.recall import API_KEY_PLACEHOLDER
from framesink_core.shared.settings import DEFAULT_RECALL_DEADLINE_SECONDS, Settings

from .functions import FunctionFactory
from .monitoring import HTTP_API_ACCESS_LOG_FORMAT, api_access_logs
from .settings import InfraSettings

# Recall rate-limits Create Bot per workspace (60-120/min); more than this is a runaway script.
THROTTLE_RATE = 5
THROTTLE_BURST = 10


class BotApi(Construct):
    """``function`` (create-bot), ``api`` + ``stage`` (HTTP API), ``api_key_secret``."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, functions: FunctionFactory,
                 table: dynamodb.ITable, ingress_url: str):
        super().__init__(scope, id)
        infra = settings

        if infra.recall_api_key_secret_name:
            self.api_key_secret = secretsmanager.Secret.from_secret_name_v2(
                self, "RecallApiKey", infra.recall_api_key_secret_name
            )
            # By name: the function looks it up by name; IAM matches Secrets Manager's suffix.
            secret_id = infra.recall_api_key_secret_name
            secret_resource = Stack.of(self).format_arn(
                service="secretsmanager", resource="secret", resource_name=f"{infra.recall_api_key_secret_name}-??????",
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
            bucket="", table="", ws_url=ingress_url, recall_region=infra.recall_region,
            recall_api_key_secret_id=secret_id, bot_token_ttl_seconds=infra.bot_token_ttl_seconds,
            recall_endpoint_form=infra.recall_endpoint_form, recall_deadline_seconds=DEFAULT_RECALL_DEADLINE_SECONDS,
        ).create_bot_env()

        # Calls the handler makes: Service.secret (GetSecretValue on the Recall key) and
        # TokenStore.register (two PutItems). Recall itself is reached over the internet.
        self.function = functions.create(
            self,
            "CreateBot",
            handler="framesink_handlers.create_bot.handler",
            description="create-bot: Recall Create Bot with a per-bot connection token",
            statements=[
                iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secret_resource]),
                iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[table.table_arn]),
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

        self.access_log_group, access_logs = api_access_logs(self, infra, HTTP_API_ACCESS_LOG_FORMAT)
        self.stage = apigwv2.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
            access_log_settings=access_logs,
        )
        self.url: str = self.stage.url

        # Top-level ids: `framesink create-bot` reads them with describe-stacks.
        CfnOutput(Stack.of(self), "BotApiUrl", value=self.url,
                  description="create-bot HTTP API (IAM auth): POST /bots, GET /bots/{id}")  # fmt: skip
        CfnOutput(Stack.of(self), "RecallApiKeySecretArn", value=self.api_key_secret.secret_arn,
                  description="Put your Recall API key here: aws secretsmanager put-secret-value --secret-id <this>")  # fmt: skip

