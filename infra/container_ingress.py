"""The container ingress: lambdas/framesink_receiver on ECS Fargate behind an Application
Load Balancer, for real-size frames (no 32 KB frame / 128 KB message limit; only
maxFrameBytes). The default deployment sends every bot here.

How bots reach it (``containerFront``):
- ``cloudfront`` (default): ``wss://<id>.cloudfront.net/``, CloudFront's own certificate, no
  domain needed. The ALB is *internal* (private IPs, isolated subnets) and is CloudFront's
  VPC origin: CloudFront reaches it over AWS's network inside the VPC, nothing on the
  internet can. Chosen over an internet-facing ALB locked to CloudFront's prefix list plus
  a secret header: that ALB would still have public addresses, its prefix-list rule needs a
  lookup at synth (credentials) or deploy time, and without a domain the CloudFront-to-ALB
  leg would be plain HTTP over the internet. With certificateArn + domainName (a us-east-1
  certificate) the distribution also answers ``wss://<domainName>/``, and the CloudFront ->
  ALB leg is TLS as well (an HTTPS listener on the internal ALB, originCertificateArn outside
  us-east-1). The ALB admits CloudFront's origin-facing prefix list (see
  ``_admit_cloudfront_origin_facing`` for why that source).
- ``alb``: an internet-facing ALB, ``wss://<domainName>/`` with a certificate in the stack's
  region, or plaintext ``ws://`` only with ``-c allowPlaintext=true``.

Timeouts on the way (a meeting lasts hours): CloudFront closes a websocket after 10 minutes
without a byte from the origin (fixed) and waits ``ORIGIN_READ_TIMEOUT`` for the origin; the
ALB closes after ``ALB_IDLE_TIMEOUT`` idle; none of the three (CloudFront, ALB, receiver)
caps a websocket's duration. The receiver pings every 20 s, inside every one of them.

The image: built at deploy time in CodeBuild from container/Dockerfile (cdklabs
deploy-time-build; the source is an S3 asset, so neither synth nor deploy needs Docker), or
the local Docker/CDK_DOCKER (``containerImage=local``), or an image URI.

Networking, chosen for cost with nothing reachable but CloudFront (or the ALB):
- one VPC, two AZs, no NAT gateway (~$33/month each) and no interface endpoints (Secrets
  Manager, Logs, ECR api + dkr: 4 x 2 AZs x ~$7.30 = ~$58/month); public subnets for the tasks
  and isolated subnets for an internal ALB;
- tasks get a public IP (~$3.60/month each) to reach Secrets Manager, CloudWatch Logs and
  ECR; their security group admits only the ALB's, on the container port, so the address
  accepts nothing from the internet; egress is HTTPS only;
- S3 and DynamoDB are reached through gateway endpoints (free): frame bytes stay off the
  internet path.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Annotations, Duration, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import custom_resources as cr
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.shared.schema import RECEIVERS_PK
from framesink_core.shared.settings import Settings
from framesink_receiver import DEFAULT_MAX_IN_FLIGHT, HEALTH_PATH, MAX_IN_FLIGHT_ENV, PORT_ENV
from framesink_receiver.config import (
    DEFAULT_SHUTDOWN_GRACE,
    DEREGISTRATION_WATCH_ENV,
    SHUTDOWN_GRACE_ENV,
    SPOOL_DIR_ENV,
    SPOOL_MAX_BYTES_ENV,
    TRUST_CLOUDFRONT_ENV,
)

from .functions import LOG_LEVEL, METRICS_NAMESPACE
from .settings import InfraSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = "container/Dockerfile"  # relative to REPO_ROOT, the build context
CONTAINER_PORT = 8080
SPOOL_PATH = "/var/spool/framesink"  # the Dockerfile creates it for the receiver's user
VPC_CIDR = "10.0.0.0/16"
# The AWS-managed prefix list of CloudFront's origin-facing servers: the same name in every
# commercial region, a different id in each (VPC User Guide, "AWS-managed prefix lists").
CLOUDFRONT_ORIGIN_FACING = "com.amazonaws.global.cloudfront.origin-facing"
# 0.5 vCPU / 1 GB: base64 + PNG checks of ~20 frames/s (10 participants) use a fraction of a
# vCPU; memory holds at most (max in flight + connections) messages (see the receiver).
TASK_CPU = 512
TASK_MEMORY_MIB = 1024
CPU_TARGET_PERCENT = 60
# Websocket connections are long-lived: frames every 500 ms and the receiver's pings every
# 20 s keep them busy; 120 s only closes connections that are truly dead.
ALB_IDLE_TIMEOUT = Duration.seconds(120)
# CloudFront -> origin: how long it waits for bytes from the ALB (max 120 s for VPC origins),
# and how long it keeps an idle origin connection. Pings every 20 s stay well inside.
ORIGIN_READ_TIMEOUT = Duration.seconds(60)
ORIGIN_KEEPALIVE = Duration.seconds(60)
# A deregistered task (deploy, scale-in) stops getting health checks; after
# DEREGISTRATION_WATCH seconds the receiver closes its connections with 1001 so Recall moves
# to a healthy task, well before the ALB's deregistration delay ends and it cuts them.
DEREGISTRATION_WATCH_SECONDS = 30
DEREGISTRATION_DELAY = Duration.seconds(60)
# SIGTERM to SIGKILL (Fargate's maximum): the receiver's shutdown grace (90 s: close
# handshakes, storing what it read, queued index items, totals) fits inside it.
STOP_TIMEOUT = Duration.seconds(120)
# The receiver image build: a cold `docker buildx` of the slim image takes 3-6 minutes in
# CodeBuild; a build that has not answered in 20 fails the deploy instead of hanging it.
IMAGE_BUILD_TIMEOUT = Duration.minutes(20)
IMAGES_KEPT = 5

ARCHITECTURES = {
    "arm64": (ecs.CpuArchitecture.ARM64, ecr_assets.Platform.LINUX_ARM64),
    "x86_64": (ecs.CpuArchitecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
}


def task_environment(core: Settings, *, service_name: str, port: int = CONTAINER_PORT,
                     max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, behind_cloudfront: bool = False,
                     spool_max_mb: int = 2048) -> dict[str, str]:
    """The receiver's environment: the Lambda functions' settings (names and ARNs only, never
    a secret) and Powertools service name, so logs, metrics and alarms cover both ingresses,
    plus the receiver's own port, limits and shutdown behaviour. The image test runs the CMD
    with it."""
    env = {
        "POWERTOOLS_SERVICE_NAME": service_name,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "LOG_LEVEL": LOG_LEVEL,
        **core.as_env(),
        PORT_ENV: str(port),
        MAX_IN_FLIGHT_ENV: str(max_in_flight),
        SHUTDOWN_GRACE_ENV: f"{DEFAULT_SHUTDOWN_GRACE:g}",
        DEREGISTRATION_WATCH_ENV: str(DEREGISTRATION_WATCH_SECONDS),
        SPOOL_DIR_ENV: SPOOL_PATH,
        SPOOL_MAX_BYTES_ENV: str(spool_max_mb * 1024 * 1024),
    }
    if behind_cloudfront:
        # Only CloudFront reaches the internal ALB, so its viewer-address header is the bot's.
        env[TRUST_CLOUDFRONT_ENV] = "true"
    return env


class ContainerIngress(Construct):
    """``url`` (the wss:// URL bots get), ``load_balancer``, ``target_group``, ``service``,
    ``distribution`` (None with containerFront=alb), ``task_role``, ``log_group``, ``vpc``.

    Takes what it uses: the settings, the frames bucket and index table it writes, the
    Secrets Manager statements the handshake needs, and the core's settings (environment).
    """

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, bucket: s3.IBucket,
                 table: dynamodb.ITable, secret_statements: Sequence[iam.PolicyStatement], core: Settings,
                 service_name: str, frame_bus: events.IEventBus):
        super().__init__(scope, id)
        cpu_architecture, platform = ARCHITECTURES[settings.architecture_name]
        behind_cloudfront = settings.container_front == "cloudfront"
        # TLS on the ALB whenever a certificate is configured: for containerFront=alb it is the
        # bots' endpoint; behind CloudFront it encrypts the CloudFront -> ALB leg too (an
        # https-only VPC origin, which validates the certificate against the forwarded Host:
        # domainName). That certificate must be in the stack's region: originCertificateArn,
        # or certificateArn itself for a stack in us-east-1.
        alb_certificate = (settings.origin_certificate_arn or settings.certificate_arn) if behind_cloudfront \
            else settings.certificate_arn
        https_alb = bool(alb_certificate)
        listener_port = 443 if https_alb else 80

        # --- network -------------------------------------------------------------------
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=settings.log_retention,
                                  removal_policy=settings.removal_policy)
        subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)]
        if behind_cloudfront:  # the internal ALB: no route to or from the internet
            subnets.append(ec2.SubnetConfiguration(name="origin", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                                                   cidr_mask=24))
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=2,  # the ALB needs two
            nat_gateways=0,
            subnet_configuration=subnets,
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
            description=(f"framesink receiver ALB: {listener_port} from the CloudFront origin-facing prefix list "
                         "(its VPC origin), out to the tasks only") if behind_cloudfront else
            f"framesink receiver ALB: {listener_port} from anywhere (Recall bots), out to the tasks only",
        )
        if behind_cloudfront:
            self._admit_cloudfront_origin_facing(listener_port, settings)
        else:
            self.alb_security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(listener_port),
                                                     "Recall bots connect from the internet")
            NagSuppressions.add_resource_suppressions(self.alb_security_group, [NagPackSuppression(
                id="AwsSolutions-EC23",
                reason="containerFront=alb: the ALB is Recall's public endpoint, and Recall's bots connect from "
                "its cloud, from addresses it does not publish. Every connection must pass the token check (and "
                "the optional Recall signature) at the handshake; the group's egress reaches only the tasks.",
            )])
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

        # --- task ------------------------------------------------------------------------
        self.log_group = logs.LogGroup(self, "Logs", retention=settings.log_retention,
                                       removal_policy=settings.removal_policy)
        self.task_role = iam.Role(
            self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="framesink container receiver: what $connect + $default + $disconnect may do",
        )
        # framesink_core calls: TokenStore.lookup (GetItem), OnceStore.claim and
        # ConnectionRegistry.opened (PutItem), ConnectionRegistry.closed and participant totals
        # (UpdateItem), FrameStore.put_frame (PutObject under recordings/, GetItem to check a
        # duplicate's index item, BatchWriteItem of index items), Service.secret (GetSecretValue).
        # A redelivered frame is compared with the stored one: GetObject (HeadObject is
        # GetObject in IAM) under recordings/. Audio objects (BufferedAudio): PutObject, and GetObject
        # to compare a taken key, under recordings/ too. BatchingOutlet: PutEvents on the frame bus.
        # Receiver leases (ConnectionRegistry.renew_lease / sweep_lost / end_lease): Query and
        # DeleteItem only on the leases' partition, by the dynamodb:LeadingKeys condition key
        # ("access items that have a specific partition key value", DynamoDB developer guide,
        # "Using IAM policy conditions for fine-grained access control"); PutItem and the
        # lost records' UpdateItem are already granted above.
        self.task_policy = iam.Policy(self, "TaskAccess", roles=[self.task_role], statements=[
            iam.PolicyStatement(actions=["s3:PutObject", "s3:GetObject"],
                                resources=[bucket.arn_for_objects("recordings/*")]),
            iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                         "dynamodb:BatchWriteItem"], resources=[table.table_arn]),
            iam.PolicyStatement(actions=["dynamodb:Query", "dynamodb:DeleteItem"], resources=[table.table_arn],
                                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [RECEIVERS_PK]}}),
            iam.PolicyStatement(actions=["events:PutEvents"], resources=[frame_bus.event_bus_arn]),
            *secret_statements,
        ])
        NagSuppressions.add_resource_suppressions(self.task_policy, [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="s3:PutObject/GetObject are limited to the frames bucket's recordings/ prefix; object keys "
            "(recording/participant/type/time) are only known per frame.",
            applies_to=[{"regex": r"/^Resource::<.*Frames.*\.Arn>\/recordings\/\*$/g"}],
        )])

        self.task_definition = ecs.FargateTaskDefinition(
            self, "Task", cpu=TASK_CPU, memory_limit_mib=TASK_MEMORY_MIB, task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=cpu_architecture,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX),
        )
        self.image = self._image(settings, platform)
        self.container = self.task_definition.add_container(
            "Receiver",
            image=self.image,
            environment=task_environment(dataclasses.replace(core, event_bus=frame_bus.event_bus_name),
                                         service_name=service_name, behind_cloudfront=behind_cloudfront,
                                         spool_max_mb=settings.spool_max_mb),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="receiver", log_group=self.log_group),
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            readonly_root_filesystem=True,  # it writes only the spool (its volume); logs and metrics go to stdout
            stop_timeout=STOP_TIMEOUT,
        )
        # The spool: a bind mount of the task's ephemeral storage (Fargate: 20 GiB by default),
        # kept while the task runs, so a restarted container finds what it spooled ("Use bind
        # mounts with Amazon ECS": "tied to the lifecycle of the container that uses them ...
        # removed when the task is stopped"). ECS creates a bind mount owned by root; where the
        # image has the path (Dockerfile: created for uid 10001, declared VOLUME), its contents
        # and ownership are what the container sees ("To expose a path and its contents from a
        # Dockerfile to one or more containers").
        self.task_definition.add_volume(name="spool")
        self.container.add_mount_points(ecs.MountPoint(container_path=SPOOL_PATH, source_volume="spool",
                                                       read_only=False))
        NagSuppressions.add_resource_suppressions(self.task_definition, [NagPackSuppression(
            id="AwsSolutions-ECS2",
            reason="The environment holds only names, ARNs and limits (bucket, table, secret ARNs, "
            "port); secret values are read from Secrets Manager at run time, as in the Lambdas.",
        )])
        NagSuppressions.add_resource_suppressions(self.task_definition.obtain_execution_role(), [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="CDK's execution role policy: ecr:GetAuthorizationToken does not support "
            "resource-level permissions, so its resource must be '*'; image pulls are scoped to "
            "the image's repository and log writes to this service's log group.",
            applies_to=["Resource::*"],
        )], apply_to_children=True)

        # --- service ----------------------------------------------------------------------
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc)
        NagSuppressions.add_resource_suppressions(self.cluster, [NagPackSuppression(
            id="AwsSolutions-ECS4",
            reason="Container Insights bills custom metrics per task; the receiver writes its own "
            "EMF metrics (frames stored/failed/rejected, connections) and ECS' free AWS/ECS CPU and "
            "memory metrics drive autoscaling; the ALB's HealthyHostCount stands in for running tasks. "
            "Enable it on the cluster if you want per-task views.",
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
            self, "Alb", vpc=self.vpc, internet_facing=not behind_cloudfront,
            security_group=self.alb_security_group,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PRIVATE_ISOLATED if behind_cloudfront else ec2.SubnetType.PUBLIC),
            idle_timeout=ALB_IDLE_TIMEOUT, drop_invalid_header_fields=True,
        )
        NagSuppressions.add_resource_suppressions(self.load_balancer, [NagPackSuppression(
            id="AwsSolutions-ELB2",
            reason="The stack is region-agnostic and ALB access logging needs the region's ELB "
            "account in the bucket policy at synth time. A websocket is one ALB request per "
            "connection, and the receiver already logs each one (source IP, auth method or "
            "refusal reason, close code) to its CloudWatch log group.",
        )])
        self.target_group = elbv2.ApplicationTargetGroup(
            self, "Targets", vpc=self.vpc, port=CONTAINER_PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, targets=[self.service],
            deregistration_delay=DEREGISTRATION_DELAY,
            health_check=elbv2.HealthCheck(path=HEALTH_PATH, healthy_http_codes="200", interval=Duration.seconds(10),
                                           timeout=Duration.seconds(5), healthy_threshold_count=2,
                                           unhealthy_threshold_count=3),
        )
        self.distribution: cloudfront.Distribution | None = None
        if https_alb:
            certificate = acm.Certificate.from_certificate_arn(self, "Certificate", alb_certificate)
            self.listener = self.load_balancer.add_listener(
                "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS, certificates=[certificate],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS, default_target_groups=[self.target_group], open=False,
            )
            if behind_cloudfront:
                self.distribution = self._distribution(settings, https_origin=True)
                if not settings.origin_certificate_arn:
                    _require_region(self, "OriginCertificateRegion", "us-east-1",
                                    "containerFront=cloudfront with certificateArn and no "
                                    "originCertificateArn puts the us-east-1 certificate on the ALB too, so the stack "
                                    "must be in us-east-1: set originCertificateArn (a certificate for domainName in "
                                    "this region)")
            self.url = f"wss://{settings.domain_name}/"
        else:
            # Internal (behind CloudFront), or internet-facing only with allowPlaintext=true:
            # settings.py refuses a public plaintext listener without that opt-in.
            self.listener = self.load_balancer.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP,
                default_target_groups=[self.target_group], open=False,
            )
            if behind_cloudfront:
                self.distribution = self._distribution(settings)
                host = settings.domain_name or self.distribution.distribution_domain_name
                self.url = f"wss://{host}/"  # Recall needs the / before ?token=
            else:
                self.url = f"ws://{self.load_balancer.load_balancer_dns_name}/"
                Annotations.of(self).add_warning_v2(
                    "framesink:plaintext",
                    "allowPlaintext=true: the container ingress listens on plain ws:// on the internet; the token "
                    "and every frame cross it unencrypted.")

        # --- scaling ------------------------------------------------------------------------
        # CPU is what a receiver spends per frame (JSON, base64, PNG checks). ALB request count
        # does not fit: a websocket is one request for hours. Scale-in stops a task, whose
        # bots reconnect (~3 s gap) to the others: so it is slow, out is fast.
        scaling = self.service.auto_scale_task_count(min_capacity=settings.container_min_tasks,
                                                     max_capacity=settings.container_max_tasks)
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=CPU_TARGET_PERCENT,
                                         scale_out_cooldown=Duration.minutes(1),
                                         scale_in_cooldown=Duration.minutes(15))

    def _admit_cloudfront_origin_facing(self, port: int, settings: InfraSettings) -> None:
        """The ALB admits CloudFront's origin-facing managed prefix list, the source AWS documents
        for VPC-origin traffic ("Restrict access with VPC origins", CloudFront Developer Guide;
        CDK's aws-cloudfront-origins README, "Restrict traffic coming to the VPC origin"). A rule
        for the VPC's own CIDR does not admit it: teams report 504s at every request while the
        ALB's own health checks stay green.

        The list's id differs per region, so it is resolved at deploy time (a DescribeManagedPrefixLists
        call by the name AWS gives it in every commercial region); synth stays offline. Chosen over
        the ``CloudFront-VPCOrigins-Service-SG`` group, which CloudFront creates only once the VPC
        origin is deployed (a lookup that races its creation), the prefix list exists before the
        stack does. Its cost: a prefix list counts as its maximum entries (55) against the group's
        60-rule quota ("Weight of AWS-managed prefix lists", VPC User Guide); this group has no
        other ingress rule. Only interfaces inside this VPC route to the internal ALB, so the
        list admits this account's VPC origin and nothing from the internet."""
        lookup = cr.AwsCustomResource(
            self, "OriginFacingPrefixList",
            on_update=cr.AwsSdkCall(  # on_create defaults to on_update: resolved on every deploy
                service="EC2", action="describeManagedPrefixLists",
                parameters={"Filters": [{"Name": "prefix-list-name", "Values": [CLOUDFRONT_ORIGIN_FACING]}]},
                physical_resource_id=cr.PhysicalResourceId.of(CLOUDFRONT_ORIGIN_FACING),
                output_paths=["PrefixLists.0.PrefixListId"],
            ),
            # DescribeManagedPrefixLists has no resource-level permissions (Service Authorization
            # Reference, Amazon EC2): its resource must be '*'.
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE),
            install_latest_aws_sdk=False,
            log_group=logs.LogGroup(self, "OriginFacingPrefixListLogs", retention=settings.log_retention,
                                    removal_policy=settings.removal_policy),
        )
        self.origin_prefix_list_id = lookup.get_response_field("PrefixLists.0.PrefixListId")
        self.alb_security_group.add_ingress_rule(
            ec2.Peer.prefix_list(self.origin_prefix_list_id), ec2.Port.tcp(port),
            "CloudFront origin-facing servers (the distribution's VPC origin)")
        NagSuppressions.add_resource_suppressions(lookup, [NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="ec2:DescribeManagedPrefixLists (read-only, resolving CloudFront's origin-facing prefix list by "
            "name at deploy time) supports no resource-level permissions, so its resource is '*'.",
            applies_to=["Resource::*"])], apply_to_children=True)
        _suppress_sdk_call_singleton(Stack.of(self))

    def _image(self, settings: InfraSettings, platform: ecr_assets.Platform) -> ecs.ContainerImage:
        image, self.image_repository, self.image_build = container_image(
            self, settings, platform, directory=REPO_ROOT, file=DOCKERFILE, what="receiver")
        return image

    def _rate_limit(self, settings: InfraSettings) -> str:
        """A web ACL with one rate-based rule: more than ``rateLimitPerIp`` requests (here:
        handshakes) from one IP in 5 minutes are blocked for a while. CloudFront web ACLs
        must be created in us-east-1 (AWS WAF Developer Guide); synth refuses another known
        region (infra/settings.py check_region)."""
        from aws_cdk import aws_wafv2 as waf

        visibility = lambda name: waf.CfnWebACL.VisibilityConfigProperty(  # noqa: E731
            cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=False)
        acl = waf.CfnWebACL(
            self, "RateLimit", scope="CLOUDFRONT", default_action=waf.CfnWebACL.DefaultActionProperty(allow={}),
            description=f"framesink {settings.stage}: at most {settings.rate_limit_per_ip} handshakes per IP per 5 min",
            visibility_config=visibility(f"framesink-{settings.stage}-edge"),
            rules=[waf.CfnWebACL.RuleProperty(
                name="HandshakesPerIp", priority=0, action=waf.CfnWebACL.RuleActionProperty(block={}),
                statement=waf.CfnWebACL.StatementProperty(rate_based_statement=waf.CfnWebACL.RateBasedStatementProperty(
                    limit=settings.rate_limit_per_ip, aggregate_key_type="IP", evaluation_window_sec=300)),
                visibility_config=visibility(f"framesink-{settings.stage}-handshakes-per-ip"))],
        )
        _require_region(self, "RateLimitRegion", "us-east-1", "rateLimitPerIp: AWS WAF creates CloudFront web ACLs "
                        "only in us-east-1; deploy the stack there or set rateLimitPerIp=0")
        return acl.attr_arn

    def _distribution(self, settings: InfraSettings, https_origin: bool = False) -> cloudfront.Distribution:
        # Without a certificate the leg stays inside the VPC in plain HTTP (the VPC origin's
        # interfaces to the internal ALB); with one it is TLS 1.2 to the ALB's HTTPS listener.
        origin = origins.VpcOrigin.with_application_load_balancer(
            self.load_balancer, http_port=80, https_port=443,
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY if https_origin
            else cloudfront.OriginProtocolPolicy.HTTP_ONLY,
            origin_ssl_protocols=[cloudfront.OriginSslPolicy.TLS_V1_2] if https_origin else None,
            read_timeout=ORIGIN_READ_TIMEOUT, keepalive_timeout=ORIGIN_KEEPALIVE,
        )
        certificate = (acm.Certificate.from_certificate_arn(self, "CloudFrontCertificate", settings.certificate_arn)
                       if settings.certificate_arn else None)
        distribution = cloudfront.Distribution(
            self, "Distribution",
            comment=f"framesink {settings.stage}: wss:// for Recall bots, to the receiver (internal ALB)",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,  # a websocket upgrade is a GET
                cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                compress=False,  # frames are PNG (already compressed), and nothing is cached
                # Everything the receiver reads: ?token=, Recall's webhook-* (or svix-*) signed
                # headers, the websocket handshake headers, and CloudFront-Viewer-Address (the
                # bot's own address, for the connection log).
                origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_AND_CLOUDFRONT_2022,
            ),
            http_version=cloudfront.HttpVersion.HTTP1_1,  # websockets upgrade HTTP/1.1 connections
            price_class=cloudfront.PriceClass.PRICE_CLASS_ALL,  # Recall's bots run near their meetings
            enable_logging=False,  # see the CFR3 suppression: standard logs record the token
            domain_names=[settings.domain_name] if certificate else None,
            web_acl_id=self._rate_limit(settings) if settings.rate_limit_per_ip else None,
            certificate=certificate,
            minimum_protocol_version=cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate else None,
        )
        suppressions = [
            NagPackSuppression(
                id="AwsSolutions-CFR3",
                reason="No access logs: CloudFront's standard logs record each request's query string, and "
                "the websocket URL's ?token= is the bot's credential. The receiver logs every connection "
                "instead (the bot's address from CloudFront-Viewer-Address, auth method or refusal reason, "
                "close code), never the query string."),
            NagPackSuppression(
                id="AwsSolutions-CFR1",
                reason="No geo restriction: Recall runs its bots in the cloud regions near each meeting; "
                "every connection must present a valid token at the handshake."),
        ]
        if not settings.rate_limit_per_ip:
            suppressions.append(NagPackSuppression(
                id="AwsSolutions-CFR2",
                reason="No WAF unless rateLimitPerIp is set: the only route is a websocket upgrade that the receiver "
                "authenticates with a 256-bit token (and optionally Recall's signature) before reading a frame; a "
                "web ACL adds ~$6/month plus per-request fees and inspects nothing inside websocket frames."))
        if not certificate:
            suppressions.append(NagPackSuppression(
                id="AwsSolutions-CFR4",
                reason="The distribution's own *.cloudfront.net certificate (no domain needed) cannot have its "
                "minimum viewer TLS version raised. With certificateArn + domainName it is TLS 1.2 (2021 "
                "policy). Recall's bots negotiate TLS 1.2 or 1.3."))
        NagSuppressions.add_resource_suppressions(distribution, suppressions)
        return distribution


def _require_region(scope: Construct, id: str, region: str, why: str) -> None:
    """A template rule: CloudFormation checks it before creating anything and fails the deploy
    with ``why`` (synth refuses the same earlier when it knows the region: check_region)."""
    from aws_cdk import CfnRule, CfnRuleAssertion, Fn

    CfnRule(scope, id, assertions=[CfnRuleAssertion(assert_=Fn.condition_equals(Stack.of(scope).region, region),
                                         assert_description=why)])


def _suppress_sdk_call_singleton(stack: Stack) -> None:
    """CDK's AwsCustomResource runs every SDK call of a stack through one Lambda (a singleton
    at the stack's root, named AWS679f53fac002430cb0da5b7982bd2287)."""
    for child in stack.node.children:
        if child.node.id.startswith("AWS679f53fac002430cb0da5b7982bd2287"):
            NagSuppressions.add_resource_suppressions(child, [
                NagPackSuppression(id="AwsSolutions-IAM4", reason="CDK's AwsCustomResource Lambda uses the "
                                   "AWSLambdaBasicExecutionRole managed policy for its own logs."),
                NagPackSuppression(id="AwsSolutions-L1", reason="CDK's AwsCustomResource pins its Node.js runtime "
                                   "to the one its bundled SDK is built and tested with."),
            ], apply_to_children=True)


def container_image(scope: Construct, settings: InfraSettings, platform: ecr_assets.Platform, *, directory: Path,
                    file: str, what: str):
    """The image of a service (the receiver, a container analyzer), as ``containerImage`` says:
    built in CodeBuild at deploy time (the default), by the local Docker ("local"), or an image
    URI. Returns (image, its ECR repository or None, the CodeBuild build or None)."""
    if settings.container_image == "local":
        # cdk deploy runs `docker build` (or $CDK_DOCKER: podman, finch); synth only stages.
        return ecs.ContainerImage.from_asset(str(directory), file=file, platform=platform), None, None
    if settings.container_image and what == "receiver":
        uri = settings.container_image
        registry, _, rest = uri.partition("/")
        ecr_host = re.fullmatch(r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com", registry)
        if not ecr_host:
            return ecs.ContainerImage.from_registry(uri), None, None  # a public registry: no credentials
        # A private ECR image: the execution role may pull from that repository only.
        name, tag = rest.split("@", 1) if "@" in rest else rest.rsplit(":", 1)
        repository = ecr.Repository.from_repository_attributes(
            scope, "ImageRepository", repository_name=name,
            repository_arn=Stack.of(scope).format_arn(service="ecr", resource="repository", resource_name=name,
                                                      region=ecr_host["region"], account=ecr_host["account"]))
        return ecs.ContainerImage.from_ecr_repository(repository, tag), None, None  # a tag, or sha256:<digest>
    from cdklabs.deploy_time_build import ContainerImageBuild

    # Every deploy pushes a new image: keep the last few (a rollback needs the previous one),
    # not every image forever. Emptied and deleted with the stack: it holds only builds.
    repository = ecr.Repository(
        scope, "ImageRepository", image_scan_on_push=True, empty_on_delete=True,
        removal_policy=RemovalPolicy.DESTROY,
        lifecycle_rules=[ecr.LifecycleRule(max_image_count=IMAGES_KEPT,
                                           description=f"keep the {IMAGES_KEPT} newest {what} images")],
    )
    build = ContainerImageBuild(
        scope, "Image", directory=str(directory), file=file, platform=platform, repository=repository,
        # The source is zipped as an S3 asset under the same allow-list the Dockerfile
        # assumes (the construct reads .dockerignore; Docker's matching rules apply).
        ignore_mode=_docker_ignore_mode(),
    )
    # The build answers CloudFormation from its buildspec's last step. If CodeBuild fails
    # before that (a concurrent-build quota of 0 on a new account, an image pull refused),
    # nothing answers: without a service timeout CloudFormation waits an hour
    # (AWS::CloudFormation::CustomResource ServiceTimeout, in seconds, at most 3600).
    build.node.find_child("Resource").node.default_child.add_property_override(
        "ServiceTimeout", str(int(IMAGE_BUILD_TIMEOUT.to_seconds())))
    _tidy_image_build(Stack.of(scope), settings)
    return build.to_ecs_docker_image_code(), repository, build


def _docker_ignore_mode():
    from aws_cdk import IgnoreMode

    return IgnoreMode.DOCKER


# deploy-time-build makes its CodeBuild project and its starter Lambda as stack-level
# singletons (one per stack, whatever the number of builds), named with these prefixes.
IMAGE_BUILD_SINGLETONS = ("ContainerImageBuild", "DeployTimeBuildCustomResourceHandler")


def _tidy_image_build(stack: Stack, settings: InfraSettings) -> None:
    """deploy-time-build's parts (a CodeBuild project that runs `docker build` once per deploy,
    and the Lambda that starts it) follow the stack's settings: their log group gets the
    stack's retention and removal policy, and each cdk-nag finding is suppressed with a reason."""
    for child in list(stack.node.children):
        if child.node.id.startswith(IMAGE_BUILD_SINGLETONS):
            _suppress_image_build_parts(child)
            for node in child.node.find_all():
                if isinstance(node, logs.CfnLogGroup):
                    node.retention_in_days = settings.log_retention_days
                    node.apply_removal_policy(settings.removal_policy)
                if isinstance(node, codebuild.Project) and stack.node.try_find_child("ImageBuildLogs") is None:
                    # CodeBuild otherwise creates /aws/codebuild/<project> itself, kept forever.
                    group = logs.LogGroup(stack, "ImageBuildLogs", retention=settings.log_retention,
                                          removal_policy=settings.removal_policy)
                    node.node.default_child.logs_config = codebuild.CfnProject.LogsConfigProperty(
                        cloud_watch_logs=codebuild.CfnProject.CloudWatchLogsConfigProperty(
                            status="ENABLED", group_name=group.log_group_name))
                    group.grant_write(node.role)


def _suppress_image_build_parts(build: Construct) -> None:
    NagSuppressions.add_resource_suppressions(build, [
        NagPackSuppression(
            id="AwsSolutions-IAM4",
            reason="deploy-time-build: AmazonElasticContainerRegistryPublicReadOnly lets the build pull the base "
            "image from ECR Public (the documented policy); the starter Lambda's basic execution role is CDK's.",
        ),
        NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="deploy-time-build: CodeBuild's own log groups and report groups are named at run time, "
            "ecr:GetAuthorizationToken has no resource-level permissions, and the source is read from the CDK "
            "assets bucket (s3:GetObject*/List*/GetBucket* are CDK's asset grant); pushes go to one repository.",
        ),
        NagPackSuppression(
            id="AwsSolutions-CB4",
            reason="deploy-time-build's CodeBuild project builds a public Dockerfile from the stack's own source "
            "asset; its artifacts are the image in ECR (encrypted at rest), so no KMS key is configured.",
        ),
        NagPackSuppression(
            id="AwsSolutions-L1",
            reason="deploy-time-build pins its custom-resource Lambda's Node.js runtime (nodejs22.x).",
        ),
    ], apply_to_children=True)
