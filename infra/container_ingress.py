"""The container ingress: framesink/receiver.py on ECS Fargate behind an Application Load
Balancer, for real-size frames (no 32 KB frame / 128 KB message limit; only maxFrameBytes).

Recall connects to ``ws://<alb>/?token=...`` (or ``wss://<domainName>/?token=...`` with a
certificate). The receiver runs the same core as the Lambda functions, with the same settings
environment and the same IAM actions as the $connect + $default + $disconnect functions.

Networking, chosen for cost with nothing reachable but the ALB:
- one VPC, two AZs, public subnets only, no NAT gateway (~$33/month each) and no interface
  endpoints (Secrets Manager, Logs, ECR api + dkr: 4 x 2 AZs x ~$7.30 = ~$58/month);
- tasks get a public IP (~$3.60/month each) to reach Secrets Manager, CloudWatch Logs and
  ECR; their security group admits only the ALB's, on the container port, so the address
  accepts nothing from the internet; egress is HTTPS only;
- S3 and DynamoDB are reached through gateway endpoints (free): frame bytes stay off the
  internet path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink.receiver import DEFAULT_MAX_IN_FLIGHT, HEALTH_PATH, MAX_IN_FLIGHT_ENV, PORT_ENV
from framesink_core.settings import Settings

from .functions import LOG_LEVEL, METRICS_NAMESPACE

if TYPE_CHECKING:
    from .stack import FramesinkStack

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = "container/Dockerfile"  # relative to REPO_ROOT, the build context
CONTAINER_PORT = 8080
# 0.5 vCPU / 1 GB: base64 + PNG checks of ~20 frames/s (10 participants) use a fraction of a
# vCPU; memory holds at most (max in flight + connections) messages (see receiver.py).
TASK_CPU = 512
TASK_MEMORY_MIB = 1024
CPU_TARGET_PERCENT = 60
# Websocket connections are long-lived: frames every 500 ms and the receiver's pings every
# 20 s keep them busy; 120 s only closes connections that are truly dead.
ALB_IDLE_TIMEOUT = Duration.seconds(120)
# ECS deregisters a task from the target group and waits this long before SIGTERM. Open
# websockets never drain by themselves, so a long delay only postpones the 1001 close that
# moves Recall to another task; 30 s lets in-flight handshakes and stores finish.
DEREGISTRATION_DELAY = Duration.seconds(30)
# SIGTERM to SIGKILL: the receiver closes connections (close handshake <= 10 s) and finishes
# the frames it read (each store is bounded by botocore's retries) well inside this.
STOP_TIMEOUT = Duration.seconds(60)

ARCHITECTURES = {
    "arm64": (ecs.CpuArchitecture.ARM64, ecr_assets.Platform.LINUX_ARM64),
    "x86_64": (ecs.CpuArchitecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
}


def task_environment(core: Settings, *, service_name: str, port: int = CONTAINER_PORT,
                     max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> dict[str, str]:
    """The receiver's environment: the Lambda functions' settings (names and ARNs only, never
    a secret) and Powertools service name, so logs, metrics and alarms cover both ingresses,
    plus the receiver's own port and in-flight limit. The image test runs the CMD with it."""
    return {
        "POWERTOOLS_SERVICE_NAME": service_name,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "LOG_LEVEL": LOG_LEVEL,
        **core.as_env(),
        PORT_ENV: str(port),
        MAX_IN_FLIGHT_ENV: str(max_in_flight),
    }


class ContainerIngress(Construct):
    """``url`` (ws(s)://.../), ``load_balancer``, ``service``, ``task_role``, ``vpc``."""

    def __init__(self, scope: Construct, id: str, *, stack: "FramesinkStack"):
        super().__init__(scope, id)
        settings, storage, secrets = stack.settings, stack.storage, stack.secrets
        cpu_architecture, platform = ARCHITECTURES[settings.architecture_name]
        https = bool(settings.certificate_arn)
        listener_port = 443 if https else 80

        # --- network -------------------------------------------------------------------
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=settings.log_retention,
                                  removal_policy=settings.removal_policy)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,  # the ALB needs two
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                                          cidr_mask=24)],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            # Rejected packets only: what a security review needs, at a fraction of ALL's volume.
            flow_logs={"Rejected": ec2.FlowLogOptions(
                traffic_type=ec2.FlowLogTrafficType.REJECT,
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            )},
        )
        self.alb_security_group = ec2.SecurityGroup(
            self, "AlbSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description=f"framesink receiver ALB: {listener_port} from anywhere (Recall bots), out to the tasks only",
        )
        self.alb_security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(listener_port),
                                                 "Recall bots connect from the internet")
        self.task_security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="framesink receiver tasks: the container port from the ALB only; HTTPS out",
        )
        self.task_security_group.add_ingress_rule(self.alb_security_group, ec2.Port.tcp(CONTAINER_PORT),
                                                  "websocket traffic and health checks from the ALB")
        self.alb_security_group.add_egress_rule(self.task_security_group, ec2.Port.tcp(CONTAINER_PORT),
                                                "to the receiver tasks")
        # S3/DynamoDB (gateway endpoints), Secrets Manager, CloudWatch Logs, ECR: all HTTPS.
        self.task_security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs over HTTPS")
        NagSuppressions.add_resource_suppressions(self.alb_security_group, [NagPackSuppression(
            id="AwsSolutions-EC23",
            reason="The ALB is Recall's public endpoint: Recall's bots connect from its cloud, from "
            "addresses it does not publish. Every connection must pass the token check (and the "
            "optional Recall signature) at the handshake; the group's egress reaches only the tasks.",
        )])

        # --- task ------------------------------------------------------------------------
        self.log_group = logs.LogGroup(self, "Logs", retention=settings.log_retention,
                                       removal_policy=settings.removal_policy)
        self.task_role = iam.Role(
            self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="framesink container receiver: what $connect + $default + $disconnect may do",
        )
        table_arn = storage.table.table_arn
        # framesink_core calls: TokenStore.lookup (GetItem), ConnectionRegistry.opened/closed
        # (PutItem/UpdateItem), FrameStore.put_frame (PutObject under recordings/, conditional
        # PutItem, UpdateItem), Service.secret (GetSecretValue on the configured secrets).
        self.task_policy = iam.Policy(self, "TaskAccess", roles=[self.task_role], statements=[
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[storage.bucket.arn_for_objects("recordings/*")]),
            iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                                resources=[table_arn]),
            *secrets.read_statements(),
        ])
        NagSuppressions.add_resource_suppressions(self.task_policy, [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="s3:PutObject is limited to the frames bucket's recordings/ prefix; object keys "
            "(recording/participant/type/time) are only known per frame.",
            applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/recordings\/\*$/g"}],
        )])

        self.task_definition = ecs.FargateTaskDefinition(
            self, "Task", cpu=TASK_CPU, memory_limit_mib=TASK_MEMORY_MIB, task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=cpu_architecture,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX),
        )
        core = stack.functions.core  # the same settings as the Lambda functions
        # `cdk synth` stages and hashes the build context (.dockerignore applies); only
        # `cdk deploy` runs Docker to build the image and push it to the CDK assets repository.
        image = ecs.ContainerImage.from_asset(str(REPO_ROOT), file=DOCKERFILE, platform=platform)
        self.container = self.task_definition.add_container(
            "Receiver",
            image=image,
            environment=task_environment(core, service_name=stack.functions.service_name),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="receiver", log_group=self.log_group),
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            readonly_root_filesystem=True,  # it writes nothing: logs and metrics go to stdout
            stop_timeout=STOP_TIMEOUT,
        )
        NagSuppressions.add_resource_suppressions(self.task_definition, [NagPackSuppression(
            id="AwsSolutions-ECS2",
            reason="The environment holds only names, ARNs and limits (bucket, table, secret ARNs, "
            "port); secret values are read from Secrets Manager at run time, as in the Lambdas.",
        )])
        NagSuppressions.add_resource_suppressions(self.task_definition.obtain_execution_role(), [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="CDK's execution role policy: ecr:GetAuthorizationToken does not support "
            "resource-level permissions, so its resource must be '*'; image pulls are scoped to "
            "the CDK assets repository and log writes to this service's log group.",
            applies_to=["Resource::*"],
        )], apply_to_children=True)

        # --- service ----------------------------------------------------------------------
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc)
        NagSuppressions.add_resource_suppressions(self.cluster, [NagPackSuppression(
            id="AwsSolutions-ECS4",
            reason="Container Insights bills custom metrics per task; the receiver writes its own "
            "EMF metrics (frames stored/failed/rejected, connections) and ECS' free AWS/ECS CPU and "
            "memory metrics drive autoscaling. Enable it on the cluster if you want per-task views.",
        )])
        self.service = ecs.FargateService(
            self, "Service", cluster=self.cluster, task_definition=self.task_definition,
            desired_count=settings.container_min_tasks, assign_public_ip=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[self.task_security_group],
            # Start the new task before stopping the old one: a deploy moves connections, never
            # leaves the target group empty.
            min_healthy_percent=100, max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=Duration.seconds(30),
        )
        self.service.node.add_dependency(self.task_policy)  # no task runs before its grants

        # --- load balancer --------------------------------------------------------------------
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self, "Alb", vpc=self.vpc, internet_facing=True, security_group=self.alb_security_group,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            idle_timeout=ALB_IDLE_TIMEOUT, drop_invalid_header_fields=True,
        )
        NagSuppressions.add_resource_suppressions(self.load_balancer, [NagPackSuppression(
            id="AwsSolutions-ELB2",
            reason="The stack is region-agnostic and ALB access logging needs the region's ELB "
            "account in the bucket policy at synth time. A websocket is one ALB request per "
            "connection, and the receiver already logs each one (source IP from X-Forwarded-For, "
            "auth method or refusal reason, close code) to its CloudWatch log group.",
        )])
        self.target_group = elbv2.ApplicationTargetGroup(
            self, "Targets", vpc=self.vpc, port=CONTAINER_PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, targets=[self.service],
            deregistration_delay=DEREGISTRATION_DELAY,
            health_check=elbv2.HealthCheck(path=HEALTH_PATH, healthy_http_codes="200", interval=Duration.seconds(10),
                                           timeout=Duration.seconds(5), healthy_threshold_count=2,
                                           unhealthy_threshold_count=3),
        )
        if https:
            certificate = acm.Certificate.from_certificate_arn(self, "Certificate", settings.certificate_arn)
            self.listener = self.load_balancer.add_listener(
                "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS, certificates=[certificate],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS, default_target_groups=[self.target_group], open=False,
            )
            self.url = f"wss://{settings.domain_name}/"
        else:
            self.listener = self.load_balancer.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP,
                default_target_groups=[self.target_group], open=False,
            )
            self.url = f"ws://{self.load_balancer.load_balancer_dns_name}/"

        # --- scaling and alarms ----------------------------------------------------------------
        # CPU is what a receiver spends per frame (JSON, base64, PNG checks). ALB request count
        # does not fit: a websocket is one request for hours. Scale-in stops a task, whose
        # bots reconnect (~3 s gap) to the others: so it is slow, out is fast.
        scaling = self.service.auto_scale_task_count(min_capacity=settings.container_min_tasks,
                                                     max_capacity=settings.container_max_tasks)
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=CPU_TARGET_PERCENT,
                                         scale_out_cooldown=Duration.minutes(1),
                                         scale_in_cooldown=Duration.minutes(15))
        self.no_healthy_receiver = self.target_group.metrics.healthy_host_count(
            period=Duration.minutes(1), statistic="Minimum",
        ).create_alarm(
            self, "NoHealthyReceiver",
            alarm_description="No receiver task passes the /healthz check: Recall cannot connect.",
            threshold=1, evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )

