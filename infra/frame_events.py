"""The live feed (docs/live-feed.md): the rules on the stack's frame bus, where each ingress
publishes one "Frame Stored" event per durable frame (framesink_core/ingest/outlet.py), an
optional queue to pull them from, and the example slide analyzer.

- ``frameQueue=true``: an encrypted SQS queue fed by a rule on every frame event, with a
  dead-letter queue; output ``FrameQueueUrl``. Only EventBridge (that rule) may send to it;
  `framesink watch` and your consumers read it.
- ``novelty=true`` (the default): a Lambda (framesink_handlers/novelty.py, media asset)
  invoked by a rule on every frame event; it flags the frame's index item and publishes
  "Frame Scored" on the same bus (the only publisher besides the ingresses). Fails twice ->
  a dead-letter queue that alarms.
- ``analyzer=slides``: a Lambda (framesink_handlers/slides.py, on the media asset: Pillow)
  invoked by a rule on screenshare frames; what fails twice waits in a dead-letter queue
  that alarms. It may read frames and their index, and write its results beside them.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.read.feed import frames_pattern
from framesink_core.shared import schema

from .functions import FunctionFactory
from .settings import InfraSettings


def event_pattern(pattern: dict) -> events.EventPattern:
    return events.EventPattern(source=pattern["source"], detail_type=pattern["detail-type"],
                               detail=pattern.get("detail"))


def encrypted_queue(scope: Construct, id: str, *, retention: Duration, visibility: Duration | None = None,
                    dead_letter: sqs.IQueue | None = None, max_receive_count: int = 5) -> sqs.Queue:
    """An SQS queue encrypted at rest (SSE-SQS) that refuses non-TLS requests."""
    queue = sqs.Queue(
        scope, id, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True, retention_period=retention,
        visibility_timeout=visibility,
        dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letter, max_receive_count=max_receive_count)
        if dead_letter else None,
    )
    if dead_letter is None:
        NagSuppressions.add_resource_suppressions(queue, [NagPackSuppression(
            id="AwsSolutions-SQS3",
            reason="This is a dead-letter queue itself: what lands here alarms (infra/monitoring.py) and waits "
            "for a redrive.")])
    return queue


class FrameEvents(Construct):
    """``queue``/``dead_letters`` (frameQueue), ``analyzer``/``analyzer_dead_letters``."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, bucket: s3.IBucket,
                 table: dynamodb.ITable, functions: FunctionFactory, bus: events.IEventBus):
        super().__init__(scope, id)
        self.queue: sqs.Queue | None = None
        self.dead_letters: sqs.Queue | None = None
        self.analyzer = None
        self.analyzer_dead_letters: sqs.Queue | None = None
        self.novelty = None
        self.novelty_dead_letters: sqs.Queue | None = None

        if settings.novelty:
            self.novelty_dead_letters = encrypted_queue(self, "NoveltyDeadLetters", retention=Duration.days(14))
            # framesink_core.analyze.novelty.NoveltyScorer: GetObject (the frame); GetItem (the
            # stream's last novel frame, the recording's tombstone), PutItem (a new last novel
            # frame, conditional), UpdateItem (novel on the frame's item, never creating one),
            # DeleteItem (its own item when the recording was deleted meanwhile); PutEvents
            # ("Frame Scored") on this bus only.
            self.novelty = functions.create(
                self, "Novelty",
                handler="framesink_handlers.novelty.handler",
                description="Novelty: each stored frame's change score and novel flag",
                statements=[
                    iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("recordings/*")]),
                    iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                                 "dynamodb:DeleteItem"], resources=[table.table_arn]),
                    iam.PolicyStatement(actions=["events:PutEvents"], resources=[bus.event_bus_arn]),
                ],
                # Decoding is CPU: 1,024 MB is ~0.6 vCPU (Lambda allocates CPU with memory), a
                # 1280x720 PNG's thumbnail ~40 ms there (22 ms on a full core, docs/performance.md).
                memory_size=1024, timeout=Duration.seconds(30), code=functions.media_code,
                environment={"FRAMESINK_EVENT_BUS": bus.event_bus_name},
            )
            NagSuppressions.add_resource_suppressions(self.novelty.policy, [NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="s3:GetObject is limited to the frames bucket's recordings/ prefix; which frame is scored is "
                "only known per event.",
                applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/recordings\/\*$/g"}],
            )])
            rule = events.Rule(self, "FramesToNovelty", description="framesink: every stored frame, to novelty",
                               event_bus=bus, event_pattern=event_pattern(frames_pattern()))
            rule.add_target(targets.LambdaFunction(
                self.novelty.function, retry_attempts=2, max_event_age=Duration.hours(1),
                dead_letter_queue=self.novelty_dead_letters))

        if settings.frame_queue:
            self.dead_letters = encrypted_queue(self, "FrameQueueDeadLetters", retention=Duration.days(14))
            self.queue = encrypted_queue(self, "FrameQueue", retention=Duration.days(1),
                                         visibility=Duration.seconds(30), dead_letter=self.dead_letters)
            rule = events.Rule(self, "FramesToQueue", description="framesink: every stored frame, to the frame queue",
                               event_bus=bus, event_pattern=event_pattern(frames_pattern()))
            # CDK's SqsQueue target adds the queue policy: events.amazonaws.com, this rule only.
            rule.add_target(targets.SqsQueue(self.queue))

        if settings.analyzer == "slides":
            self.analyzer_dead_letters = encrypted_queue(self, "AnalyzerDeadLetters", retention=Duration.days(14))
            table_arn = table.table_arn
            # framesink_core.analyze.slides.SlideAnalyzer: GetObject (the frame, the previous one),
            # Query (the previous screenshare frame on gsi1, earlier slides on the table),
            # ListBucket under recordings/ (the previous frame before it is indexed),
            # PutItem (the slide item).
            self.analyzer = functions.create(
                self, "SlideAnalyzer",
                handler="framesink_handlers.slides.handler",
                description="Example analyzer: screenshare frames -> slide changes in the index",
                statements=[
                    iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("recordings/*")]),
                    iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
                                        conditions={"StringLike": {"s3:prefix": ["recordings/*"]}}),
                    iam.PolicyStatement(actions=["dynamodb:Query"], resources=[
                        table_arn, *(f"{table_arn}/index/{g['name']}" for g in schema.TABLE_SCHEMA["global_secondary_indexes"])]),
                    # PutItem the slide item; GetItem the recording's tombstone, DeleteItem the
                    # slide when the recording was deleted meanwhile (framesink_core.read.delete).
                    iam.PolicyStatement(actions=["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"],
                                        resources=[table_arn]),
                ],
                memory_size=1024, timeout=Duration.seconds(60), code=functions.media_code,
            )
            NagSuppressions.add_resource_suppressions(self.analyzer.policy, [NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="s3:GetObject is limited to the frames bucket's recordings/ prefix; which frames the analyzer "
                "reads is only known per event.",
                applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/recordings\/\*$/g"}],
            )])
            rule = events.Rule(self, "ScreensharesToAnalyzer",
                               description="framesink: stored screenshare frames, to the slide analyzer",
                               event_bus=bus, event_pattern=event_pattern(frames_pattern(frame_type="screenshare")))
            rule.add_target(targets.LambdaFunction(
                self.analyzer.function, retry_attempts=2, max_event_age=Duration.hours(1),
                dead_letter_queue=self.analyzer_dead_letters))
