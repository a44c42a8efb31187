"""Deployment settings, read from the CDK context (cdk.json, or `cdk synth -c key=value`).

Every key has a default here, and cdk.json lists the same defaults so they are visible in
one place (a test keeps the two equal). Values given with `-c` arrive as strings, so each
reader accepts both the JSON type and its text form. A bad value fails synth with a message
that names the key, what it accepts and what it got.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from framesink_core.meeting.recall import ENDPOINT_FORMS, REGIONS
from framesink_core.shared.settings import (
    DEFAULT_BOT_TOKEN_TTL_SECONDS,
    DEFAULT_FRAME_EXPIRY_DAYS,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_FRAME_PIXELS,
)

DEFAULTS: dict[str, Any] = {
    # API Gateway stage name; also names the stack ("framesink-<stage>").
    "stage": "live",
    # CloudWatch Logs retention of every log group (Lambda, API Gateway access logs), and
    # S3 expiry of the bucket access logs. One of CloudWatch's allowed values.
    "logRetentionDays": 30,
    # Expiry of stored frames, in days: S3 lifecycle for the objects and DynamoDB TTL for
    # their index items (FRAMESINK_FRAME_EXPIRY_DAYS); 0 keeps frames forever.
    "frameExpiryDays": DEFAULT_FRAME_EXPIRY_DAYS,
    # Largest decoded PNG a message may carry (framesink_core.shared.settings.DEFAULT_MAX_FRAME_BYTES).
    "maxFrameBytes": DEFAULT_MAX_FRAME_BYTES,
    # Largest image (width x height) accepted; refuses decompression bombs by their header.
    "maxFramePixels": DEFAULT_MAX_FRAME_PIXELS,
    # What `cdk destroy` does to the bucket, table, secret and log groups.
    "removalPolicy": "retain",
    # Lambda CPU architecture: arm64 (Graviton, ~20% cheaper per GB-s) or x86_64.
    "architecture": "arm64",
    # Name of an existing Secrets Manager secret holding Recall's whsec_ verification secret;
    # empty = signed headers are not checked.
    "verificationSecretName": "",
    # true: the stack generates a shared connection token in Secrets Manager.
    "staticToken": True,
    # true: the stack sets the account's API Gateway CloudWatch role (one per account and
    # region, needed for WebSocket access logs). Off by default: it is an account-wide setting
    # that the last stack to set it owns; docs/deploy.md "Before your first deploy" shows the check
    # (`aws apigateway get-account`) and when to turn it on (once per account and region).
    "apiGatewayCloudWatchRole": False,
    # Which websocket ingress to deploy (docs/ingest.md, "choosing an ingress"): "both" (the default: the
    # container stores real frames, API Gateway stays for tiny ones), "container" (ECS Fargate
    # behind an ALB; no size limit but maxFrameBytes) or "apigw" (API Gateway + Lambda: 32 KB
    # frames, so no camera frame fits). With a container, create-bot hands out its URL.
    "ingress": "both",
    # What bots reach the container through: "cloudfront" (wss://<id>.cloudfront.net/, no
    # domain needed; the ALB is internal, a CloudFront VPC origin) or "alb" (an internet-facing
    # ALB: wss:// with certificateArn + domainName, plaintext ws:// only with allowPlaintext).
    "containerFront": "cloudfront",
    # A custom name for the container's wss:// URL: an ACM certificate ARN and the DNS name it
    # covers, pointed (CNAME/alias) at the distribution (cloudfront: the certificate must be in
    # us-east-1) or at the ALB (alb: in the stack's region). Set both or neither.
    "certificateArn": "",
    "domainName": "",
    # containerFront=cloudfront with certificateArn: a certificate for domainName in the stack's
    # region, for the internal ALB's HTTPS listener (the CloudFront -> ALB leg in TLS). Empty:
    # certificateArn is used, which only works for a stack in us-east-1.
    "originCertificateArn": "",
    # true: accept an internet-facing plaintext ws:// listener (containerFront=alb without a
    # certificate). The token and every frame then cross the internet unencrypted.
    "allowPlaintext": False,
    # The receiver image: "" builds container/Dockerfile in CodeBuild at deploy time (no Docker
    # on your machine); "local" builds it with the local Docker (or CDK_DOCKER=podman|finch);
    # anything else is an image URI built elsewhere (e.g. <account>.dkr.ecr.<region>.amazonaws.com/framesink:1).
    "containerImage": "",
    # An email address subscribed to the alarm topic (output AlarmTopicArn); it must confirm.
    "alarmEmail": "",
    # true: an SQS queue of every stored frame's event (output FrameQueueUrl), with a DLQ.
    "frameQueue": False,
    # true: score every stored frame's novelty (a function on the frame events: flag on the
    # index item, a "Frame Scored" event for consumers of novel frames; docs/live-feed.md).
    "novelty": True,
    # "slides": deploy the example analyzer (slide changes in screenshare frames); "" none.
    "analyzer": "",
    # Your kit analyzers (docs/analyzers.md), each deployed from its own directory without
    # editing infra/: a list of {"name", "path", "handler": "module:function", "runtime":
    # "lambda" | "container", optional "novelOnly", "type", "memoryMb", "timeoutSeconds" (lambda),
    # "cpu", "workers", "latestOnly", "minTasks", "maxTasks" (container)}. See ANALYZER_KEYS.
    "analyzers": [],
    # Recall's bot status webhooks: the name of an existing secret holding the whsec_ signing
    # secret; empty = the stack creates one with a placeholder (output RecallWebhookSecretArn).
    "recallWebhookSecretName": "",
    # true: export an MP4 and a contact sheet per participant and type when a meeting ends.
    "exports": True,
    # The export function's memory (MB; CPU grows with it, x264 uses it). 3008 is the most a
    # new account's Lambda quota allows; with it one invocation (15 min) encodes about three
    # hours of 1280x720 screenshare or 20+ hours of 480x360 webcam (docs/meetings.md).
    "exportMemoryMb": 3008,
    # The container receiver's spool (MB of the task's 20 GiB disk): frames whose S3 or index
    # write fails after retries wait there and are stored when AWS answers; 0 = no spool.
    # 2048 MB holds ~17 minutes of 30 webcams at 2 fps (~60 KB each).
    "spoolMaxMb": 2048,
    # true: reserved concurrency for the webhook (5) and export (10) functions, so a flood of
    # handshakes or frames cannot starve them. Needs an account concurrency limit above 100 +
    # 15 (new accounts may have 10: request the increase, or set false).
    "reservedConcurrency": True,
    # A WAF rate-based rule on the CloudFront distribution: requests per IP per 5 minutes
    # (>= 10; 0 = no web ACL). CloudFront web ACLs live in us-east-1: the stack must be there.
    "rateLimitPerIp": 0,
    # true: a function every 5 minutes opens a websocket through the public URL (401 without a
    # token, 101 with a short-lived one) and alarms after 3 failures in a row.
    "canary": True,
    # After bot.call_ended (no bot.done yet), minutes without a new frame before exporting.
    "exportQuietMinutes": 10,
    # Container ingress task count: CPU autoscaling between these (1 <= min <= max <= 100).
    # One 0.5-vCPU task holds ~30 webcams at the 60 % CPU target (receiver CPU per frame in
    # docs/performance.md), so max = concurrent participants / 30, rounded up, with headroom.
    "containerMinTasks": 1,
    "containerMaxTasks": 4,
    # create-bot (infra/bot_api.py). The Recall region whose API (and API key) the bots use.
    "recallRegion": "us-east-1",
    # Name of an existing Secrets Manager secret holding the Recall API key; empty = the stack
    # creates one holding a placeholder, and you put the key in after deploy.
    "recallApiKeySecretName": "",
    # "flat" (Recall's current realtime endpoint shape) or "nested" ({"type", "config": {...}}).
    "recallEndpointForm": "flat",
    # How long a bot's connection token stays valid after the bot's join time.
    "botTokenTtlSeconds": DEFAULT_BOT_TOKEN_TTL_SECONDS,
}

# CloudWatch Logs accepts only these retention periods (days -> CDK enum).
RETENTION_DAYS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}

ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
INGRESSES = {"apigw": ("apigw",), "container": ("container",), "both": ("apigw", "container")}
CERTIFICATE_ARN_PATTERN = re.compile(r"arn:aws[a-z-]*:acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[A-Za-z0-9-]+")
CONTAINER_FRONTS = {"cloudfront": "cloudfront", "alb": "alb"}
IMAGE_URI_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]*(:\d+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DOMAIN_PATTERN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
REMOVAL_POLICIES = {"retain": RemovalPolicy.RETAIN, "destroy": RemovalPolicy.DESTROY}
ANALYZERS = {"": "", "slides": "slides"}

SPOOL_MAX_MB_RANGE = (0, 16384)  # the task's 20 GiB ephemeral storage also holds the image
EXPORT_MEMORY_RANGE = (1024, 10240)  # below 1 GB x264 is too slow to matter; 10240 is Lambda's maximum
MIN_RATE_LIMIT = 10  # WAF's smallest rate-based limit (per 5 minutes)
MAX_CONTAINER_TASKS = 100  # a typo guard, far above any meeting load; raise it if you need to
STAGE_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,23}")  # valid as an API stage and in a stack name
SECRET_NAME_PATTERN = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


class SettingsError(ValueError):
    """A context value that cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class InfraSettings:
    stage: str = DEFAULTS["stage"]
    log_retention_days: int = DEFAULTS["logRetentionDays"]
    frame_expiry_days: int = DEFAULTS["frameExpiryDays"]
    max_frame_bytes: int = DEFAULTS["maxFrameBytes"]
    max_frame_pixels: int = DEFAULTS["maxFramePixels"]
    removal_policy_name: str = DEFAULTS["removalPolicy"]
    architecture_name: str = DEFAULTS["architecture"]
    verification_secret_name: str = DEFAULTS["verificationSecretName"]
    static_token: bool = DEFAULTS["staticToken"]
    api_gateway_cloudwatch_role: bool = DEFAULTS["apiGatewayCloudWatchRole"]
    ingress: str = DEFAULTS["ingress"]
    container_front: str = DEFAULTS["containerFront"]
    certificate_arn: str = DEFAULTS["certificateArn"]
    domain_name: str = DEFAULTS["domainName"]
    origin_certificate_arn: str = DEFAULTS["originCertificateArn"]
    allow_plaintext: bool = DEFAULTS["allowPlaintext"]
    container_image: str = DEFAULTS["containerImage"]
    alarm_email: str = DEFAULTS["alarmEmail"]
    frame_queue: bool = DEFAULTS["frameQueue"]
    novelty: bool = DEFAULTS["novelty"]
    analyzer: str = DEFAULTS["analyzer"]
    analyzers: tuple["AnalyzerSpec", ...] = ()
    recall_webhook_secret_name: str = DEFAULTS["recallWebhookSecretName"]
    exports: bool = DEFAULTS["exports"]
    export_quiet_minutes: int = DEFAULTS["exportQuietMinutes"]
    export_memory_mb: int = DEFAULTS["exportMemoryMb"]
    spool_max_mb: int = DEFAULTS["spoolMaxMb"]
    reserved_concurrency: bool = DEFAULTS["reservedConcurrency"]
    rate_limit_per_ip: int = DEFAULTS["rateLimitPerIp"]
    canary: bool = DEFAULTS["canary"]
    container_min_tasks: int = DEFAULTS["containerMinTasks"]
    container_max_tasks: int = DEFAULTS["containerMaxTasks"]
    recall_region: str = DEFAULTS["recallRegion"]
    recall_api_key_secret_name: str = DEFAULTS["recallApiKeySecretName"]
    recall_endpoint_form: str = DEFAULTS["recallEndpointForm"]
    bot_token_ttl_seconds: int = DEFAULTS["botTokenTtlSeconds"]

    @classmethod
    def from_context(cls, get: Callable[[str], Any] | Mapping[str, Any]) -> "InfraSettings":
        """Read and validate every key; ``get`` is ``node.try_get_context`` or a dict."""
        lookup = get.get if isinstance(get, Mapping) else get

        def value(key: str) -> Any:
            found = lookup(key)
            return DEFAULTS[key] if found is None else found

        stage = _text(value("stage"), "stage")
        if not STAGE_PATTERN.fullmatch(stage):
            raise SettingsError(
                f"context 'stage' must match {STAGE_PATTERN.pattern} (lower case, used in the "
                f"stack name and the websocket URL); got {stage!r}"
            )
        retention = _integer(value("logRetentionDays"), "logRetentionDays")
        if retention not in RETENTION_DAYS:
            raise SettingsError(
                f"context 'logRetentionDays' must be one of CloudWatch Logs' periods "
                f"{sorted(RETENTION_DAYS)}; got {retention}"
            )
        expiry = _integer(value("frameExpiryDays"), "frameExpiryDays")
        if expiry < 0:
            raise SettingsError(f"context 'frameExpiryDays' must be >= 0 (0 = keep forever); got {expiry}")
        max_bytes = _integer(value("maxFrameBytes"), "maxFrameBytes")
        if max_bytes <= 0:
            raise SettingsError(f"context 'maxFrameBytes' must be a positive number of bytes; got {max_bytes}")
        max_pixels = _integer(value("maxFramePixels"), "maxFramePixels")
        if max_pixels < 1280 * 720:
            raise SettingsError(f"context 'maxFramePixels' must admit a 1280x720 screenshare (>= {1280 * 720}); "
                                f"got {max_pixels}")
        removal = _choice(value("removalPolicy"), "removalPolicy", REMOVAL_POLICIES)
        architecture = _choice(value("architecture"), "architecture", ARCHITECTURES)
        secret_name = _text(value("verificationSecretName"), "verificationSecretName").strip()
        if secret_name.startswith("whsec_"):
            raise SettingsError(
                "context 'verificationSecretName' looks like the secret itself: store the whsec_ "
                "value in Secrets Manager and give the secret's name here (never the value)"
            )
        if secret_name and not SECRET_NAME_PATTERN.fullmatch(secret_name):
            raise SettingsError(
                f"context 'verificationSecretName' must be a Secrets Manager secret name "
                f"({SECRET_NAME_PATTERN.pattern}); got {secret_name!r}"
            )
        ingress = _choice(value("ingress"), "ingress", INGRESSES)
        front = _choice(value("containerFront"), "containerFront", CONTAINER_FRONTS)
        certificate_arn = _text(value("certificateArn"), "certificateArn").strip()
        domain_name = _text(value("domainName"), "domainName").strip().lower().rstrip(".")
        certificate = CERTIFICATE_ARN_PATTERN.fullmatch(certificate_arn) if certificate_arn else None
        if certificate_arn and not certificate:
            raise SettingsError(
                f"context 'certificateArn' must be an ACM certificate ARN "
                f"(arn:aws:acm:<region>:<account>:certificate/<id>); got {certificate_arn!r}"
            )
        if domain_name and not DOMAIN_PATTERN.fullmatch(domain_name):
            raise SettingsError(f"context 'domainName' must be a DNS name like frames.example.com; got {domain_name!r}")
        if bool(certificate_arn) != bool(domain_name):
            raise SettingsError(
                "context 'certificateArn' and 'domainName' go together: the wss:// URL Recall gets "
                "must name the host the certificate covers; "
                f"got certificateArn={certificate_arn!r}, domainName={domain_name!r}"
            )
        if certificate and front == "cloudfront" and certificate["region"] != "us-east-1":
            raise SettingsError(
                f"context 'certificateArn' is in {certificate['region']}, but CloudFront (containerFront=cloudfront) "
                "only uses certificates from us-east-1: request one there, or set containerFront=alb"
            )
        origin_certificate_arn = _text(value("originCertificateArn"), "originCertificateArn").strip()
        if origin_certificate_arn:
            if not CERTIFICATE_ARN_PATTERN.fullmatch(origin_certificate_arn):
                raise SettingsError(f"context 'originCertificateArn' must be an ACM certificate ARN; "
                                    f"got {origin_certificate_arn!r}")
            if front != "cloudfront" or not certificate_arn:
                raise SettingsError("context 'originCertificateArn' is the internal ALB's certificate behind CloudFront: "
                                    "it needs containerFront=cloudfront with certificateArn + domainName")
        allow_plaintext = _boolean(value("allowPlaintext"), "allowPlaintext")
        container = "container" in INGRESSES[ingress]
        if container and front == "alb" and not certificate_arn and not allow_plaintext:
            raise SettingsError(
                "context 'containerFront=alb' without 'certificateArn' would put a plaintext ws:// listener on the "
                "internet (token and frames unencrypted): set certificateArn + domainName, use containerFront="
                "cloudfront (the default, wss:// with no domain), or accept it with -c allowPlaintext=true"
            )
        image = _text(value("containerImage"), "containerImage").strip()
        if image not in ("", "local") and not IMAGE_URI_PATTERN.fullmatch(image):
            raise SettingsError(f"context 'containerImage' must be empty (build in CodeBuild), 'local' (build with "
                                f"Docker/CDK_DOCKER) or an image URI with a tag or digest; got {image!r}")
        frame_queue = _boolean(value("frameQueue"), "frameQueue")
        novelty = _boolean(value("novelty"), "novelty")
        analyzer = _text(value("analyzer"), "analyzer").strip().lower()
        if analyzer not in ANALYZERS:
            raise SettingsError(f"context 'analyzer' must be one of {sorted(k for k in ANALYZERS if k)} or empty; "
                                f"got {analyzer!r}")
        analyzers = _analyzers(value("analyzers"))
        if not novelty and any(a.novel_only for a in analyzers):
            raise SettingsError("context 'analyzers': novelOnly takes the novelty function's \"Frame Scored\" events, "
                                "which novelty=false turns off: set novelty=true or novelOnly=false")
        webhook_secret = _text(value("recallWebhookSecretName"), "recallWebhookSecretName").strip()
        if webhook_secret.startswith("whsec_"):
            raise SettingsError("context 'recallWebhookSecretName' looks like the secret itself: store the whsec_ "
                                "value in Secrets Manager and give the secret's name here (never the value)")
        if webhook_secret and not SECRET_NAME_PATTERN.fullmatch(webhook_secret):
            raise SettingsError(f"context 'recallWebhookSecretName' must be a Secrets Manager secret name; "
                                f"got {webhook_secret!r}")
        quiet = _integer(value("exportQuietMinutes"), "exportQuietMinutes")
        if not 1 <= quiet <= 120:
            raise SettingsError(f"context 'exportQuietMinutes' must be 1-120; got {quiet}")
        spool_max_mb = _integer(value("spoolMaxMb"), "spoolMaxMb")
        if not SPOOL_MAX_MB_RANGE[0] <= spool_max_mb <= SPOOL_MAX_MB_RANGE[1]:
            raise SettingsError(f"context 'spoolMaxMb' must be {SPOOL_MAX_MB_RANGE[0]}-{SPOOL_MAX_MB_RANGE[1]} "
                                f"(MB of the task's 20 GiB disk; 0 = no spool); got {spool_max_mb}")
        export_memory = _integer(value("exportMemoryMb"), "exportMemoryMb")
        if not EXPORT_MEMORY_RANGE[0] <= export_memory <= EXPORT_MEMORY_RANGE[1]:
            raise SettingsError(f"context 'exportMemoryMb' must be {EXPORT_MEMORY_RANGE[0]}-{EXPORT_MEMORY_RANGE[1]} "
                                f"(new accounts allow at most 3008 until a quota increase); got {export_memory}")
        rate_limit = _integer(value("rateLimitPerIp"), "rateLimitPerIp")
        if rate_limit and rate_limit < MIN_RATE_LIMIT:
            raise SettingsError(f"context 'rateLimitPerIp' must be 0 (off) or >= {MIN_RATE_LIMIT} requests per IP per "
                                f"5 minutes (WAF's smallest limit); got {rate_limit}")
        if rate_limit and not (container and front == "cloudfront"):
            raise SettingsError("context 'rateLimitPerIp' puts a WAF rule on the CloudFront distribution, which only "
                                "ingress=both|container with containerFront=cloudfront has; "
                                f"got ingress={ingress}, containerFront={front}")
        alarm_email = _text(value("alarmEmail"), "alarmEmail").strip()
        if alarm_email and not EMAIL_PATTERN.fullmatch(alarm_email):
            raise SettingsError(f"context 'alarmEmail' must be an email address; got {alarm_email!r}")
        min_tasks = _integer(value("containerMinTasks"), "containerMinTasks")
        max_tasks = _integer(value("containerMaxTasks"), "containerMaxTasks")
        if not 1 <= min_tasks <= max_tasks <= MAX_CONTAINER_TASKS:
            raise SettingsError(
                f"context 'containerMinTasks' and 'containerMaxTasks' must satisfy 1 <= min <= max <= "
                f"{MAX_CONTAINER_TASKS}; got containerMinTasks={min_tasks}, containerMaxTasks={max_tasks}"
            )
        recall_region = str(value("recallRegion")).strip()
        if recall_region not in REGIONS:
            raise SettingsError(f"context 'recallRegion' must be one of {sorted(REGIONS)}; got {recall_region!r}")
        api_key_name = str(value("recallApiKeySecretName")).strip()
        if api_key_name and not SECRET_NAME_PATTERN.fullmatch(api_key_name):
            raise SettingsError(f"context 'recallApiKeySecretName' must be a Secrets Manager secret name "
                                f"(never the key itself); got {api_key_name!r}")
        form = str(value("recallEndpointForm")).strip().lower()
        if form not in ENDPOINT_FORMS:
            raise SettingsError(f"context 'recallEndpointForm' must be one of {list(ENDPOINT_FORMS)}; got {form!r}")
        raw_ttl = value("botTokenTtlSeconds")
        try:
            token_ttl = int(str(raw_ttl).strip())
        except ValueError:
            token_ttl = 0
        if isinstance(raw_ttl, bool) or token_ttl < 60:
            raise SettingsError(f"context 'botTokenTtlSeconds' must be a whole number >= 60; got {raw_ttl!r}")
        return cls(
            stage=stage,
            log_retention_days=retention,
            frame_expiry_days=expiry,
            max_frame_bytes=max_bytes,
            max_frame_pixels=max_pixels,
            removal_policy_name=removal,
            architecture_name=architecture,
            verification_secret_name=secret_name,
            static_token=_boolean(value("staticToken"), "staticToken"),
            api_gateway_cloudwatch_role=_boolean(value("apiGatewayCloudWatchRole"), "apiGatewayCloudWatchRole"),
            ingress=ingress,
            container_front=front,
            certificate_arn=certificate_arn,
            domain_name=domain_name,
            origin_certificate_arn=origin_certificate_arn,
            allow_plaintext=allow_plaintext,
            container_image=image,
            alarm_email=alarm_email,
            frame_queue=frame_queue,
            novelty=novelty,
            analyzer=analyzer,
            analyzers=analyzers,
            recall_webhook_secret_name=webhook_secret,
            exports=_boolean(value("exports"), "exports"),
            export_quiet_minutes=quiet,
            export_memory_mb=export_memory,
            spool_max_mb=spool_max_mb,
            reserved_concurrency=_boolean(value("reservedConcurrency"), "reservedConcurrency"),
            rate_limit_per_ip=rate_limit,
            canary=_boolean(value("canary"), "canary"),
            container_min_tasks=min_tasks,
            container_max_tasks=max_tasks,
            recall_region=recall_region,
            recall_api_key_secret_name=api_key_name,
            recall_endpoint_form=form,
            bot_token_ttl_seconds=token_ttl,
        )

    @property
    def stack_name(self) -> str:
        return f"framesink-{self.stage}"

    @property
    def log_retention(self) -> logs.RetentionDays:
        return RETENTION_DAYS[self.log_retention_days]

    @property
    def removal_policy(self) -> RemovalPolicy:
        return REMOVAL_POLICIES[self.removal_policy_name]

    @property
    def destroy_on_delete(self) -> bool:
        return self.removal_policy_name == "destroy"

    @property
    def apigw_ingress(self) -> bool:
        return "apigw" in INGRESSES[self.ingress]

    @property
    def container_ingress(self) -> bool:
        return "container" in INGRESSES[self.ingress]

    @property
    def architecture(self) -> lambda_.Architecture:
        return ARCHITECTURES[self.architecture_name]


# Regions where the default deploy cannot work, and the setting that avoids it. CloudFront and
# its VPC origins exist only in the commercial partition ("aws"): China's CloudFront is a
# separate service without VPC origins, GovCloud has no CloudFront.
PARTITIONS_WITHOUT_VPC_ORIGINS = ("cn-", "us-gov-")


def check_region(settings: InfraSettings, region: str | None) -> None:
    """Refuse at synth what the target region cannot deploy, when the region is known
    (the CDK CLI sets CDK_DEFAULT_REGION from your profile); the template's Rules repeat the
    checks for deploys whose region is only known to CloudFormation."""
    if not region:
        return
    if settings.container_ingress and settings.container_front == "cloudfront" and \
            region.startswith(PARTITIONS_WITHOUT_VPC_ORIGINS):
        raise SettingsError(f"region {region} has no CloudFront VPC origins (containerFront=cloudfront): set "
                            "containerFront=alb with certificateArn + domainName")
    if settings.container_ingress and settings.container_front == "cloudfront" and settings.certificate_arn and \
            not settings.origin_certificate_arn and region != "us-east-1":
        raise SettingsError(f"region {region}: behind CloudFront the ALB gets an HTTPS listener with a certificate in "
                            "its own region; certificateArn is in us-east-1: set originCertificateArn (a certificate "
                            f"for domainName in {region})")
    if settings.rate_limit_per_ip and region != "us-east-1":
        raise SettingsError(f"context 'rateLimitPerIp' needs a CloudFront web ACL, which AWS WAF creates only in "
                            f"us-east-1; this stack deploys to {region}: deploy it in us-east-1 or set rateLimitPerIp=0")


ANALYZER_RUNTIMES = ("lambda", "container")
# key -> (default, what it accepts); "name", "path", "handler" and "runtime" are required.
ANALYZER_KEYS: dict[str, Any] = {
    "name": None, "path": None, "handler": None, "runtime": None,
    "novelOnly": False,  # only frames the novelty function flagged (needs novelty=true)
    "type": "",  # "webcam" or "screenshare": only that type; "" both
    "memoryMb": "",  # lambda: 128-10240 (default 1024); container: a Fargate memory for cpu (default 2 x cpu)
    "timeoutSeconds": 60,  # lambda: 1-900
    "cpu": 1024,  # container: Fargate CPU units (256, 512, 1024, 2048, 4096, 8192, 16384)
    "workers": 4,  # container: frames analyzed at once per task
    "latestOnly": False,  # container: each stream's newest waiting frame only
    "minTasks": 1,  # container: 0-100 (0: no task until frames wait; the first waits ~1 minute to start)
    "maxTasks": 4,  # container: scaled out by the queue's depth
}
# Fargate's CPU units -> the task memories (MiB) each allows (ECS developer guide, "Task CPU and memory").
FARGATE_MEMORY = {
    256: (512, 1024, 2048), 512: tuple(range(1024, 4097, 1024)), 1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)), 4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)), 16384: tuple(range(32768, 122881, 8192)),
}
FARGATE_CPU = tuple(FARGATE_MEMORY)
ANALYZER_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,29}")
HANDLER_PATTERN = re.compile(r"(?P<module>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*):[A-Za-z_]\w*")
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class AnalyzerSpec:
    """One entry of ``analyzers``, checked."""

    name: str
    path: str  # absolute
    handler: str
    runtime: str
    novel_only: bool = False
    frame_type: str = ""
    memory_mb: int = 1024
    timeout_seconds: int = 60
    cpu: int = 1024
    workers: int = 4
    latest_only: bool = False
    min_tasks: int = 1
    max_tasks: int = 4

    @property
    def construct_id(self) -> str:
        return "Analyzer" + "".join(part.capitalize() for part in self.name.split("-"))


def _analyzers(raw: Any) -> tuple[AnalyzerSpec, ...]:
    import json
    from pathlib import Path

    key = "analyzers"
    if isinstance(raw, str):  # -c analyzers='[{...}]'
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError as exc:
            raise SettingsError(f"context {key!r} must be a JSON list of analyzers; got {raw!r} ({exc})") from None
    if not isinstance(raw, list):
        raise SettingsError(f"context {key!r} must be a list of analyzers; got {raw!r}")
    specs, names = [], set()
    for n, entry in enumerate(raw):
        where = f"context 'analyzers'[{n}]"
        if not isinstance(entry, dict):
            raise SettingsError(f"{where} must be an object like {{\"name\": \"faces\", \"path\": \"analyzers/faces\", "
                                f"\"handler\": \"faces:analyze\", \"runtime\": \"container\"}}; got {entry!r}")
        unknown = sorted(set(entry) - set(ANALYZER_KEYS))
        if unknown:
            raise SettingsError(f"{where} has unknown keys {unknown}; known: {sorted(ANALYZER_KEYS)}")
        missing = [k for k, default in ANALYZER_KEYS.items() if default is None and k not in entry]
        if missing:
            raise SettingsError(f"{where} lacks {missing}")
        v = {**{k: d for k, d in ANALYZER_KEYS.items() if d is not None}, **entry}
        name = _text(v["name"], f"analyzers[{n}].name")
        if not ANALYZER_NAME_PATTERN.fullmatch(name) or name in names:
            raise SettingsError(f"{where}.name must be unique and match {ANALYZER_NAME_PATTERN.pattern} (its results' "
                                f"prefix and part of resource names); got {name!r}")
        names.add(name)
        handler = _text(v["handler"], f"analyzers[{n}].handler")
        match = HANDLER_PATTERN.fullmatch(handler)
        if not match:
            raise SettingsError(f"{where}.handler must be module:function (e.g. faces:analyze); got {handler!r}")
        path = Path(_text(v["path"], f"analyzers[{n}].path"))
        path = (path if path.is_absolute() else REPO_ROOT / path).resolve()
        module = path / (match["module"].replace(".", "/") + ".py")
        package = path / match["module"].replace(".", "/") / "__init__.py"
        if not path.is_dir() or not (module.is_file() or package.is_file()):
            raise SettingsError(f"{where}.path must be a directory holding {match['module'].replace('.', '/')}.py "
                                f"(relative paths are from {REPO_ROOT}); {path} does not")
        runtime = _choice(v["runtime"], f"analyzers[{n}].runtime", dict.fromkeys(ANALYZER_RUNTIMES))
        frame_type = _text(v["type"], f"analyzers[{n}].type").strip()
        if frame_type not in ("", "webcam", "screenshare"):
            raise SettingsError(f"{where}.type must be webcam, screenshare or empty (both); got {frame_type!r}")
        spec = AnalyzerSpec(
            name=name, path=str(path), handler=handler, runtime=runtime,
            novel_only=_boolean(v["novelOnly"], f"analyzers[{n}].novelOnly"), frame_type=frame_type,
            memory_mb=_integer(v["memoryMb"], f"analyzers[{n}].memoryMb") if v["memoryMb"] != "" else 0,
            timeout_seconds=_integer(v["timeoutSeconds"], f"analyzers[{n}].timeoutSeconds"),
            cpu=_integer(v["cpu"], f"analyzers[{n}].cpu"), workers=_integer(v["workers"], f"analyzers[{n}].workers"),
            latest_only=_boolean(v["latestOnly"], f"analyzers[{n}].latestOnly"),
            min_tasks=_integer(v["minTasks"], f"analyzers[{n}].minTasks"),
            max_tasks=_integer(v["maxTasks"], f"analyzers[{n}].maxTasks"))
        if not spec.memory_mb:
            spec = dataclasses.replace(spec, memory_mb=1024 if runtime == "lambda" else 2 * max(spec.cpu, 256))
        if runtime == "lambda":
            if not 128 <= spec.memory_mb <= 10240 or not 1 <= spec.timeout_seconds <= 900:
                raise SettingsError(f"{where}: a lambda analyzer's memoryMb must be 128-10240 and timeoutSeconds "
                                    f"1-900 (Lambda's limits); got {spec.memory_mb}, {spec.timeout_seconds}")
            if spec.latest_only:
                raise SettingsError(f"{where}.latestOnly needs runtime container (Lambda takes each event as it comes)")
        else:
            if spec.memory_mb not in FARGATE_MEMORY.get(spec.cpu, ()):
                allowed = FARGATE_MEMORY.get(spec.cpu)
                raise SettingsError(f"{where}: cpu must be one of {FARGATE_CPU} and memoryMb one Fargate allows with "
                                    f"it ({f'{allowed[0]}-{allowed[-1]} in steps of {allowed[1] - allowed[0]}' if allowed else 'see ECS docs'}); "
                                    f"got cpu={spec.cpu}, memoryMb={spec.memory_mb}")
            if not 1 <= spec.workers <= 64 or not 0 <= spec.min_tasks <= spec.max_tasks <= MAX_CONTAINER_TASKS \
                    or spec.max_tasks < 1:
                raise SettingsError(f"{where}: workers must be 1-64 and 0 <= minTasks <= maxTasks <= "
                                    f"{MAX_CONTAINER_TASKS}, maxTasks >= 1; got workers={spec.workers}, "
                                    f"minTasks={spec.min_tasks}, maxTasks={spec.max_tasks}")
        specs.append(spec)
    return tuple(specs)


def _text(raw: Any, key: str) -> str:
    if not isinstance(raw, str):
        raise SettingsError(f"context {key!r} must be a string; got {raw!r}")
    return raw


def _integer(raw: Any, key: str) -> int:
    # bool is an int in Python; `true` is never a meaningful number of days or bytes.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        return int(raw)
    raise SettingsError(f"context {key!r} must be a whole number; got {raw!r}")


def _boolean(raw: Any, key: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise SettingsError(f"context {key!r} must be true or false; got {raw!r}")


def _choice(raw: Any, key: str, choices: Mapping[str, Any]) -> str:
    if isinstance(raw, str) and raw.strip().lower() in choices:
        return raw.strip().lower()
    raise SettingsError(f"context {key!r} must be one of {sorted(choices)}; got {raw!r}")
