"""Meetings, not just frames: Recall's bot status webhooks and the end-of-meeting export.

- ``POST /recall/events`` on its own HTTP API, with no authorizer: Recall (Svix) cannot sign
  SigV4; the function verifies every delivery's Svix signature (5-minute window, each
  webhook-id once) and refuses the rest with 401/403. Output ``RecallWebhookUrl``: register
  it in Recall's dashboard (Webhooks). The signing secret (whsec_...) goes into the secret
  ``RecallWebhookSecretArn`` names (the stack creates it with a placeholder, or
  ``recallWebhookSecretName`` names yours); the realtime ``verificationSecretName`` secret is
  tried too, for workspaces that sign both with one secret.
- The export (``exports=true``, the default): an encrypted SQS queue (dead-letter queue after
  3 tries, alarmed) and a Lambda on the media asset (PyAV, Pillow) that writes an MP4 and a
  contact sheet per participant and type under exports/. A Lambda, not an ECS task: a stream
  is its own invocation, and `make bench` (bench/export.py) measures an hour of 2 fps frames
  at ~1.1 CPU-minutes for a 480x360 webcam and ~5.6 for a 1280x720 screenshare, with ~150 MB
  of memory (frames are streamed through the encoder): inside 15 minutes at the default 3008 MB
  (``exportMemoryMb``, the most a new account allows; ~1.7 vCPUs, which x264 uses) about four
  hours of screenshare in one stream, more with more memory. The MP4 is written
  to /tmp before its upload: 4 GB of ephemeral storage holds the ~1 GB per hour the
  (noise-heavy) synthetic screenshare makes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import ArnFormat, CfnOutput, Duration, Size, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from .frame_events import encrypted_queue
from .functions import FunctionFactory
from .monitoring import HTTP_API_ACCESS_LOG_FORMAT, api_access_logs
from .settings import InfraSettings

WEBHOOK_PATH = "/recall/events"
# Svix delivers a few per bot and status change; more is a flood (bounded cost of a leak).
THROTTLE_RATE = 20
THROTTLE_BURST = 50
EXPORT_TIMEOUT = Duration.minutes(15)
EXPORT_TMP_MB = 4096
# Reserved concurrency (reservedConcurrency=true): a flood elsewhere in the account (handshakes,
# frames) cannot take the last Lambda slots from these two. Svix delivers a few webhooks per
# bot and status; an export is one stream per invocation, the rest wait in the queue.
WEBHOOK_CONCURRENCY = 5
EXPORT_CONCURRENCY = 10
# A message is invisible while its stream is encoded: longer than the function's timeout.
EXPORT_VISIBILITY = Duration.minutes(20)
WEBHOOK_SECRET_PLACEHOLDER = "REPLACE_WITH_RECALL_WHSEC_SECRET"


class Meetings(Construct):
    """``webhook`` (function), ``api``, ``url``, ``secret``; with exports: ``export`` (function),
    ``export_queue``, ``export_dead_letters``."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, functions: FunctionFactory,
                 bucket: s3.IBucket, table: dynamodb.ITable, verification_statements: Sequence[iam.PolicyStatement]):
        super().__init__(scope, id)
        table_arn = table.table_arn

        if settings.recall_webhook_secret_name:
            self.secret = secretsmanager.Secret.from_secret_name_v2(self, "RecallWebhookSecret",
                                                                     settings.recall_webhook_secret_name)
            secret_id = settings.recall_webhook_secret_name
            secret_resource = Stack.of(self).format_arn(
                service="secretsmanager", resource="secret", arn_format=ArnFormat.COLON_RESOURCE_NAME,
                resource_name=f"{settings.recall_webhook_secret_name}-??????")
        else:
            self.secret = secretsmanager.Secret(
                self, "RecallWebhookSecret",
                description="framesink: Recall's webhook signing secret (whsec_...): put-secret-value the bare value",
                # Generated, so no value sits in the template; until the whsec_ value is put in,
                # every delivery is refused (401 no_secret).
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template=json.dumps({"placeholder": WEBHOOK_SECRET_PLACEHOLDER}),
                    generate_string_key="nonce", exclude_punctuation=True),
                removal_policy=settings.removal_policy,
            )
            NagSuppressions.add_resource_suppressions(self.secret, [NagPackSuppression(
                id="AwsSolutions-SMG4",
                reason="A third-party (Recall/Svix) signing secret: Secrets Manager cannot rotate it. Rotate it in "
                "Recall's dashboard, then put-secret-value; the function reads it again within 5 minutes.")])
            secret_id = secret_resource = self.secret.secret_arn

        self.export = self.export_queue = self.export_dead_letters = None
        export_statements: list[iam.PolicyStatement] = []
        environment = {"FRAMESINK_WEBHOOK_SECRET_ID": secret_id,
                       "FRAMESINK_EXPORT_QUIET_SECONDS": str(settings.export_quiet_minutes * 60)}
        if settings.exports:
            self.export_dead_letters = encrypted_queue(self, "ExportDeadLetters", retention=Duration.days(14))
            self.export_queue = encrypted_queue(self, "ExportQueue", retention=Duration.days(4),
                                                visibility=EXPORT_VISIBILITY, dead_letter=self.export_dead_letters,
                                                max_receive_count=3)
            environment["FRAMESINK_EXPORT_QUEUE_URL"] = self.export_queue.queue_url
            export_statements = [iam.PolicyStatement(actions=["sqs:SendMessage"],
                                                     resources=[self.export_queue.queue_arn])]

        # framesink_core.meeting.meetings: Service.secret (GetSecretValue: this secret and the realtime
        # verification secret), OnceStore.claim/release (PutItem, DeleteItem), the timeline
        # item (PutItem), statuses (UpdateItem), the bot's recordings (Query), the export job
        # (PutItem, GetItem), the export message (SendMessage).
        self.webhook = functions.create(
            self, "RecallWebhook",
            handler="framesink_handlers.webhooks.handler",
            description="Recall bot status webhooks: verify (Svix), record the status, start the export",
            statements=[
                iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secret_resource]),
                *verification_statements,
                iam.PolicyStatement(actions=["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                             "dynamodb:GetItem", "dynamodb:Query"], resources=[table_arn]),
                *export_statements,
            ],
            # Svix waits 15 s for an answer: record and queue, never export here.
            timeout=Duration.seconds(10),
            environment=environment,
            reserved_concurrency=WEBHOOK_CONCURRENCY if settings.reserved_concurrency else None,
        )
        self.api = apigwv2.HttpApi(
            self, "Api", description=f"framesink {settings.stage}: Recall bot status webhooks (Svix-signed)",
            create_default_stage=False,
        )
        self.api.add_routes(path=WEBHOOK_PATH, methods=[apigwv2.HttpMethod.POST],
                            integration=HttpLambdaIntegration("RecallWebhook", self.webhook.function))
        NagSuppressions.add_resource_suppressions(self.api, [NagPackSuppression(
            id="AwsSolutions-APIG4",
            reason="Recall's webhooks (sent by Svix) cannot carry IAM or JWT credentials. Every delivery is "
            "authenticated by its Svix signature (HMAC-SHA256 with the workspace's whsec_ secret, a 5-minute "
            "timestamp window, each webhook-id once) in the function before anything is stored.")],
            apply_to_children=True)
        self.access_log_group, access_logs = api_access_logs(self, settings, HTTP_API_ACCESS_LOG_FORMAT)
        self.stage = apigwv2.HttpStage(
            self, "Stage", http_api=self.api, stage_name="$default", auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
            access_log_settings=access_logs,
        )
        self.url = f"{self.stage.url.rstrip('/')}{WEBHOOK_PATH}"

        if settings.exports:
            # framesink_core.read.export: frames read (GetObject under recordings/), MP4 and contact
            # sheet written (PutObject under exports/, multipart for big videos), the index
            # queried (frames on the table and gsi1), totals recomputed and the job and export
            # items written (GetItem, PutItem, UpdateItem), stream messages sent; the tombstone
            # read (GetItem) and, when the recording was deleted meanwhile, what it wrote removed
            # (DeleteObject, DeleteItem).
            self.export = functions.create(
                self, "Export",
                handler="framesink_handlers.export.handler",
                description="End-of-meeting export: an MP4 and a contact sheet per participant and type",
                statements=[
                    iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("recordings/*")]),
                    # DeleteObject: its own MP4 and contact sheet, when the recording was deleted
                    # while it encoded (delete.py: written first, checked after, undone).
                    iam.PolicyStatement(actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
                                        resources=[bucket.arn_for_objects("exports/*")]),
                    iam.PolicyStatement(actions=["dynamodb:Query"], resources=[table_arn, f"{table_arn}/index/*"]),
                    iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                                 "dynamodb:DeleteItem"],
                                        resources=[table_arn]),
                    iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.export_queue.queue_arn]),
                ],
                memory_size=settings.export_memory_mb, timeout=EXPORT_TIMEOUT, code=functions.media_code,
                environment=environment, ephemeral_storage=Size.mebibytes(EXPORT_TMP_MB),
                reserved_concurrency=EXPORT_CONCURRENCY if settings.reserved_concurrency else None,
            )
            # One message per invocation: a stream's export is minutes, not milliseconds. With
            # reserved concurrency the poller is capped at the same number (maximum concurrency):
            # otherwise SQS hands the function more batches than it may run, the throttled ones
            # come back with a receive counted, and after 3 an export lands in the dead letters
            # (Lambda Developer Guide, "Configuring maximum concurrency for Amazon SQS event sources").
            self.export.function.add_event_source(sources.SqsEventSource(
                self.export_queue, batch_size=1,
                max_concurrency=EXPORT_CONCURRENCY if settings.reserved_concurrency else None))
            NagSuppressions.add_resource_suppressions(self.export.policy, [NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="Object keys under recordings/ (read) and exports/ (written) are only known per recording; "
                "the query on the table's indexes names /index/* because the export reads any of them.",
                applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/(recordings|exports)\/\*$/g"},
                            {"regex": r"/^Resource::<.*Index.*\.Arn>\/index\/\*$/g"}],
            )])

        top = Stack.of(self)
        CfnOutput(top, "RecallWebhookUrl", value=self.url,
                  description="Register in Recall's dashboard (Webhooks) for the bot.* status events")  # fmt: skip
        CfnOutput(top, "RecallWebhookSecretArn", value=self.secret.secret_arn,
                  description="Put Recall's webhook signing secret (whsec_...) here with put-secret-value")  # fmt: skip
