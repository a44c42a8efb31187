"""The canary (``canary=true``, the default): a function every 5 minutes that makes the
handshake a Recall bot makes, through the URL bots get (``WebSocketUrl``), and publishes
``CanaryOk`` / ``CanaryHandshakeMs`` (framesink_handlers/canary.py); Monitoring alarms after
3 failed runs in a row. It is how a deploy in any region learns that CloudFront cannot reach
its origin: CloudFront's own metrics exist only in us-east-1.

Not in a VPC: it reaches the public URL the way Recall does, from the internet.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from framesink_core.access.probe import CANARY_URL_ENV

from .functions import FunctionFactory

SCHEDULE = Duration.minutes(5)
FAILED_RUNS_TO_ALARM = 3


class Canary(Construct):
    """``function`` and ``rule``."""

    def __init__(self, scope: Construct, id: str, *, functions: FunctionFactory, table: dynamodb.ITable, url: str):
        super().__init__(scope, id)
        # TokenStore.issue: two PutItems (the token's hash, the bot's link to it), nothing else.
        self.function = functions.create(
            self, "Canary",
            handler="framesink_handlers.canary.handler",
            description="Canary: a Recall-style websocket handshake through the public URL (401, then 101)",
            statements=[iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[table.table_arn])],
            timeout=Duration.seconds(30),  # two handshakes of at most 10 s each
            environment={CANARY_URL_ENV: url},
        )
        self.rule = events.Rule(self, "Schedule", description="framesink canary: every 5 minutes",
                                schedule=events.Schedule.rate(SCHEDULE))
        # A failed run is a data point, not something to retry: the next run is 5 minutes away.
        self.rule.add_target(targets.LambdaFunction(self.function.function, retry_attempts=0))
