"""Your kit analyzers (framesink_core/analyze/kit.py), deployed from the ``analyzers`` setting
without editing infra/ (docs/analyzers.md). Each entry names a directory, a function and where
it runs:

- ``"runtime": "lambda"``: a function on its own asset (the directory at the root, its
  requirements.txt bundled for Lambda's platform without Docker, framesink_core, Pillow; synth
  refuses one over Lambda's 250 MB), running framesink_handlers.analyzer.handler. A rule on
  the frame bus invokes it per frame event (asynchronous: 2 retries, then a dead-letter queue
  that alarms).
- ``"runtime": "container"``: an ECS Fargate service (python -m framesink_core.analyze.worker,
  image built from the directory in CodeBuild at deploy time, or by the local Docker with
  containerImage=local) reading its own encrypted queue, which a rule on the frame bus fills;
  a frame whose function raises 5 times goes to a dead-letter queue that alarms. Tasks scale
  with the queue's depth between minTasks and maxTasks (ecs-patterns'
  QueueProcessingFargateService), for models that do not fit Lambda (OpenCV, PyTorch).

Either may read frames (s3:GetObject under recordings/) and write its results beside them
(dynamodb:PutItem, GetItem for the recording's tombstone, DeleteItem of its own result when the
recording was deleted meanwhile) and nothing else. ``novelOnly`` subscribes to "Frame Scored"
events of novel frames (frames_pattern(novel_only=True)); ``type`` narrows to one type.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.read.feed import frames_pattern
from framesink_core.shared.settings import Settings

from .bundling import analyzer_code, analyzer_image_context
from .container_ingress import ARCHITECTURES, container_image
from .frame_events import encrypted_queue, event_pattern
from .functions import RUNTIME, FunctionFactory, PythonFunction
from .settings import AnalyzerSpec, InfraSettings

MAX_RECEIVES = 5  # a container analyzer's frame: runs before the dead-letter queue
VPC_CIDR = "10.42.0.0/16"  # the analyzers' own VPC, when the stack has no container ingress


def statements(bucket: s3.IBucket, table: dynamodb.ITable) -> list[iam.PolicyStatement]:
    """framesink_core.analyze.kit.Runner: GetObject (Frame.png), PutItem (the result),
    GetItem (the tombstone check after it), DeleteItem (its result, when the recording was
    deleted meanwhile)."""
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("recordings/*")]),
        iam.PolicyStatement(actions=["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"],
                            resources=[table.table_arn]),
    ]


READ_FRAMES_REASON = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason="s3:GetObject is limited to the frames bucket's recordings/ prefix; which frame an analyzer reads is "
    "only known per event.",
    applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/recordings\/\*$/g"}],
)


class Analyzers(Construct):
    """``functions`` (lambda analyzers), ``services`` and ``queues`` (container analyzers),
    ``dead_letters`` (name -> queue, every analyzer's; monitoring alarms on each)."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, bucket: s3.IBucket,
                 table: dynamodb.ITable, functions: FunctionFactory, bus: events.IEventBus, core: Settings,
                 service_name: str, vpc: ec2.IVpc | None = None, cluster: ecs.ICluster | None = None):
        super().__init__(scope, id)
        self.settings, self.bucket, self.table, self.bus = settings, bucket, table, bus
        self.core, self.service_name = core, service_name
        self.functions: dict[str, PythonFunction] = {}
        self.services: dict[str, ecs_patterns.QueueProcessingFargateService] = {}
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letters: dict[str, sqs.Queue] = {}
        self._vpc, self._cluster = vpc, cluster
        for spec in settings.analyzers:
            if spec.runtime == "lambda":
                self._lambda(spec, functions)
            else:
                self._container(spec)

    def _pattern(self, spec: AnalyzerSpec) -> events.EventPattern:
        return event_pattern(frames_pattern(frame_type=spec.frame_type or None, novel_only=spec.novel_only))

    def _lambda(self, spec: AnalyzerSpec, functions: FunctionFactory) -> None:
        scope = Construct(self, spec.construct_id)
        dead_letters = encrypted_queue(scope, "DeadLetters", retention=Duration.days(14))
        made = functions.create(
            scope, "Function", handler="framesink_handlers.analyzer.handler",
            description=f"framesink analyzer {spec.name}: {spec.handler} on each frame event",
            statements=statements(self.bucket, self.table),
            memory_size=spec.memory_mb, timeout=Duration.seconds(spec.timeout_seconds),
            code=analyzer_code(RUNTIME, self.settings.architecture, Path(spec.path)),
            environment={"FRAMESINK_ANALYZER": spec.handler, "FRAMESINK_ANALYZER_NAME": spec.name},
        )
        NagSuppressions.add_resource_suppressions(made.policy, [READ_FRAMES_REASON])
        rule = events.Rule(scope, "Frames", description=f"framesink: frames to the {spec.name} analyzer",
                           event_bus=self.bus, event_pattern=self._pattern(spec))
        rule.add_target(targets.LambdaFunction(made.function, retry_attempts=2, max_event_age=Duration.hours(1),
                                               dead_letter_queue=dead_letters))
        self.functions[spec.name] = made
        self.dead_letters[spec.name] = dead_letters

    def _network(self) -> tuple[ec2.IVpc, ecs.ICluster]:
        """The container ingress's VPC and cluster, or one of the analyzers' own of the same
        shape: public subnets, no NAT gateway, S3 and DynamoDB gateway endpoints."""
        if self._cluster is None:
            flow_logs = logs.LogGroup(self, "FlowLogs", retention=self.settings.log_retention,
                                      removal_policy=self.settings.removal_policy)
            self._vpc = ec2.Vpc(
                self, "Vpc", ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR), max_azs=2, nat_gateways=0,
                subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                                              cidr_mask=24)],
                gateway_endpoints={
                    "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                    "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)},
                flow_logs={"Rejected": ec2.FlowLogOptions(
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
            )
            self._cluster = ecs.Cluster(self, "Cluster", vpc=self._vpc)
            NagSuppressions.add_resource_suppressions(self._cluster, [NagPackSuppression(
                id="AwsSolutions-ECS4",
                reason="Container Insights bills custom metrics per task; the analyzers write their own metrics "
                "(EMF) and the queue's depth is alarmed. Enable it on the cluster if you want per-task views.")])
        return self._vpc, self._cluster

    def _container(self, spec: AnalyzerSpec) -> None:
        vpc, cluster = self._network()
        scope = Construct(self, spec.construct_id)
        cpu_architecture, platform = ARCHITECTURES[self.settings.architecture_name]
        dead_letters = encrypted_queue(scope, "DeadLetters", retention=Duration.days(14))
        # Visibility: a frame taken by a worker is hidden this long; the worker's own back-off
        # returns a failed one sooner (framesink_core/analyze/worker.py).
        queue = encrypted_queue(scope, "Queue", retention=Duration.days(1), visibility=Duration.seconds(120),
                                dead_letter=dead_letters, max_receive_count=MAX_RECEIVES)
        rule = events.Rule(scope, "Frames", description=f"framesink: frames to the {spec.name} analyzer's queue",
                           event_bus=self.bus, event_pattern=self._pattern(spec))
        # CDK's SqsQueue target adds the queue policy: events.amazonaws.com, this rule only.
        rule.add_target(targets.SqsQueue(queue))
        security_group = ec2.SecurityGroup(
            scope, "TaskSecurityGroup", vpc=vpc, allow_all_outbound=False,
            description=f"framesink analyzer {spec.name}: nothing in; HTTPS out (AWS APIs)")
        security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs over HTTPS")
        image, _, _ = container_image(scope, self.settings, platform, what=f"analyzer {spec.name}",
                                      directory=analyzer_image_context(spec.name, Path(spec.path)), file="Dockerfile")
        log_group = logs.LogGroup(scope, "Logs", retention=self.settings.log_retention,
                                  removal_policy=self.settings.removal_policy)
        service = ecs_patterns.QueueProcessingFargateService(
            scope, "Service", cluster=cluster, queue=queue, image=image, cpu=spec.cpu,
            memory_limit_mib=spec.memory_mb,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=cpu_architecture,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX),
            # No NAT gateway: a public address reaches ECR, CloudWatch Logs and SQS; the security
            # group admits nothing in.
            assign_public_ip=True, task_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[security_group],
            environment={**self.core.as_env(), "POWERTOOLS_SERVICE_NAME": self.service_name,
                         "FRAMESINK_ANALYZER": spec.handler, "FRAMESINK_ANALYZER_NAME": spec.name,
                         "FRAMESINK_ANALYZER_WORKERS": str(spec.workers),
                         "FRAMESINK_ANALYZER_LATEST_ONLY": "true" if spec.latest_only else "false"},
            log_driver=ecs.LogDrivers.aws_logs(stream_prefix="analyzer", log_group=log_group),
            min_scaling_capacity=spec.min_tasks, max_scaling_capacity=spec.max_tasks,
            # Scale on the queue alone (frames waiting), not CPU: a model may idle its CPU on I/O.
            disable_cpu_based_scaling=True,
            scaling_steps=[{"upper": 0, "change": -1}, {"lower": 20, "change": +1}, {"lower": 200, "change": +3}],
            min_healthy_percent=100, max_healthy_percent=200,
            # A task that cannot start (an import error in the analyzer) fails the deploy in
            # minutes and rolls back, instead of CloudFormation waiting hours.
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        # The pattern sets QUEUE_NAME; the worker takes the URL.
        service.task_definition.default_container.add_environment("FRAMESINK_ANALYZER_QUEUE_URL", queue.queue_url)
        policy = iam.Policy(scope, "Access", statements=statements(self.bucket, self.table),
                            roles=[service.task_definition.task_role])
        NagSuppressions.add_resource_suppressions(policy, [READ_FRAMES_REASON])
        NagSuppressions.add_resource_suppressions(service.task_definition, [NagPackSuppression(
            id="AwsSolutions-ECS2",
            reason="The environment holds only names, ARNs and the analyzer's settings (bucket, table, queue URL, "
            "module:function); no secret.")])
        NagSuppressions.add_resource_suppressions(service.task_definition, [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="CDK's execution role policy: ecr:GetAuthorizationToken does not support resource-level "
            "permissions, so its resource must be '*'; image pulls are scoped to the image's repository and log "
            "writes to this analyzer's log group.",
            applies_to=["Resource::*"])], apply_to_children=True)
        self.services[spec.name] = service
        self.queues[spec.name] = queue
        self.dead_letters[spec.name] = dead_letters
