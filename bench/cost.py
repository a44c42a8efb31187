"""Cost model: billable units per frame and cost per participant-hour, for each ingress, and
what the default deployment costs per month with nobody streaming.

``python -m bench.cost`` measures what it needs on this machine (message and item sizes from
the real core code, CPU per frame with real boto3 clients answered in-process, the log bytes
each Lambda invocation writes) and prints the cost of one participant streaming for one hour
(2 fps) through each ingress, line by line: API Gateway + Lambda (``apigw``), the container
behind CloudFront (``cloudfront``, the default) and behind an internet-facing ALB with your
certificate (``alb``: the other TLS path). ``make bench`` runs it with the end-to-end figures
of the same run (receiver CPU per frame, peak memory). Importable: ``estimate(...)``,
``monthly_fixed(...)`` and ``PRICES`` are what docs/costs.md's tables need.

Prices: AWS list prices, us-east-1, on-demand, no free tier, as published on the AWS pricing
pages and quoted by public pricing guides up to mid-2026; the model is as of 2026-11-29
with those figures. Check https://aws.amazon.com/pricing/ before relying on them; every
figure is in PRICES below and can be overridden.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# The emulator enforces API Gateway's limits; one definition of them.
from framesink.local import APIGW_MAX_FRAME_BYTES

REGION = "us-east-1"
PRICES_AS_OF = f"2026-11-29 (list prices, {REGION})"
PRICES = {
    # API Gateway WebSocket: messages are metered in 32 KB units (first 1 billion/month tier).
    "apigw_message_per_million": 1.00,
    "apigw_connection_minute_per_million": 0.25,
    # Lambda (the stack deploys arm64, cdk.json "architecture").
    "lambda_request_per_million": 0.20,
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_gb_second_x86_64": 0.0000166667,
    # EventBridge custom events (PutEvents), each 64 KB chunk one event; delivery to rule targets
    # is not charged (the frame events of ingest/outlet.py are ~0.7 KB: one each).
    "eventbridge_event_per_million": 1.00,
    # S3 Standard.
    "s3_put_per_thousand": 0.005,
    "s3_get_per_thousand": 0.0004,
    "s3_gb_month": 0.023,
    # DynamoDB on-demand (after the Nov 2024 price cut), Standard table class.
    "dynamodb_wru_per_million": 0.625,
    "dynamodb_rru_per_million": 0.125,
    "dynamodb_gb_month": 0.25,
    # Fargate Linux.
    "fargate_vcpu_hour_arm64": 0.03238,
    "fargate_gb_hour_arm64": 0.00356,
    "fargate_vcpu_hour_x86_64": 0.04048,
    "fargate_gb_hour_x86_64": 0.004445,
    # Application Load Balancer: an LCU is the max of 25 new connections/s, 3,000 active
    # connections/min, 1 GB processed/hour (EC2/IP targets), 1,000 rule evaluations/s.
    "alb_hour": 0.0225,
    "alb_lcu_hour": 0.008,
    "public_ipv4_hour": 0.005,
    # CloudFront (price class All, North America/Europe rates): the frames go from CloudFront
    # to the origin ("regional data transfer out to origin"); a websocket is one HTTPS request;
    # what goes back to the bot (pings) is data transfer out. VPC origins cost nothing extra.
    "cloudfront_to_origin_gb": 0.020,
    "cloudfront_https_requests_per_10k": 0.0100,
    "cloudfront_out_gb": 0.085,
    # The image build (deploy-time-build): CodeBuild arm1.small per build minute, ECR storage.
    "codebuild_arm_small_minute": 0.0034,
    "ecr_gb_month": 0.10,
    # What the stack keeps running: alarms, the dashboard, the alarm topic's KMS key, secrets.
    "cloudwatch_alarm_month": 0.10,
    "cloudwatch_dashboard_month": 3.00,
    "kms_key_month": 1.00,
    "secrets_manager_secret_month": 0.40,
    # CloudWatch custom metrics (first 10,000 tier), per metric per month: the canary's two.
    "cloudwatch_custom_metric_month": 0.30,
    # AWS WAF (rateLimitPerIp): a web ACL, a rule, per million requests inspected.
    "waf_web_acl_month": 5.00,
    "waf_rule_month": 1.00,
    "waf_request_per_million": 0.60,
    # Observability the stack turns on.
    "cloudwatch_logs_ingest_gb": 0.50,
    "xray_traces_recorded_per_million": 5.00,
}

APIGW_UNIT_BYTES = 32 * 1024  # messages are billed in 32 KB units
ALB_GB_PER_LCU_HOUR = 1.0
ALB_ACTIVE_CONNECTIONS_PER_LCU = 3000
LAMBDA_FULL_VCPU_MB = 1769  # Lambda gives one full vCPU at 1,769 MB, proportionally less below
DAYS_PER_MONTH = 365.25 / 12

# Assumptions that are not measured here (no AWS account): typical in-region latencies seen
# from Lambda, and what the Lambda platform logs per invocation. Override with --assume.
ASSUMPTIONS = {
    "s3_put_ms": 20.0,  # PutObject round trip, small object
    "s3_put_mb_per_s": 80.0,  # upload speed for the body on top of that
    "dynamodb_write_ms": 6.0,  # PutItem / UpdateItem round trip
    "lambda_platform_log_bytes": 360,  # START, END, REPORT (with the X-Ray segment line)
    "s3_access_log_bytes": 450,  # one server access log record per PUT (kept log_retention_days)
    "xray_sampled_fraction": 0.05,  # default sampling rule beyond the 1/s reservoir
    "cpu_speed_vs_lambda_vcpu": 1.0,  # this machine's core vs one Lambda (Graviton) vCPU
    # Novelty (analyze/novelty.py): Pillow decode + thumbnail per megapixel, measured here
    # (4.9 ms for 480x360, 22 ms for 1280x720: docs/performance.md), and the function's calls:
    # GetObject, GetItem, UpdateItem, PutEvents.
    "novelty_decode_ms_per_megapixel": 25.0,
    "novelty_io_ms": 45.0,
}


@dataclass
class Workload:
    """What is being paid for. Defaults follow the stack's defaults (cdk.json, infra/)."""

    fps: float = 2.0
    meeting_size: int = 5  # participants per bot: one websocket connection carries them all
    concurrent_participants: int = 100  # spreads the container ingress's fixed hourly cost
    frame_expiry_days: int = 30  # S3 lifecycle and index TTL (cdk.json frameExpiryDays); 0 = kept (priced as a year)
    log_retention_days: int = 30
    architecture: str = "arm64"
    lambda_memory_mb: int = 512  # ingest function (infra/websocket_ingress.py)
    task_vcpu: float = 0.5  # receiver task (infra/container_ingress.py)
    task_memory_gb: float = 1.0
    task_cpu_target: float = 0.6  # autoscaling target
    min_tasks: int = 1
    alb_azs: int = 2  # an internet-facing ALB holds one public IPv4 per AZ (an internal one none)
    totals_flush_seconds: float = 5.0  # participant totals: one write per participant this often
    # The default deployment's standing parts (a test keeps these equal to the synthesized
    # template: tests/infra/test_infra.py).
    alarms: int = 38  # 31 + the canary's own alarm and its function's error and throttle alarms,
    # + the novelty function's error and throttle alarms and its dead-letter queue's
    # + RealtimeEndpointFailed (Recall's realtime_endpoint.failed webhook)
    novelty: bool = True  # the novelty function on every frame event (cdk.json novelty)
    novelty_memory_mb: int = 1024
    dashboards: int = 1
    secrets: int = 3  # the shared token, the Recall API key, the webhook signing secret
    kms_keys: int = 1  # the alarm topic's
    image_build_minutes: float = 4.0  # one CodeBuild build per deploy that changes the image
    image_gb: float = 0.15
    deploys_per_month: int = 4
    # The canary (infra/canary.py): a run every 5 minutes, two handshakes and a token write.
    canary: bool = True
    canary_seconds_per_run: float = 0.5  # two handshakes through CloudFront + one PutItem pair
    canary_memory_gb: float = 0.25
    canary_metrics: int = 2  # CanaryOk, CanaryHandshakeMs
    rate_limit_per_ip: bool = False  # a WAF web ACL with one rate-based rule (cdk.json rateLimitPerIp)


@dataclass
class FrameProfile:
    """One kind of frame, measured: sizes from the core code, CPU on this machine."""

    name: str
    width: int
    height: int
    png_bytes: int
    message_bytes: int
    index_item_bytes: int
    participant_item_bytes: int
    lambda_handler_cpu_ms: float  # ingest Lambda handler per frame (Powertools, parse, store calls)
    store_cpu_ms: float  # Ingestor.handle + FrameStore with boto3 (what a receiver does per frame)
    receiver_cpu_ms: float | None = None  # measured end to end (receiver process), if available
    lambda_log_bytes: int = 0  # what the handler prints per invocation (EMF metrics, logs)
    fits_apigw: bool = True
    notes: list[str] = field(default_factory=list)


# --- DynamoDB item size (the rules in the DynamoDB developer guide, "Item sizes") ------------

def _value_bytes(value: dict) -> int:
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = v.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_bytes(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(_value_bytes(x) + 1 for x in v)
    return len(json.dumps(v))


def item_bytes(item: dict) -> int:
    """Size of a low-level DynamoDB item as DynamoDB meters it."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def write_units(size_bytes: int) -> int:
    return max(1, math.ceil(size_bytes / 1024))


# --- measuring ---------------------------------------------------------------------------------

PROFILES = {
    # name: (width, height, detailed)
    "small 480x360 (fits API Gateway)": (480, 360, False),
    "webcam 480x360": (480, 360, True),
    "screenshare 1280x720": (1280, 720, True),
}


def _frames(width: int, height: int, detailed: bool, n: int = 3) -> list[tuple[bytes, str]]:
    from framesink.synthetic import frame_message, make_png

    pngs = [make_png(width, height, seed=200 + k, detailed=detailed, label="Grace Hopper") for k in range(n)]
    return [(png, frame_message(png, recording_id=str(uuid.uuid4()), participant_id=100 + k, relative=12.5 + k,
                                name="Grace Hopper", bot_id=str(uuid.uuid4())))
            for k, png in enumerate(pngs)]


def _items(message: str) -> tuple[int, int]:
    """(frame index item bytes, participant item bytes), from the storage code itself."""
    from framesink_core.ingest.events import parse_message
    from framesink_core.ingest.stored_frame import StoredFrame
    from framesink_core.shared import schema
    from framesink_core.shared.items import to_item

    frame = parse_message(message, 1 << 30)
    record = StoredFrame.from_frame(frame, bot_id=frame.bot_id, connection_id="L0SM9cOFvHcCIhw=",
                                    stored_at=int(time.time() * 1000))
    index = to_item(record.index_item())
    participant = {
        "pk": schema.recording_pk(frame.recording_id), "sk": schema.participant_sk(frame.participant_id),
        "kind": "participant", "recording_id": frame.recording_id, "participant_id": frame.participant_id,
        "participant_name": frame.participant_name, "is_host": frame.is_host, "platform": frame.platform,
        "attrs_ms": frame.relative_ms, "bot_id": frame.bot_id, "first_ms": frame.relative_ms,
        "last_ms": frame.relative_ms, "frame_count": 7200, "bytes": 7200 * len(frame.png),
        schema.TTL_ATTRIBUTE: record.expires_at(30),
    }
    return item_bytes(index), item_bytes(to_item(participant))


def _cpu_ms(fn, items, repeats: int) -> float:
    """CPU time (process_time) per item in ms: the min over repeats, as the work is the same
    every time and a busy machine only ever adds to it."""
    samples = []
    for _ in range(repeats):
        start = time.process_time_ns()
        for item in items:
            fn(item)
        samples.append((time.process_time_ns() - start) / len(items) / 1e6)
    return min(samples)


def _websocket_event(body: str, connection_id: str) -> dict:
    now = int(time.time() * 1000)
    return {
        "requestContext": {"routeKey": "$default", "eventType": "MESSAGE", "messageDirection": "IN",
                           "stage": "live", "connectedAt": now, "requestTimeEpoch": now,
                           "connectionId": connection_id, "messageId": uuid.uuid4().hex[:16],
                           "requestId": uuid.uuid4().hex, "apiId": "bench", "domainName": "bench",
                           "identity": {"sourceIp": "203.0.113.7"}},
        "body": body, "isBase64Encoded": False,
    }


class _Context:
    function_name = "framesink-ingest"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:framesink-ingest"
    aws_request_id = "bench"


def measure_profiles(repeats: int = 5) -> list[FrameProfile]:
    """Sizes, CPU per frame and log bytes per invocation, for each frame profile."""
    from framesink_core.ingest.ingestor import Ingestor
    from framesink_core.service import Service
    from framesink_core.shared.observability import metrics
    from framesink_core.shared.settings import Settings
    from framesink_handlers import ingest

    from .canned import clients

    profiles = []
    settings = Settings(bucket="bench-frames", table="bench-index", max_frame_bytes=4 * 1024 * 1024)
    for name, (width, height, detailed) in PROFILES.items():
        frames = _frames(width, height, detailed)
        s3, dynamodb = clients()
        service = Service(settings, s3=s3, dynamodb=dynamodb)
        ingestor = Ingestor(service.store, settings.max_frame_bytes)
        messages = [m for _, m in frames]
        for m in messages:  # warm up (first-call costs: endpoint resolution, model loading)
            assert ingestor.handle(m, connection_id="c").status == "stored"
        metrics.clear_metrics()
        store_cpu = _cpu_ms(lambda m: ingestor.handle(m, connection_id="c"), messages, repeats)
        metrics.clear_metrics()

        # The ingest Lambda handler, decorators and all, on the same canned clients.
        events = [_websocket_event(m, "L0SM9cOFvHcCIhw=") for m in messages]
        original = ingest.service
        ingest.service = lambda: service  # the handler looks its Service up at call time
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                results = [ingest.handler(e, _Context()) for e in events]
                handler_cpu = _cpu_ms(lambda e: ingest.handler(e, _Context()), events, repeats)
        finally:
            ingest.service = original
        assert all(r["body"] in ("stored", "duplicate") for r in results), results
        log_bytes = len(out.getvalue().encode()) // (len(events) * (1 + repeats))

        index_bytes, participant_bytes = _items(messages[0])
        avg_png = sum(len(p) for p, _ in frames) // len(frames)
        avg_message = sum(len(m) for m in messages) // len(messages)
        fits = avg_message <= APIGW_MAX_FRAME_BYTES
        profiles.append(FrameProfile(
            name=name, width=width, height=height, png_bytes=avg_png, message_bytes=avg_message,
            index_item_bytes=index_bytes, participant_item_bytes=participant_bytes,
            lambda_handler_cpu_ms=handler_cpu, store_cpu_ms=store_cpu, lambda_log_bytes=log_bytes,
            fits_apigw=fits,
            notes=[] if fits else [f"{avg_message // 1024} KB messages: over API Gateway's 32 KB frame limit"],
        ))
    return profiles


# --- the model -----------------------------------------------------------------------------------

def _lambda_duration_ms(profile: FrameProfile, workload: Workload, assume: dict) -> float:
    """Billed duration of one ingest invocation: CPU at the function's vCPU share plus waits."""
    share = min(1.0, workload.lambda_memory_mb / LAMBDA_FULL_VCPU_MB)
    cpu = profile.lambda_handler_cpu_ms * assume["cpu_speed_vs_lambda_vcpu"] / share
    io_wait = (assume["s3_put_ms"] + profile.png_bytes / (assume["s3_put_mb_per_s"] * 1e6) * 1000
               + 2 * assume["dynamodb_write_ms"])
    return math.ceil(cpu + io_wait)


INGRESSES = ("apigw", "cloudfront", "alb")  # how bots reach framesink (the last two: the container)


def units_per_frame(profile: FrameProfile, ingress: str, workload: Workload, assume: dict) -> dict:
    """Billable units one frame causes (per-connection and hourly costs are in estimate())."""
    # The item and its one GSI copy (projection ALL), each its own write; the participant's
    # totals: on the receiver one UpdateItem per participant per flush, shared by the frames in
    # between; on the Lambda path one per frame (no timer, no later invocation: service.py).
    frame_wru = write_units(profile.index_item_bytes) * 2
    totals_wru = write_units(profile.participant_item_bytes) / (
        1 if ingress == "apigw" else workload.fps * workload.totals_flush_seconds)
    units = {
        "s3_puts": 1,
        "frame_events": 1,  # the ingress's "Frame Stored" event (ingest/outlet.py)
        "s3_gb_stored": profile.png_bytes / 1e9,
        "dynamodb_wru": frame_wru + totals_wru,
        "dynamodb_wru_frame": frame_wru,
        # The item and its GSI copy, each with DynamoDB's 100 bytes of per-item overhead.
        "dynamodb_gb_stored": (profile.index_item_bytes + 100) * 2 / 1e9,
        "access_log_gb": assume["s3_access_log_bytes"] / 1e9,
    }
    if workload.novelty:
        # One asynchronous invoke per frame: GetObject, a consistent GetItem of the stream's state
        # (1 RRU), UpdateItem of the frame's item and its GSI copy, one "Frame Scored" event. A
        # novel frame's conditional PutItem of the state is a few per minute: left out.
        share = min(1.0, workload.novelty_memory_mb / LAMBDA_FULL_VCPU_MB)
        decode_ms = (profile.width * profile.height / 1e6 * assume["novelty_decode_ms_per_megapixel"]
                     * assume["cpu_speed_vs_lambda_vcpu"] / share)
        novelty_ms = math.ceil(decode_ms + assume["novelty_io_ms"])
        units.update({
            "novelty_requests": 1, "novelty_billed_ms": novelty_ms,
            "novelty_gb_seconds": workload.novelty_memory_mb / 1024 * novelty_ms / 1000,
            "novelty_s3_gets": 1, "novelty_rru": 1, "novelty_wru": frame_wru, "novelty_events": 1,
            "novelty_log_gb": assume["lambda_platform_log_bytes"] / 1e9,
        })
    if ingress == "apigw":
        duration = _lambda_duration_ms(profile, workload, assume)
        units.update({
            "apigw_messages": math.ceil(profile.message_bytes / APIGW_UNIT_BYTES),
            "lambda_requests": 1,
            "lambda_gb_seconds": workload.lambda_memory_mb / 1024 * duration / 1000,
            "lambda_billed_ms": duration,
            "log_gb": (profile.lambda_log_bytes + assume["lambda_platform_log_bytes"]) / 1e9,
            "xray_traces": assume["xray_sampled_fraction"],
        })
    else:
        cpu_ms = profile.receiver_cpu_ms if profile.receiver_cpu_ms is not None else profile.store_cpu_ms
        units.update({
            "receiver_vcpu_seconds": cpu_ms * assume["cpu_speed_vs_lambda_vcpu"] / 1000,
            "alb_gb_processed": profile.message_bytes / 1e9,
        })
        if ingress == "cloudfront":
            units["cloudfront_gb_to_origin"] = profile.message_bytes / 1e9
    return units


def estimate(profile: FrameProfile, ingress: str, workload: Workload | None = None,
             prices: dict | None = None, assume: dict | None = None) -> dict:
    """Cost of one participant-hour, by line item (USD), with the units behind it."""
    w = workload or Workload()
    p = {**PRICES, **(prices or {})}
    a = {**ASSUMPTIONS, **(assume or {})}
    frames = w.fps * 3600
    u = units_per_frame(profile, ingress, w, a)
    months_kept = w.frame_expiry_days / DAYS_PER_MONTH if w.frame_expiry_days else 12.0
    storage = {  # what any ingress pays: the frame's object and its index
        "S3 PUT": frames * u["s3_puts"] * p["s3_put_per_thousand"] / 1000,
        f"S3 storage ({w.frame_expiry_days} d)": frames * u["s3_gb_stored"] * months_kept * p["s3_gb_month"],
        "S3 access logs": frames * u["access_log_gb"] * (w.log_retention_days / DAYS_PER_MONTH) * p["s3_gb_month"],
        "DynamoDB writes": frames * u["dynamodb_wru"] * p["dynamodb_wru_per_million"] / 1e6,
        # Index items expire with their objects (framesink_core.ingest.storage: expires_at, TTL).
        f"DynamoDB storage ({w.frame_expiry_days} d)": frames * u["dynamodb_gb_stored"] * months_kept
        * p["dynamodb_gb_month"],
        "EventBridge frame events": frames * u["frame_events"] * p["eventbridge_event_per_million"] / 1e6,
    }
    lines = dict(storage)
    if w.novelty:
        lines["Novelty function (Lambda, GET, index, event)"] = frames * (
            p["lambda_request_per_million"] / 1e6
            + u["novelty_gb_seconds"] * p[f"lambda_gb_second_{w.architecture}"]
            + u["novelty_s3_gets"] * p["s3_get_per_thousand"] / 1000
            + u["novelty_rru"] * p["dynamodb_rru_per_million"] / 1e6
            + u["novelty_wru"] * p["dynamodb_wru_per_million"] / 1e6
            + u["novelty_events"] * p["eventbridge_event_per_million"] / 1e6
            + u["novelty_log_gb"] * p["cloudwatch_logs_ingest_gb"])
    if ingress not in INGRESSES:
        raise ValueError(f"ingress must be one of {INGRESSES}, got {ingress!r}")
    if ingress == "apigw":
        lines.update({
            "API Gateway messages": frames * u["apigw_messages"] * p["apigw_message_per_million"] / 1e6,
            "API Gateway connection minutes": 60 / w.meeting_size * p["apigw_connection_minute_per_million"] / 1e6,
            "Lambda requests": frames * p["lambda_request_per_million"] / 1e6,
            "Lambda GB-seconds": frames * u["lambda_gb_seconds"] * p[f"lambda_gb_second_{w.architecture}"],
            "CloudWatch Logs": frames * u["log_gb"] * p["cloudwatch_logs_ingest_gb"],
            "X-Ray traces": frames * u["xray_traces"] * p["xray_traces_recorded_per_million"] / 1e6,
        })
        fixed_per_hour = idle_per_hour = 0.0
    else:
        vcpu_hours = frames * u["receiver_vcpu_seconds"] / 3600 / w.task_cpu_target
        participants_per_task = w.task_vcpu * w.task_cpu_target * 3600 / (frames * u["receiver_vcpu_seconds"])
        tasks = max(w.min_tasks, math.ceil(w.concurrent_participants / participants_per_task))
        task_hour = (w.task_vcpu * p[f"fargate_vcpu_hour_{w.architecture}"]
                     + w.task_memory_gb * p[f"fargate_gb_hour_{w.architecture}"])
        alb_lcu = max(frames * u["alb_gb_processed"] / ALB_GB_PER_LCU_HOUR,
                      1 / w.meeting_size / ALB_ACTIVE_CONNECTIONS_PER_LCU)
        # Behind CloudFront the ALB is internal: no public IPv4 of its own (the tasks have one each).
        alb_ips = w.alb_azs if ingress == "alb" else 0
        fixed_per_hour = p["alb_hour"] + (alb_ips + tasks) * p["public_ipv4_hour"]
        # What the deployed ingress costs with nobody streaming: the minimum tasks, the ALB, its IPs.
        idle_per_hour = p["alb_hour"] + (alb_ips + w.min_tasks) * p["public_ipv4_hour"] + w.min_tasks * task_hour
        lines.update({
            "Fargate tasks (share)": tasks * task_hour / w.concurrent_participants,
            "ALB LCU (processed bytes)": alb_lcu * p["alb_lcu_hour"],
            f"ALB hour + public IPv4 (/{w.concurrent_participants})": fixed_per_hour / w.concurrent_participants,
        })
        if ingress == "cloudfront":
            connections_per_hour = 1 / w.meeting_size  # a websocket is one request, open for the meeting
            lines.update({
                "CloudFront to origin": frames * u["cloudfront_gb_to_origin"] * p["cloudfront_to_origin_gb"],
                "CloudFront requests + pings out": connections_per_hour * p["cloudfront_https_requests_per_10k"]
                / 1e4 + 180 * 6 / w.meeting_size / 1e9 * p["cloudfront_out_gb"],  # a 6-byte ping every 20 s
            })
        u["participants_per_task"] = participants_per_task
        u["tasks"] = tasks
        u["vcpu_hours_per_participant_hour"] = vcpu_hours
    total = sum(lines.values())
    storage_total = sum(storage.values())
    return {
        "ingress": ingress, "profile": profile.name, "fits": ingress != "apigw" or profile.fits_apigw,
        "per_participant_hour": total, "per_frame": total / frames, "lines": lines, "units_per_frame": u,
        "storage_per_participant_hour": storage_total, "ingress_per_participant_hour": total - storage_total,
        "fixed_per_hour": fixed_per_hour, "idle_per_hour": idle_per_hour,
    }


def monthly_fixed(workload: Workload | None = None, prices: dict | None = None, ingress: str = "cloudfront") -> dict:
    """What a deployment costs per month with nobody streaming, by line (USD). The default
    (ingress=both, CloudFront) pays for the container's standing parts; API Gateway and
    Lambda cost nothing idle."""
    w = workload or Workload()
    p = {**PRICES, **(prices or {})}
    hours = 24 * DAYS_PER_MONTH
    task_hour = (w.task_vcpu * p[f"fargate_vcpu_hour_{w.architecture}"]
                 + w.task_memory_gb * p[f"fargate_gb_hour_{w.architecture}"])
    lines = {
        "CloudWatch alarms": w.alarms * p["cloudwatch_alarm_month"],
        "CloudWatch dashboard": w.dashboards * p["cloudwatch_dashboard_month"],
        "KMS key (alarm topic)": w.kms_keys * p["kms_key_month"],
        "Secrets Manager secrets": w.secrets * p["secrets_manager_secret_month"],
    }
    if w.canary:
        runs = hours * 60 / 5
        lines["canary (Lambda, 2 metrics, CloudFront requests, token writes)"] = (
            runs * (p["lambda_request_per_million"] / 1e6
                    + w.canary_seconds_per_run * w.canary_memory_gb * p[f"lambda_gb_second_{w.architecture}"]
                    + 2 * p["cloudfront_https_requests_per_10k"] / 1e4
                    + 2 * p["dynamodb_wru_per_million"] / 1e6)
            + w.canary_metrics * p["cloudwatch_custom_metric_month"])
    if w.rate_limit_per_ip and ingress == "cloudfront":
        lines["WAF web ACL + rate rule (requests extra)"] = p["waf_web_acl_month"] + p["waf_rule_month"]
    if ingress != "apigw":
        alb_ips = w.alb_azs if ingress == "alb" else 0
        lines.update({
            f"Fargate ({w.min_tasks} task, {w.task_vcpu:g} vCPU / {w.task_memory_gb:g} GB)": w.min_tasks * task_hour * hours,
            "ALB hour": p["alb_hour"] * hours,
            f"public IPv4 ({w.min_tasks + alb_ips})": (w.min_tasks + alb_ips) * p["public_ipv4_hour"] * hours,
            "image build (CodeBuild) + ECR": w.deploys_per_month * w.image_build_minutes * p["codebuild_arm_small_minute"]
            + w.image_gb * p["ecr_gb_month"],
        })
    return {"ingress": ingress, "lines": lines, "per_month": sum(lines.values())}


# The end-of-meeting export, per participant-hour of one stream (bench/export.py measured
# these on this machine's cores: encode CPU per hour of 2 fps frames, MP4 size per hour).
EXPORT_MEASURED = {"webcam 480x360": {"cpu_minutes": 1.1, "mp4_mb": 330},
                   "screenshare 1280x720": {"cpu_minutes": 5.6, "mp4_mb": 1050}}
EXPORT_MEMORY_GB = 3008 / 1024  # cdk.json exportMemoryMb: ~1.7 vCPUs, which x264 uses
EXPORT_VCPUS = 3008 / LAMBDA_FULL_VCPU_MB


def export_per_participant_hour(prices: dict | None = None, fps: float = 2.0) -> dict:
    """USD to export one hour of one stream: Lambda GB-seconds (the encode, wall time taken as
    CPU time over the vCPUs x264 keeps busy), the S3 GETs of its frames, the PUT and a month
    of the MP4. The synthetic frames are noise-heavy: real MP4s are smaller."""
    p = {**PRICES, **(prices or {})}
    out = {}
    for name, m in EXPORT_MEASURED.items():
        seconds = m["cpu_minutes"] * 60 / min(EXPORT_VCPUS, 2.0)
        lines = {
            "Lambda GB-seconds": seconds * EXPORT_MEMORY_GB * p["lambda_gb_second_arm64"],
            "S3 GET of the frames": fps * 3600 / 1000 * p["s3_get_per_thousand"],
            "MP4 stored (1 month)": m["mp4_mb"] / 1024 * p["s3_gb_month"],
        }
        out[name] = {"lines": lines, "total": sum(lines.values()), "lambda_seconds": seconds}
    return out


def context_per_participant_hour(prices: dict | None = None, speaking_share: float = 0.25,
                                 utterance_seconds: float = 8.0) -> dict:
    """USD per participant-hour for the meeting's context (ingest/context_events.py): the
    participant's utterances (speaking ``speaking_share`` of the hour, in utterances of
    ``utterance_seconds``), a speech_on and speech_off around each, a join and a leave; each one
    item, sized here from the real items the core builds."""
    from framesink.synthetic import participant_event_message, spoken, transcript_message
    from framesink_core.ingest.context_events import parse_context
    from framesink_core.shared.items import to_item

    p = {**PRICES, **(prices or {})}
    words = int(utterance_seconds / 0.35)  # ~170 words a minute
    text = " ".join(["meeting"] * words)

    def item(message: str) -> dict:
        body = json.loads(message)
        return to_item(parse_context(body, body["event"]).item(expires_at=2_000_000_000))

    event_item = item(participant_event_message("speech_on", recording_id="r" * 36, participant_id=100, relative=1.0))
    utterance_item = item(transcript_message(spoken(text, 1.0, 0.35), recording_id="r" * 36, participant_id=100))
    utterances = 3600 * speaking_share / utterance_seconds
    events = 2 * utterances + 2
    wru = events * write_units(item_bytes(event_item)) + utterances * write_units(item_bytes(utterance_item))
    stored_gb = (events * item_bytes(event_item) + utterances * item_bytes(utterance_item)) / 1e9
    lines = {"DynamoDB writes": wru * p["dynamodb_wru_per_million"] / 1e6,
             "DynamoDB storage (1 month)": stored_gb * p["dynamodb_gb_month"]}
    return {"lines": lines, "total": sum(lines.values()), "items": round(events + utterances), "write_units": wru,
            "event_item_bytes": item_bytes(event_item), "utterance_item_bytes": item_bytes(utterance_item)}


def audio_per_participant_hour(prices: dict | None = None, chunk_seconds: float = 0.1,
                               repeats: int = 200) -> dict:
    """USD per hour of one audio stream (a participant's, or a recording's mix: ingest/audio.py),
    on each ingress, from the real messages and objects the core builds: the container
    receiver joins chunks into OBJECT_SECONDS objects; a Lambda writes each chunk as one object
    (and is one API Gateway message and invocation per chunk). No index item: no write units.
    ``chunk_seconds``: the size of Recall's chunks, not documented (0.1 s assumed)."""
    from framesink.synthetic import audio_message, voice
    from framesink_core.ingest.audio import OBJECT_SECONDS, SAMPLE_RATE, parse_audio, wav_bytes

    p = {**PRICES, **(prices or {})}
    samples = round(chunk_seconds * SAMPLE_RATE)
    message = audio_message(voice(0, 0, samples), recording_id="r" * 36, relative=1.0, participant_id=100,
                            bot_id=str(uuid.uuid4()))
    body = json.loads(message)
    started = time.process_time()
    for _ in range(repeats):
        parse_audio(json.loads(message), body["event"])
    parse_ms = (time.process_time() - started) * 1000 / repeats
    chunks = 3600 / chunk_seconds
    wire_gb = chunks * len(message) / 1e9
    object_bytes = len(wav_bytes(b"\0\0" * round(OBJECT_SECONDS * SAMPLE_RATE)))
    stored_gb = 3600 / OBJECT_SECONDS * object_bytes / 1e9
    storage = stored_gb * p["s3_gb_month"]
    container = {"S3 PUT": 3600 / OBJECT_SECONDS * p["s3_put_per_thousand"] / 1000,
                 "S3 storage (1 month)": storage,
                 "CloudFront to origin": wire_gb * p["cloudfront_to_origin_gb"],
                 "ALB processed bytes": wire_gb / ALB_GB_PER_LCU_HOUR * p["alb_lcu_hour"]}
    apigw = {"S3 PUT": chunks * p["s3_put_per_thousand"] / 1000,
             "S3 storage (1 month)": chunks * (len(wav_bytes(b"\0\0" * samples))) / 1e9 * p["s3_gb_month"],
             "API Gateway messages": chunks * math.ceil(len(message) / APIGW_UNIT_BYTES)
             * p["apigw_message_per_million"] / 1e6,
             "Lambda requests": chunks * p["lambda_request_per_million"] / 1e6}
    return {"container": {"lines": container, "total": sum(container.values()), "puts": 3600 / OBJECT_SECONDS},
            "apigw": {"lines": apigw, "total": sum(apigw.values()), "puts": chunks},
            "message_bytes": len(message), "object_bytes": object_bytes, "stored_mb": stored_gb * 1000,
            "parse_cpu_ms_per_chunk": parse_ms, "chunk_seconds": chunk_seconds, "write_units": 0}


def table(estimates: list[dict]) -> str:
    """A Markdown table: one column per (ingress, profile), one row per line item."""
    columns = [e for e in estimates if e["fits"]]
    names = []
    for e in columns:
        names += [n for n in e["lines"] if n not in names]
    head = "| USD per participant-hour | " + " | ".join(f"{e['ingress']}: {e['profile']}" for e in columns) + " |"
    rows = [head, "|---|" + "---:|" * len(columns)]
    for n in names:
        rows.append(f"| {n} | " + " | ".join(_usd(e["lines"].get(n)) for e in columns) + " |")
    rows.append("| **total** | " + " | ".join(f"**{_usd(e['per_participant_hour'])}**" for e in columns) + " |")
    return "\n".join(rows)


def _usd(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if value >= 0.0001 or value == 0 else f"{value:.1e}"


def run(quick: bool = False, receiver_cpu_ms: dict[str, float] | None = None,
        workload: Workload | None = None) -> tuple[list, dict]:
    """For ``python -m bench``: (rows, details). ``receiver_cpu_ms`` maps profile names to the
    end-to-end receiver CPU per frame measured in the same run, when there is one."""
    from . import Row

    profiles = measure_profiles(repeats=3 if quick else 7)
    for prof in profiles:
        if receiver_cpu_ms and prof.name in receiver_cpu_ms:
            prof.receiver_cpu_ms = receiver_cpu_ms[prof.name]
    # Profiles not measured end to end: scale their in-process store CPU by the measured
    # profile's ratio (the websocket and the receiver's own work come on top of the store).
    measured = [prof for prof in profiles if prof.receiver_cpu_ms is not None]
    if measured:
        factor = measured[0].receiver_cpu_ms / measured[0].store_cpu_ms
        for prof in profiles:
            if prof.receiver_cpu_ms is None:
                prof.receiver_cpu_ms = prof.store_cpu_ms * factor
                prof.notes.append(f"receiver CPU scaled from {measured[0].name}'s end-to-end measurement")
    w = workload or Workload()
    estimates = [estimate(prof, ingress, w) for prof in profiles for ingress in INGRESSES]
    rows = [Row("cost", f"{e['ingress']}: {e['profile']}", e["per_participant_hour"], "USD/participant-hour",
                note="" if e["fits"] else "does not fit API Gateway (1009)") for e in estimates]
    monthly = {ingress: monthly_fixed(w, ingress=ingress) for ingress in INGRESSES}
    details = {"prices": PRICES, "prices_as_of": PRICES_AS_OF, "region": REGION, "assumptions": ASSUMPTIONS,
               "workload": asdict(w), "profiles": [asdict(prof) for prof in profiles], "estimates": estimates,
               "monthly_fixed": monthly, "export": export_per_participant_hour(), "markdown": table(estimates)}
    return rows, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=Workload.concurrent_participants,
                        help="concurrent participants (spreads the container ingress's fixed cost)")
    parser.add_argument("--meeting-size", type=int, default=Workload.meeting_size,
                        help="participants per bot connection")
    parser.add_argument("--architecture", choices=["arm64", "x86_64"], default=Workload.architecture)
    parser.add_argument("--from-results", type=Path, metavar="JSON",
                        help="use the receiver CPU per frame measured by `make bench` (bench/results/latest.json)")
    parser.add_argument("--json", action="store_true", help="print the details as JSON")
    args = parser.parse_args(argv)
    receiver = None
    if args.from_results:
        receiver = json.loads(args.from_results.read_text()).get("details", {}).get("e2e", {}).get(
            "receiver_cpu_ms_per_frame")
    w = replace(Workload(), concurrent_participants=args.participants, meeting_size=args.meeting_size,
                architecture=args.architecture)
    _, details = run(receiver_cpu_ms=receiver, workload=w)
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return 0
    print(f"framesink cost model: {PRICES_AS_OF}; {w.fps:g} fps, {w.meeting_size} participants per bot, "
          f"{w.concurrent_participants} concurrent participants, {w.architecture}\n")
    print(details["markdown"])
    for ingress, month in details["monthly_fixed"].items():
        print(f"\nstanding cost per month, {ingress}: ${month['per_month']:.2f} ("
              + ", ".join(f"{k} ${v:.2f}" for k, v in month["lines"].items()) + ")")
    for name, export in export_per_participant_hour().items():
        print(f"\nexport of one {name} stream per hour: ${export['total']:.4f} ("
              + ", ".join(f"{k} ${v:.4f}" for k, v in export["lines"].items())
              + f"; ~{export['lambda_seconds']:.0f} s of the export Lambda)")
    context = context_per_participant_hour()
    print(f"\nparticipant events and transcript of one participant per hour (speaking a quarter of it): "
          f"${context['total']:.5f} ({context['items']} items, {context['write_units']:.0f} write units; "
          f"event item {context['event_item_bytes']} B, utterance item {context['utterance_item_bytes']} B)")
    audio = audio_per_participant_hour()
    for ingress, what in (("container", "container receiver"), ("apigw", "API Gateway + Lambda")):
        a = audio[ingress]
        print(f"\naudio, one stream per hour on the {what}: ${a['total']:.4f} ({a['puts']:,.0f} PUTs; "
              + ", ".join(f"{k} ${v:.4f}" for k, v in a["lines"].items()) + ")")
    print(f"  ({audio['chunk_seconds']:g} s chunks of {audio['message_bytes']:,} B as messages, "
          f"{audio['stored_mb']:.0f} MB of WAV stored per hour, no index writes; "
          f"parse {audio['parse_cpu_ms_per_chunk']:.3f} ms CPU per chunk)")
    for prof in details["profiles"]:
        print(f"\n{prof['name']}: PNG {prof['png_bytes'] / 1024:.0f} KB, message {prof['message_bytes'] / 1024:.0f} KB, "
              f"index item {prof['index_item_bytes']} B, Lambda handler CPU {prof['lambda_handler_cpu_ms']:.2f} ms, "
              f"store CPU {prof['store_cpu_ms']:.2f} ms" + "".join(f"; {n}" for n in prof["notes"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
