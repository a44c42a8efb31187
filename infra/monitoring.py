"""Alarms that reach someone, one dashboard, and the access-log helper every API stage uses.

Every alarm's action is one SNS topic (output ``AlarmTopicArn``; ``-c alarmEmail=a@b``
subscribes an address). The AWS services' alarms and the dashboard come from
cdk-monitoring-constructs (MonitoringFacade): Lambda errors and throttles, DynamoDB throttles
and system errors, the receiver's healthy tasks and ALB 5xx, CloudFront 5xx widgets.
framesink's own metrics (EMF, namespace ``framesink``) go through ``monitor_custom``: frames
not stored, close codes 1009 and 1011, and the dashboard's frames stored/rejected/failed per
minute, store latency p99 and open connections. Two alarms are written with aws_cloudwatch
directly, each for a reason given where it is made: rejected messages (a log metric filter)
and CloudFront's 5xx rate (its metrics live in us-east-1 only, so the alarm exists only
when the stack does).

Missing data is "not breaching" for every count: a quiet stack is a healthy stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jsii
from aws_cdk import Aws, CfnCondition, Duration, Fn
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .canary import FAILED_RUNS_TO_ALARM
from .canary import SCHEDULE as CANARY_SCHEDULE
from .functions import METRICS_NAMESPACE, PythonFunction
from .settings import InfraSettings

PERIOD = Duration.minutes(5)
# framesink_core: StoreError.reason ("<stage>_write_failed"), the receiver's internal_error, and
# spool_full (the receiver's spool had no room: the frame is lost).
STORE_FAILURE_REASONS = ("s3_write_failed", "index_write_failed", "internal_error", "spool_full")
EVENT_FAILURE_REASONS = ("rejected", "internal_error", "closed")  # FrameEventFailed (ingest/outlet.py)
# The receiver's spool holds frames while S3 or DynamoDB fails (framesink_core/ingest/spool.py): one
# minute of it is an outage the spool rides out; this many minutes in a row is worth a look.
SPOOL_MINUTES_TO_ALARM = 5
REJECTIONS_PER_PERIOD = 5  # one odd message is noise; a stream of them is a broken client
# Websocket close codes that alarm: 1009 a message over the ingress's limit (API Gateway's
# 32 KB: camera frames sent to the wrong ingress), 1011 an error on our side.
ALARMING_CLOSE_CODES = {1009: "a message over the ingress's size limit (camera frames on API Gateway?)",
                        1011: "a server error or a keepalive timeout while the receiver kept up"}
ALB_5XX_PER_PERIOD = 5  # a deploy's draining handshakes (503) are a few; more is an outage
CLOUDFRONT_5XX_PERCENT = 5


@dataclass
class Monitored:
    """What the stack has for Monitoring to watch; None/empty for parts not deployed."""

    functions: Sequence[PythonFunction]
    table: dynamodb.ITable
    websocket_stage: apigwv2.WebSocketStage | None = None
    ingest_log_group: logs.ILogGroup | None = None
    receiver_log_group: logs.ILogGroup | None = None
    load_balancer: elbv2.IApplicationLoadBalancer | None = None
    target_group: elbv2.ApplicationTargetGroup | None = None
    min_tasks: int = 1
    distribution: cloudfront.IDistribution | None = None
    dead_letter_queues: Mapping[str, sqs.IQueue] = field(default_factory=dict)  # what each one catches
    canary: bool = False  # infra/canary.py runs: alarm on its CanaryOk


class Monitoring(Construct):
    """``topic`` (every alarm's action), ``facade`` (cdk-monitoring-constructs), ``alarms``
    (the ones made here) and ``dashboard_name``."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, service_name: str, watch: Monitored):
        super().__init__(scope, id)
        from cdk_monitoring_constructs import (
            AlarmFactoryDefaults,
            CustomMetricGroup,
            CustomMetricWithAlarm,
            CustomThreshold,
            DefaultDashboardFactory,
            ErrorCountThreshold,
            MonitoringFacade,
            SnsAlarmActionStrategy,
            ThrottledEventsThreshold,
        )

        prefix = f"framesink-{settings.stage}"
        # A customer managed key: CloudWatch cannot publish to a topic under the AWS-managed
        # aws/sns key. Rotated yearly; ~$1/month.
        key = kms.Key(self, "AlarmTopicKey", enable_key_rotation=True, removal_policy=settings.removal_policy,
                      description=f"{prefix}: encrypts the alarm topic")
        key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        ))
        self.topic = sns.Topic(self, "AlarmTopic", display_name=f"{prefix} alarms", master_key=key,
                               enforce_ssl=True)
        # A topic policy replaces SNS's default one, and enforce_ssl makes one holding only its
        # Deny: CloudWatch must then be allowed by name, or every alarm action fails ("Why
        # didn't I receive an SNS notification for my CloudWatch alarm trigger?", AWS re:Post;
        # SNS Developer Guide, "Amazon SNS access control case examples": CloudWatch alarms
        # publishing, with aws:SourceAccount against the confused deputy).
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarms", principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"], resources=[self.topic.topic_arn],
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        ))
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        self._action = actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []

        self.dashboard_name = prefix
        self.facade = MonitoringFacade(
            self, "Facade",
            alarm_factory_defaults=AlarmFactoryDefaults(
                actions_enabled=True, alarm_name_prefix=prefix,
                action=SnsAlarmActionStrategy(on_alarm_topic=self.topic),
                datapoints_to_alarm=1, evaluation_periods=1,
            ),
            dashboard_factory=DefaultDashboardFactory(self, "Dashboards", dashboard_name_prefix=prefix,
                                                      create_dashboard=True, create_summary_dashboard=False,
                                                      create_alarm_dashboard=False),
        )

        # --- framesink's own metrics: the first widgets, and their alarms ----------------------
        def metric(name: str, statistic: str = "Sum", period: Duration = Duration.minutes(1),
                   dimensions: Mapping[str, str] | None = None, label: str | None = None) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name=name, statistic=statistic,
                                     period=period, dimensions_map={"service": service_name, **(dimensions or {})},
                                     label=label or name)

        not_stored = cloudwatch.MathExpression(
            expression=" + ".join(f"FILL(m{i}, 0)" for i in range(len(STORE_FAILURE_REASONS))),
            using_metrics={f"m{i}": metric("FrameStoreFailed", period=PERIOD, dimensions={"reason": reason})
                           for i, reason in enumerate(STORE_FAILURE_REASONS)},
            label="Frames not stored", period=PERIOD,
        )
        rejected_search = cloudwatch.MathExpression(
            expression=f"SUM(SEARCH('{{{METRICS_NAMESPACE},reason,service}} MetricName=\"MessageRejected\" "
                       f"service=\"{service_name}\"', 'Sum', 60))",
            label="Rejected", period=Duration.minutes(1), using_metrics={},
        )
        closes = {code: metric("ConnectionClosed", period=PERIOD, dimensions={"code": str(code)},
                               label=f"Closed with {code}") for code in ALARMING_CLOSE_CODES}

        def threshold(count: float, description: str) -> CustomThreshold:
            return CustomThreshold(threshold=count, alarm_description_override=description,
                                   comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                                   treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                                   period=PERIOD)

        self.facade.monitor_custom(
            human_readable_name="framesink frames", alarm_friendly_name="Frames",
            metric_groups=[
                CustomMetricGroup(title="Frames per minute: stored, rejected, failed", metrics=[
                    metric("FrameStored", label="Stored"), rejected_search,
                    CustomMetricWithAlarm(metric=not_stored, alarm_friendly_name="FramesNotStored", add_alarm={
                        "Critical": threshold(1, "A frame could not be written to S3 or the index after retries "
                                              "(lost frame): see log lines 'frame not stored'.")}),
                ]),
                CustomMetricGroup(title="Store latency (ms, p99 and p50)", metrics=[
                    metric("StoreLatency", statistic="p99", label="p99"),
                    metric("StoreLatency", statistic="p50", label="p50"),
                ]),
                CustomMetricGroup(title="Connections: open (receiver), opened and closed per minute", metrics=[
                    metric("OpenConnections", statistic="Maximum", label="Open (receiver)"),
                    metric("ConnectionAccepted", label="Opened"), metric("ConnectionClosed", label="Closed"),
                ]),
                CustomMetricGroup(title="Closes by code that alarm (per 5 minutes)", metrics=[
                    CustomMetricWithAlarm(metric=closes[code], alarm_friendly_name=f"Closed{code}", add_alarm={
                        "Critical": threshold(1, f"Websocket connections closed with {code}: {why}.")})
                    for code, why in ALARMING_CLOSE_CODES.items()
                ]),
            ],
        )

        # MessageRejected has an open set of reasons (one per validation rule) and alarms cannot
        # SEARCH across dimensions: count the rejection log lines instead (a metric filter per
        # ingress log group, both feeding one metric).
        sources = [(name, group) for name, group in (("RejectedMessages", watch.ingest_log_group),
                                                      ("RejectedMessagesContainer", watch.receiver_log_group)) if group]
        filters = [
            logs.MetricFilter(self, filter_id, log_group=group,
                              filter_pattern=logs.FilterPattern.string_value("$.message", "=", "message rejected"),
                              metric_namespace=METRICS_NAMESPACE, metric_name=f"MessageRejectedTotal-{settings.stage}",
                              metric_value="1", default_value=0)
            for filter_id, group in sources
        ]
        if filters:
            self._alarm("MessagesRejected", filters[0].metric(statistic="Sum", period=PERIOD), REJECTIONS_PER_PERIOD,
                        "The ingest function or container receiver rejected messages (bad JSON, bad PNG, ids, size, "
                        "conflicts); see its log lines with message='message rejected' for the reason.")

        # Frame events the ingress could not publish (ingest/outlet.py): the frames are stored,
        # but consumers on the feed (watch, analyzers) never hear of them.
        self._alarm("FrameEventsNotPublished", cloudwatch.MathExpression(
            expression=" + ".join(f"FILL(e{i}, 0)" for i in range(len(EVENT_FAILURE_REASONS))),
            using_metrics={f"e{i}": metric("FrameEventFailed", period=PERIOD, dimensions={"reason": reason})
                           for i, reason in enumerate(EVENT_FAILURE_REASONS)},
            label="Frame events not published", period=PERIOD), 1,
            "EventBridge refused frame events after retries (log lines 'frame event not published'): those frames "
            "are stored and indexed, but the live feed's consumers missed them; `framesink watch --source index` "
            "and the index's queries still list them.")

        # --- the AWS services -------------------------------------------------------------------
        for made in watch.functions:
            self.facade.monitor_lambda_function(
                lambda_function=made.function, human_readable_name=made.node.path,
                alarm_friendly_name=made.node.id,
                add_fault_count_alarm={"Critical": ErrorCountThreshold(max_error_count=0)},
                add_throttles_count_alarm={"Critical": ErrorCountThreshold(max_error_count=0)},
            )
        self.facade.monitor_dynamo_table(
            table=watch.table, billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST, alarm_friendly_name="Index",
            add_read_throttled_events_count_alarm={"Critical": ThrottledEventsThreshold(max_throttled_events_threshold=0)},
            add_write_throttled_events_count_alarm={"Critical": ThrottledEventsThreshold(max_throttled_events_threshold=0)},
            add_system_error_count_alarm={"Critical": ErrorCountThreshold(max_error_count=0)},
        )
        if watch.websocket_stage is not None:
            api = watch.websocket_stage.api
            dims = {"ApiId": api.api_id, "Stage": watch.websocket_stage.stage_name}
            for name, why in (("IntegrationError", "a $connect/$default/$disconnect Lambda answered with an error"),
                              ("ExecutionError", "API Gateway could not run an integration")):
                self._alarm(f"WebSocket{name}", cloudwatch.Metric(
                    namespace="AWS/ApiGateway", metric_name=name, dimensions_map=dims, statistic="Sum", period=PERIOD),
                    1, f"WebSocket API {name}: {why}.")
        # Recall's realtime_endpoint.failed webhook (meeting/meetings.py): Recall gave up
        # reconnecting and sends nothing more, while the bot may still be in the call.
        self._alarm("RealtimeEndpointFailed", metric("EndpointFailed", period=PERIOD), 1,
                    "Recall reported a realtime endpoint failed (webhook realtime_endpoint.failed): after 30 failed "
                    "reconnects it stopped sending frames for that recording; the bot may still be in the call. See "
                    "the webhook function's 'realtime endpoint failed' log line, then the ingress (doctor).")
        if watch.target_group is not None and watch.load_balancer is not None:
            # SpoolDepth: the receiver's gauge (every minute) of frames waiting on its disk.
            spool_alarm = self._alarm("SpoolHoldingFrames", metric(
                "SpoolDepth", statistic="Maximum", period=Duration.minutes(1)), 1,
                f"A receiver task has held frames in its spool for {SPOOL_MINUTES_TO_ALARM} minutes: S3 or DynamoDB "
                "is failing its writes (log lines 'frame spooled'). Nothing is lost while the spool has room; a full "
                "spool loses frames (FramesNotStored, reason spool_full) and closes connections with 1013.")
            cfn_alarm = spool_alarm.node.default_child
            cfn_alarm.evaluation_periods = cfn_alarm.datapoints_to_alarm = SPOOL_MINUTES_TO_ALARM
            self.facade.monitor_custom(
                human_readable_name="Container ingress (ALB)", alarm_friendly_name="Receiver",
                metric_groups=[
                    CustomMetricGroup(title="Healthy receiver tasks", metrics=[CustomMetricWithAlarm(
                        metric=watch.target_group.metrics.healthy_host_count(period=Duration.minutes(1),
                                                                              statistic="Minimum"),
                        alarm_friendly_name="HealthyTasks", add_alarm={"Critical": CustomThreshold(
                            threshold=watch.min_tasks, evaluation_periods=3, datapoints_to_alarm=3,
                            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                            treat_missing_data_override=cloudwatch.TreatMissingData.BREACHING,
                            period=Duration.minutes(1),
                            alarm_description_override="Fewer receiver tasks pass /healthz than containerMinTasks: "
                            "a task is down (or none is up, and Recall cannot connect).")})]),
                    CustomMetricGroup(title="ALB 5xx (load balancer and receiver)", metrics=[CustomMetricWithAlarm(
                        metric=cloudwatch.MathExpression(
                            expression="FILL(elb, 0) + FILL(target, 0)", period=PERIOD, label="5xx",
                            using_metrics={
                                "elb": watch.load_balancer.metrics.http_code_elb(
                                    elbv2.HttpCodeElb.ELB_5XX_COUNT, period=PERIOD, statistic="Sum"),
                                "target": watch.load_balancer.metrics.http_code_target(
                                    elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=PERIOD, statistic="Sum")}),
                        alarm_friendly_name="Alb5xx", add_alarm={"Critical": threshold(
                            ALB_5XX_PER_PERIOD, "The ALB or the receiver answered 5xx: tasks unreachable, or the "
                            "handshake's token lookup failing (auth_unavailable).")})]),
                ],
            )
        if watch.distribution is not None:
            # Dashboard widgets from us-east-1, where CloudFront's metrics are.
            self.facade.monitor_cloud_front_distribution(distribution=watch.distribution, region="us-east-1",
                                                         alarm_friendly_name="CloudFront")
            # An alarm must live in its metric's region: only a stack in us-east-1 gets this one.
            in_us_east_1 = CfnCondition(self, "InUsEast1", expression=Fn.condition_equals(Aws.REGION, "us-east-1"))
            alarm = self._alarm("CloudFront5xx", cloudwatch.Metric(
                namespace="AWS/CloudFront", metric_name="5xxErrorRate", statistic="Average", period=PERIOD,
                dimensions_map={"DistributionId": watch.distribution.distribution_id, "Region": "Global"}),
                CLOUDFRONT_5XX_PERCENT, "CloudFront answered 5xx to more than 5 % of requests: the receiver "
                "(its VPC origin) is unreachable.")
            alarm.node.default_child.cfn_options.condition = in_us_east_1
        if watch.canary:
            # 3 failed runs in a row (15 minutes): one lost packet is not an outage. A run that
            # did not report keeps the alarm where it is (missing data): a fresh stack has no
            # runs yet, and a canary that crashes or is throttled raises its own function's
            # fault and throttle alarms.
            canary = metric("CanaryOk", statistic="Minimum", period=CANARY_SCHEDULE, label="Canary passed")
            alarm = canary.create_alarm(
                self, "CanaryFailing", threshold=1, evaluation_periods=FAILED_RUNS_TO_ALARM,
                datapoints_to_alarm=FAILED_RUNS_TO_ALARM,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.MISSING,
                alarm_description="The canary's websocket handshake through the public URL failed 3 runs in a row "
                "(no 401 without a token, or no 101 with one): Recall cannot connect. See the Canary function's "
                "log line 'canary failed' for the statuses; a 502/504 means CloudFront cannot reach the ALB "
                "(its security group, or no healthy task).")
            alarm.add_alarm_action(self._action)
            self.alarms.append(alarm)
        for what, queue in watch.dead_letter_queues.items():
            self._alarm(f"DeadLetters{what}", queue.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"), 1, f"{what}: messages failed every retry and wait in its "
                "dead-letter queue (see its consumer's logs; redrive once fixed).")

    def _alarm(self, id: str, metric: cloudwatch.IMetric, count: float, description: str) -> cloudwatch.Alarm:
        """An alarm made here (not by the facade), with the topic as its action too."""
        alarm = metric.create_alarm(
            self, id, alarm_description=description, threshold=count, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
        return alarm


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
