"""The framesink stack: shared parts first, then one construct per ingress or API.

Each construct takes the resources it uses as props (bucket, table, secret statements, the
function factory, URLs), the way CDK's own constructs do; this file is the one place that
wires them together. Monitoring comes last: it watches what the others made.
"""

from __future__ import annotations

from aws_cdk import Annotations, CfnOutput, Stack, Tags
from aws_cdk import aws_events as events
from constructs import Construct

from framesink_core.shared.settings import Settings

from .analyzers import Analyzers
from .bot_api import BotApi
from .canary import Canary
from .container_ingress import ContainerIngress
from .frame_events import FrameEvents
from .functions import FunctionFactory
from .meetings import Meetings
from .monitoring import Monitored, Monitoring
from .query_api import QueryApi
from .secrets import Secrets
from .settings import InfraSettings
from .storage import Storage
from .websocket_ingress import WebSocketIngress


class FramesinkStack(Stack):
    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, **kwargs):
        super().__init__(
            scope,
            id,
            description=f"framesink ({settings.stage}): Recall.ai real-time video frames to S3 + DynamoDB",
            **kwargs,
        )
        self.settings = settings
        Tags.of(self).add("project", "framesink")
        Tags.of(self).add("stage", settings.stage)
        service_name = f"framesink-{settings.stage}"

        # Shared by every part.
        self.storage = Storage(self, "Storage", settings=settings)
        self.secrets = Secrets(self, "Secrets", settings=settings)
        bucket, table = self.storage.bucket, self.storage.table
        # Frame events: each ingress publishes one per durable frame here (ingest/outlet.py);
        # only the ingresses know its name (FRAMESINK_EVENT_BUS) and may put events on it.
        self.frame_bus = events.EventBus(self, "FrameBus", event_bus_name=f"{service_name}-frames")
        # The core's settings: the same for every function and the container receiver.
        core = Settings(
            bucket=bucket.bucket_name,
            table=table.table_name,
            max_frame_bytes=settings.max_frame_bytes,
            max_frame_pixels=settings.max_frame_pixels,
            frame_expiry_days=settings.frame_expiry_days,
            token_secret_id=self.secrets.token_secret_id,
            verification_secret_id=self.secrets.verification_secret_name,
        )
        self.functions = FunctionFactory(settings=settings, core=core, service_name=service_name)
        secret_statements = self.secrets.read_statements()

        # Ingress. The `ingress` setting picks API Gateway, the container receiver, or both (the
        # default). With a container, bots are sent to it: only it takes real-size frames.
        self.websocket = (
            WebSocketIngress(self, "WebSocket", settings=settings, functions=self.functions, bucket=bucket,
                             table=table, secret_statements=secret_statements, frame_bus=self.frame_bus)
            if settings.apigw_ingress else None
        )
        self.container = (
            ContainerIngress(self, "Container", settings=settings, bucket=bucket, table=table,
                             secret_statements=secret_statements, core=core, service_name=service_name,
                             frame_bus=self.frame_bus)
            if settings.container_ingress else None
        )
        self.ingress_url: str = self.container.url if self.container else self.websocket.url
        if self.container is None:
            Annotations.of(self).add_warning_v2(
                "framesink:apigw-only",
                "ingress=apigw: bots are sent to API Gateway, whose 32 KB frame limit no camera frame fits "
                "(480x360 webcams are 130-370 KB as messages): they are closed with 1009 and not stored. "
                "Use the default ingress=both (or container) for real meetings.")

        # The live feed: rules on the frame bus, the optional queue and analyzer.
        self.frame_events = FrameEvents(self, "FrameEvents", settings=settings, bucket=bucket, table=table,
                                        functions=self.functions, bus=self.frame_bus)

        # Your kit analyzers (the `analyzers` setting), on the container ingress's network if any.
        self.analyzers = Analyzers(self, "Analyzers", settings=settings, bucket=bucket, table=table,
                                   functions=self.functions, bus=self.frame_bus, core=core, service_name=service_name,
                                   vpc=self.container.vpc if self.container else None,
                                   cluster=self.container.cluster if self.container else None)

        # Meetings: Recall's status webhooks, the end-of-meeting export.
        self.meetings = Meetings(self, "Meetings", settings=settings, functions=self.functions, bucket=bucket,
                                 table=table, verification_statements=self.secrets.verification_statements())

        # APIs.
        self.bot_api = BotApi(self, "BotApi", settings=settings, functions=self.functions, table=table,
                              ingress_url=self.ingress_url)
        self.query_api = QueryApi(self, "QueryApi", settings=settings, functions=self.functions, bucket=bucket,
                                  table=table)

        # The canary: the bots' handshake through the public URL, every 5 minutes.
        self.canary = (Canary(self, "Canary", functions=self.functions, table=table, url=self.ingress_url)
                       if settings.canary else None)

        self.monitoring = Monitoring(self, "Monitoring", settings=settings, service_name=service_name, watch=Monitored(
            functions=self.functions.functions,
            table=table,
            websocket_stage=self.websocket.stage if self.websocket else None,
            ingest_log_group=self.websocket.ingest.log_group if self.websocket else None,
            receiver_log_group=self.container.log_group if self.container else None,
            load_balancer=self.container.load_balancer if self.container else None,
            target_group=self.container.target_group if self.container else None,
            min_tasks=settings.container_min_tasks,
            distribution=self.container.distribution if self.container else None,
            canary=self.canary is not None,
            dead_letter_queues={name: queue for name, queue in (
                ("FrameQueue", self.frame_events.dead_letters),
                ("SlideAnalyzer", self.frame_events.analyzer_dead_letters),
                ("Novelty", self.frame_events.novelty_dead_letters),
                ("Export", self.meetings.export_dead_letters),
                *((f"Analyzer-{name}", queue) for name, queue in self.analyzers.dead_letters.items()))
                if queue is not None},
        ))

        # Output ids are a contract for the CLI (it reads them with describe-stacks).
        CfnOutput(self, "WebSocketUrl", value=self.ingress_url,
                  description="The URL create-bot hands to Recall (append ?token=<token>)")  # fmt: skip
        if self.websocket is not None and self.container is not None:
            CfnOutput(self, "ApiGatewayWebSocketUrl", value=self.websocket.url,
                      description="API Gateway ingress (frames up to 32 KB only), with ?token=<token>")  # fmt: skip
        if self.container is not None:
            CfnOutput(self, "ContainerWebSocketUrl", value=self.container.url,
                      description="Container ingress (no 32 KB limit), with ?token=<token> appended")  # fmt: skip
            if self.container.distribution is not None:
                CfnOutput(self, "DistributionDomainName", value=self.container.distribution.distribution_domain_name,
                          description="CloudFront in front of the receiver (point domainName here with a CNAME)")  # fmt: skip
            else:
                CfnOutput(self, "LoadBalancerDnsName", value=self.container.load_balancer.load_balancer_dns_name,
                          description="The receiver's ALB (point domainName here with a CNAME/alias)")  # fmt: skip
        CfnOutput(self, "BucketName", value=bucket.bucket_name)
        CfnOutput(self, "TableName", value=table.table_name)
        CfnOutput(self, "Region", value=self.region)
        CfnOutput(self, "FrameBusName", value=self.frame_bus.event_bus_name,
                  description="EventBridge bus of the frame events (framesink analyze subscribes to it)")
        CfnOutput(self, "FrameExpiryDays", value=str(settings.frame_expiry_days),
                  description="Days until frames and their index items expire (0 = never); framesink reindex reads it")  # fmt: skip
        CfnOutput(self, "QueryApiUrl", value=self.query_api.url,
                  description="Query API (IAM auth, SigV4): GET recordings/{id}/participants, recordings/{id}/frames")  # fmt: skip
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn,
                  description="Every alarm notifies this SNS topic (subscribe with -c alarmEmail=... or your own)")  # fmt: skip
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard_name,
                  description="CloudWatch dashboard: frames stored/rejected/failed, store latency, connections")  # fmt: skip
        if self.meetings.export_queue is not None:
            CfnOutput(self, "ExportQueueUrl", value=self.meetings.export_queue.queue_url,
                      description="SQS queue of the end-of-meeting export job (framesink export-job sends to it)")  # fmt: skip
        if self.frame_events.queue is not None:
            CfnOutput(self, "FrameQueueUrl", value=self.frame_events.queue.queue_url,
                      description="SQS queue of every stored frame's S3 event (framesink watch reads it)")  # fmt: skip
        if self.secrets.token_secret is not None:
            CfnOutput(self, "TokenSecretArn", value=self.secrets.token_secret.secret_arn,
                      description="ARN of the shared connection token (read it with get-secret-value)")  # fmt: skip
