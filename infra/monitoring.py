"""CloudWatch alarms (lost frames, rejected messages, function errors) and the API Gateway
access logs every API stage writes (``api_access_logs``).

Alarms have no actions: subscribe one (SNS, chatbot) to them in the console or extend this
construct. Missing data is "not breaching": a quiet stack is a healthy stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import jsii
from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from constructs import Construct

from .functions import METRICS_NAMESPACE

if TYPE_CHECKING:
    from .settings import InfraSettings
    from .stack import FramesinkStack

PERIOD = Duration.minutes(5)
# framesink_core.storage.StoreError.reason: "<stage>_write_failed" for stage s3 | index.
STORE_FAILURE_REASONS = ("s3_write_failed", "index_write_failed")
REJECTIONS_PER_PERIOD = 5  # one odd message is noise; a stream of them is a broken client


class Monitoring(Construct):
    def __init__(self, scope: Construct, id: str, *, stack: "FramesinkStack"):
        super().__init__(scope, id)
        service = stack.functions.service_name

        # FrameStoreFailed is emitted with dimensions {service, reason}; sum the known reasons.
        failed = cloudwatch.MathExpression(
            expression=" + ".join(f"FILL(m{i}, 0)" for i in range(len(STORE_FAILURE_REASONS))),
            using_metrics={
                f"m{i}": cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name="FrameStoreFailed",
                    dimensions_map={"service": service, "reason": reason},
                    statistic="Sum",
                    period=PERIOD,
                )
                for i, reason in enumerate(STORE_FAILURE_REASONS)
            },
            label="Frames not stored",
            period=PERIOD,
        )
        self.frames_not_stored = failed.create_alarm(
            self,
            "FramesNotStored",
            alarm_description="A frame could not be written to S3 or the index after retries (lost frame).",
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        # MessageRejected has an open set of reasons (one per validation rule), and alarms
        # cannot SEARCH across dimensions, so count the rejection log lines instead.
        # Both ingresses log rejections from the same core; their filters feed one metric.
        sources = []
        if stack.websocket is not None:
            sources.append(("RejectedMessages", stack.websocket.ingest.log_group))
        if stack.container is not None:
            sources.append(("RejectedMessagesContainer", stack.container.log_group))
        rejected = [
            logs.MetricFilter(
                self,
                filter_id,
                log_group=log_group,
                filter_pattern=logs.FilterPattern.string_value("$.message", "=", "message rejected"),
                metric_namespace=METRICS_NAMESPACE,
                metric_name=f"MessageRejectedTotal-{stack.settings.stage}",
                metric_value="1",
                default_value=0,
            )
            for filter_id, log_group in sources
        ][0].metric(statistic="Sum", period=PERIOD)
        self.messages_rejected = rejected.create_alarm(
            self,
            "MessagesRejected",
            alarm_description="The ingest function or container receiver rejected messages (bad JSON, bad PNG, ids, size); "
            "see its log lines with message='message rejected' for the reason.",
            threshold=REJECTIONS_PER_PERIOD,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        # Every function the factory made, including ones other constructs add later.
        self.function_errors = [
            made.function.metric_errors(period=PERIOD, statistic="Sum").create_alarm(
                made,
                "Errors",
                alarm_description=f"{made.node.id} function errors (unhandled exceptions, timeouts).",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            for made in stack.functions.functions
        ]


# The two HTTP APIs (create-bot, query) log the same fields: who called (IAM), what, and how
# it went. The WebSocket API has its own variables (infra/websocket_ingress.py).
HTTP_API_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTimeEpoch",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "caller": "$context.identity.userArn",
    "sourceIp": "$context.identity.sourceIp",
    "responseLength": "$context.responseLength",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "error": "$context.error.message",
    "integrationError": "$context.integrationErrorMessage",
}


def api_access_logs(
    scope: Construct, settings: "InfraSettings", fields: Mapping[str, str]
) -> tuple[logs.LogGroup, apigwv2.IAccessLogSettings]:
    """An API stage's access logs: a log group ("AccessLogs" in ``scope``) with the stack's
    retention, and one compact JSON line per request with ``fields`` (name -> $context
    variable; each API type has its own variables, so each API names its fields)."""
    group = logs.LogGroup(scope, "AccessLogs", retention=settings.log_retention,
                          removal_policy=settings.removal_policy)
    return group, _AccessLogSettings(group, json.dumps(dict(fields), separators=(",", ":")))


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogSettings:
    """aws-apigatewayv2 has no concrete IAccessLogSettings class: destination + format."""

    def __init__(self, log_group: logs.ILogGroup, log_format: str):
        self._destination = apigwv2.LogGroupLogDestination(log_group)
        self._format = log_format

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return apigateway.AccessLogFormat.custom(self._format)
