"""The API Gateway WebSocket ingress: $connect / $disconnect / $default, one Lambda each.

Recall connects to ``wss://<api>.execute-api.<region>.amazonaws.com/<stage>?token=...``;
$connect authenticates (framesink_core.access.auth), $default stores each message, $disconnect
records the close. API Gateway's limits (32 KB frames, 128 KB messages) apply: see docs/ingest.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk.aws_apigatewayv2_integrations import WebSocketLambdaIntegration
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from .functions import FunctionFactory
from .monitoring import api_access_logs
from .settings import InfraSettings

# Stage-wide limits on connects + messages per second. One bot sends 2 frames/s per
# participant (4 with screenshare), so 1000/s is ~250 participants across all bots at
# once; it caps what a leaked URL can cost. Raise it for bigger fleets.
THROTTLE_RATE = 1000
THROTTLE_BURST = 2000

# One JSON line per connect/message/disconnect. The query string (the token) is not logged.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTimeEpoch",
    "connectionId": "$context.connectionId",
    "eventType": "$context.eventType",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "error": "$context.error.message",
    "integrationError": "$context.integration.error",
}


class WebSocketIngress(Construct):
    """``api``, ``stage``, ``url`` (wss://.../<stage>) and the three route functions.

    Takes what it uses: the settings, the function factory, the frames bucket and index
    table the functions write, and the Secrets Manager statements $connect needs."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, functions: FunctionFactory,
                 bucket: s3.IBucket, table: dynamodb.ITable, secret_statements: Sequence[iam.PolicyStatement],
                 frame_bus: events.IEventBus):
        super().__init__(scope, id)
        factory = functions
        table_arn = table.table_arn

        def table(*actions: str) -> iam.PolicyStatement:
            return iam.PolicyStatement(actions=[f"dynamodb:{a}" for a in actions], resources=[table_arn])

        # Calls each handler makes, from framesink_core: TokenStore.lookup (GetItem),
        # ConnectionRegistry.opened and OnceStore.claim (PutItem), Service.secret (GetSecretValue).
        self.connect = factory.create(
            self,
            "Connect",
            handler="framesink_handlers.connect.handler",
            description="WebSocket $connect: checks the URL token, records the connection",
            statements=[table("GetItem", "PutItem"), *secret_statements],
        )
        # ConnectionRegistry.closed (UpdateItem).
        self.disconnect = factory.create(
            self,
            "Disconnect",
            handler="framesink_handlers.disconnect.handler",
            description="WebSocket $disconnect: records the close code and reason",
            statements=[table("UpdateItem")],
        )
        # FrameStore.put_frame: S3 PutObject under recordings/ (If-None-Match), GetObject there
        # for a redelivery's comparison (HeadObject is GetObject in IAM; the same two for audio
        # objects, DirectAudio), the index PutItem,
        # GetItem (a duplicate's item exists?), UpdateItem of participant/recording totals;
        # ConnectionRegistry.bot_of (GetItem); DeletedRecordings (GetItem of a recording's tombstone);
        # DirectOutlet: PutEvents of the frame's event on the stack's frame bus, nowhere else.
        self.ingest = factory.create(
            self,
            "Ingest",
            handler="framesink_handlers.ingest.handler",
            description="WebSocket $default: validates and stores each frame",
            statements=[
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:GetObject"], resources=[bucket.arn_for_objects("recordings/*")]
                ),
                table("GetItem", "PutItem", "UpdateItem"),
                iam.PolicyStatement(actions=["events:PutEvents"], resources=[frame_bus.event_bus_arn]),
            ],
            environment={"FRAMESINK_EVENT_BUS": frame_bus.event_bus_name},
            # More memory is more CPU for base64 + PNG checks. 30 s: a store retried by
            # botocore (5 attempts) finishes and logs even if API Gateway (29 s) gave up.
            memory_size=512,
            timeout=Duration.seconds(30),
        )
        NagSuppressions.add_resource_suppressions(
            self.ingest.policy,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="s3:PutObject/GetObject are limited to the frames bucket's recordings/ prefix; "
                    "object keys (recording/participant/type/time) are only known per frame.",
                    applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/recordings\/\*$/g"}],
                )
            ],
        )

        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            description=f"framesink {settings.stage}: Recall real-time video frames",
            connect_route_options=apigwv2.WebSocketRouteOptions(
                integration=WebSocketLambdaIntegration("Connect", self.connect.function)
            ),
            disconnect_route_options=apigwv2.WebSocketRouteOptions(
                integration=WebSocketLambdaIntegration("Disconnect", self.disconnect.function)
            ),
            default_route_options=apigwv2.WebSocketRouteOptions(
                integration=WebSocketLambdaIntegration("Ingest", self.ingest.function)
            ),
        )
        NagSuppressions.add_resource_suppressions(
            self.api,
            [
                NagPackSuppression(
                    id="AwsSolutions-APIG4",
                    reason="Recall's bot cannot sign with IAM or send Cognito/JWT tokens; it only "
                    "connects to a URL. $connect checks the URL's token (constant-time against "
                    "the Secrets Manager token, or a per-bot token hash in DynamoDB) and the "
                    "optional Recall signature, and refuses the upgrade otherwise. Messages "
                    "($default) and $disconnect only exist on an accepted connection.",
                )
            ],
            apply_to_children=True,
        )

        self.access_log_group, access_logs = api_access_logs(self, settings, ACCESS_LOG_FORMAT)
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=settings.stage,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
            access_log_settings=access_logs,
        )
        if settings.api_gateway_cloudwatch_role:
            self.account = _api_gateway_account(self)
            self.stage.node.add_dependency(self.account)

        self.url: str = self.stage.url


def _api_gateway_account(scope: Construct) -> apigateway.CfnAccount:
    """The account-level role API Gateway uses to write WebSocket logs to CloudWatch.

    One setting per account and region. Retained on delete, so removing this stack never
    leaves the account pointing at a deleted role (other APIs may rely on it).
    """
    role = iam.Role(
        scope,
        "ApiGatewayCloudWatchRole",
        assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
        managed_policies=[
            iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonAPIGatewayPushToCloudWatchLogs")
        ],
    )
    role.apply_removal_policy(RemovalPolicy.RETAIN)
    NagSuppressions.add_resource_suppressions(
        role,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM4",
                reason="AmazonAPIGatewayPushToCloudWatchLogs is the policy AWS documents for API "
                "Gateway's account logging role; API Gateway names the execution log groups "
                "itself, so a hand-written policy could not be narrower.",
                applies_to=[
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
                ],
            )
        ],
    )
    account = apigateway.CfnAccount(scope, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
    account.apply_removal_policy(RemovalPolicy.RETAIN)
    return account
