"""The query HTTP API (IAM auth): a recording's participants and frames, with presigned URLs.

GET /recordings/{recording_id}/participants
GET /recordings/{recording_id}/frames?participant=&type=&since=&until=&limit=&cursor=

Callers sign requests with SigV4 (``execute-api:Invoke`` on the API); there is no
unauthenticated route. The function reads the index with Query only (no Scan, no writes)
and may GetObject under recordings/ so the URLs it presigns work.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk.aws_apigatewayv2_authorizers import HttpIamAuthorizer
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.shared import schema

from .functions import FunctionFactory
from .monitoring import HTTP_API_ACCESS_LOG_FORMAT, api_access_logs
from .settings import InfraSettings

ROUTES = ("/recordings", "/recordings/{recording_id}", "/recordings/{recording_id}/participants",
          "/recordings/{recording_id}/frames", "/recordings/{recording_id}/timeline",
          "/recordings/{recording_id}/transcript")
# People and scripts, not bots: a low cap bounds what a leaked key can run up.
THROTTLE_RATE = 50
THROTTLE_BURST = 100


class QueryApi(Construct):
    """``function`` (PythonFunction), ``api`` (HttpApi), ``stage`` and ``url``."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, functions: FunctionFactory,
                 bucket: s3.IBucket, table: dynamodb.ITable):
        super().__init__(scope, id)
        factory = functions
        table_arn = table.table_arn

        # framesink_core.read.query.FrameIndex issues Query only, on the table and its two GSIs
        # (named one by one, not index/*); presigned_get_url needs GetObject on the frames.
        self.function = factory.create(
            self,
            "Query",
            handler="framesink_handlers.query.handler",
            description="Query HTTP API: a recording's participants and frames, presigned URLs",
            statements=[
                iam.PolicyStatement(
                    actions=["dynamodb:Query"],
                    resources=[table_arn] + [
                        f"{table_arn}/index/{gsi['name']}" for gsi in schema.TABLE_SCHEMA["global_secondary_indexes"]
                    ],
                ),
                # the presigned URLs: frames and exports
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects("recordings/*"), bucket.arn_for_objects("exports/*")],
                ),
            ],
            memory_size=512,
            # API Gateway HTTP APIs give up after 30 s; a page is one Query plus local signing.
            timeout=Duration.seconds(15),
        )
        NagSuppressions.add_resource_suppressions(
            self.function.policy,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="s3:GetObject is limited to the frames bucket's recordings/ and exports/ prefixes, so "
                    "the presigned URLs the function hands out can fetch frames and exports and nothing else; "
                    "which ones is only known per request.",
                    applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/(recordings|exports)\/\*$/g"}],
                )
            ],
        )

        self.api = apigwv2.HttpApi(
            self,
            "Api",
            description=f"framesink {settings.stage}: query frames and participants (IAM auth)",
            create_default_stage=False,
        )
        integration = HttpLambdaIntegration("Query", self.function.function)
        authorizer = HttpIamAuthorizer()
        for path in ROUTES:
            self.api.add_routes(path=path, methods=[apigwv2.HttpMethod.GET], integration=integration,
                                authorizer=authorizer)

        # DELETE /recordings/{id}: its own function, so only it may delete (framesink_core.read.delete:
        # list and delete objects under recordings/<rec>/ and exports/<rec>/, query and delete
        # the recording's items, read a bot's recording item).
        self.delete_function = factory.create(
            self,
            "DeleteRecording",
            handler="framesink_handlers.delete.handler",
            description="Query HTTP API: DELETE a recording's frames, exports and index items",
            statements=[
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn], conditions={
                    "StringLike": {"s3:prefix": ["recordings/*", "exports/*"]}}),
                iam.PolicyStatement(actions=["s3:DeleteObject"], resources=[
                    bucket.arn_for_objects("recordings/*"), bucket.arn_for_objects("exports/*")]),
                # PutItem: the tombstone written before anything is deleted (framesink_core.read.delete).
                iam.PolicyStatement(actions=["dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchWriteItem",
                                             "dynamodb:PutItem"],
                                    resources=[table_arn]),
            ],
            memory_size=512,
            timeout=Duration.seconds(29),
        )
        NagSuppressions.add_resource_suppressions(self.delete_function.policy, [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="s3:DeleteObject is limited to the recordings/ and exports/ prefixes of the frames bucket (and "
            "ListBucket to those prefixes); which recording is only known per request.",
            applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/(recordings|exports)\/\*$/g"}],
        )])
        self.api.add_routes(path="/recordings/{recording_id}", methods=[apigwv2.HttpMethod.DELETE],
                            integration=HttpLambdaIntegration("DeleteRecording", self.delete_function.function),
                            authorizer=authorizer)

        self.access_log_group, access_logs = api_access_logs(self, settings, HTTP_API_ACCESS_LOG_FORMAT)
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

