"""Runtime settings, read once from the environment.

The environment holds names and ARNs only, never a secret: the connection token and the
Recall verification secret are read from Secrets Manager by ARN (see auth.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024  # a 1280x720 screenshare PNG fits with room to spare
# Largest image (width x height) accepted: 4K UHD, which admits every size Recall sends;
# png.py refuses a decompression bomb by its header, without decoding it.
DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160
# How often a process writes each participant's totals (totals.py).
DEFAULT_TOTALS_FLUSH_SECONDS = 5.0
# After Recall's bot.call_ended, how long no frame may arrive before the export starts
# anyway (bot.done starts it at once). SQS delays a message 15 minutes at most.
DEFAULT_EXPORT_QUIET_SECONDS = 600
DEFAULT_CONNECTION_TTL_SECONDS = 3 * 60 * 60  # API Gateway closes connections after 2 h
DEFAULT_SIGNATURE_TOLERANCE_SECONDS = 300
# A bot token lives this long after the bot's join time (a Recall bot stays at most hours).
DEFAULT_BOT_TOKEN_TTL_SECONDS = 24 * 60 * 60
# Create Bot's total time for retries: inside the HTTP API's 30 s integration timeout.
DEFAULT_RECALL_DEADLINE_SECONDS = 25
# Days S3 keeps a frame (the bucket's lifecycle rule) and so its index items; 0 = forever.
# infra/settings.py takes its frameExpiryDays default from here: one source of truth.
DEFAULT_FRAME_EXPIRY_DAYS = 30
# Novelty (analyze/novelty.py): a change score over this is novel; a static stream yields a
# novel frame every heartbeat seconds of meeting time.
DEFAULT_NOVELTY_THRESHOLD = 4.0
DEFAULT_NOVELTY_HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class Settings:
    bucket: str
    table: str
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    totals_flush_seconds: float = DEFAULT_TOTALS_FLUSH_SECONDS
    # Index items of a frame expire (DynamoDB TTL) with its S3 object (schema.index_expires_at).
    frame_expiry_days: int = DEFAULT_FRAME_EXPIRY_DAYS
    connection_ttl_seconds: int = DEFAULT_CONNECTION_TTL_SECONDS
    # Secrets Manager ARN/name of the shared static connection token ("" = none configured).
    token_secret_id: str = ""
    # Secrets Manager ARN/name of Recall's whsec_ verification secret ("" = not checked).
    verification_secret_id: str = ""
    signature_tolerance_seconds: int = DEFAULT_SIGNATURE_TOLERANCE_SECONDS
    # Seconds a secret value is cached in a warm Lambda before it is read again.
    secret_max_age_seconds: int = 300
    # Lifetime of the presigned frame URLs the query API returns (SigV4 allows up to 7 days).
    presign_expiry_seconds: int = 900
    # create-bot (framesink_core/meeting/recall.py). The ingress websocket URL the bots are sent to
    # (wss://.../<stage>, no token); Recall's region or an explicit base URL (any
    # Recall-compatible server); the Recall API key's Secrets Manager ARN/name.
    ws_url: str = ""
    recall_region: str = "us-east-1"
    recall_base_url: str = ""
    recall_api_key_secret_id: str = ""
    bot_token_ttl_seconds: int = DEFAULT_BOT_TOKEN_TTL_SECONDS
    # "flat" ({type, url, events}, Recall's current form) or "nested" ({type, config: {...}}).
    recall_endpoint_form: str = "flat"
    recall_deadline_seconds: float = DEFAULT_RECALL_DEADLINE_SECONDS
    # Meetings (meetings.py, export.py): Recall's webhook signing secret (whsec_; the
    # verification secret above is tried too), the export queue, the quiet period.
    webhook_secret_id: str = ""
    export_queue_url: str = ""
    export_quiet_seconds: int = DEFAULT_EXPORT_QUIET_SECONDS
    # The EventBridge bus the ingress publishes frame events on (ingest/outlet.py; "" = none).
    event_bus: str = ""
    novelty_threshold: float = DEFAULT_NOVELTY_THRESHOLD
    novelty_heartbeat_seconds: float = DEFAULT_NOVELTY_HEARTBEAT_SECONDS

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            bucket=env.get("FRAMESINK_BUCKET", ""),
            table=env.get("FRAMESINK_TABLE", ""),
            max_frame_bytes=int(env.get("FRAMESINK_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES)),
            max_frame_pixels=int(env.get("FRAMESINK_MAX_FRAME_PIXELS", DEFAULT_MAX_FRAME_PIXELS)),
            totals_flush_seconds=float(env.get("FRAMESINK_TOTALS_FLUSH_SECONDS", DEFAULT_TOTALS_FLUSH_SECONDS)),
            frame_expiry_days=int(env.get("FRAMESINK_FRAME_EXPIRY_DAYS", DEFAULT_FRAME_EXPIRY_DAYS)),
            connection_ttl_seconds=int(
                env.get("FRAMESINK_CONNECTION_TTL_SECONDS", DEFAULT_CONNECTION_TTL_SECONDS)
            ),
            token_secret_id=env.get("FRAMESINK_TOKEN_SECRET_ID", ""),
            verification_secret_id=env.get("FRAMESINK_VERIFICATION_SECRET_ID", ""),
            signature_tolerance_seconds=int(
                env.get("FRAMESINK_SIGNATURE_TOLERANCE_SECONDS", DEFAULT_SIGNATURE_TOLERANCE_SECONDS)
            ),
            secret_max_age_seconds=int(env.get("FRAMESINK_SECRET_MAX_AGE_SECONDS", 300)),
            presign_expiry_seconds=int(env.get("FRAMESINK_PRESIGN_EXPIRY_SECONDS", 900)),
            ws_url=env.get("FRAMESINK_WS_URL", ""),
            recall_region=env.get("FRAMESINK_RECALL_REGION", "us-east-1"),
            recall_base_url=env.get("FRAMESINK_RECALL_BASE_URL", ""),
            recall_api_key_secret_id=env.get("FRAMESINK_RECALL_API_KEY_SECRET_ID", ""),
            bot_token_ttl_seconds=int(env.get("FRAMESINK_BOT_TOKEN_TTL_SECONDS", DEFAULT_BOT_TOKEN_TTL_SECONDS)),
            recall_endpoint_form=env.get("FRAMESINK_RECALL_ENDPOINT_FORM", "flat"),
            recall_deadline_seconds=float(
                env.get("FRAMESINK_RECALL_DEADLINE_SECONDS", DEFAULT_RECALL_DEADLINE_SECONDS)
            ),
            webhook_secret_id=env.get("FRAMESINK_WEBHOOK_SECRET_ID", ""),
            export_queue_url=env.get("FRAMESINK_EXPORT_QUEUE_URL", ""),
            export_quiet_seconds=int(env.get("FRAMESINK_EXPORT_QUIET_SECONDS", DEFAULT_EXPORT_QUIET_SECONDS)),
            event_bus=env.get("FRAMESINK_EVENT_BUS", ""),
            novelty_threshold=float(env.get("FRAMESINK_NOVELTY_THRESHOLD", DEFAULT_NOVELTY_THRESHOLD)),
            novelty_heartbeat_seconds=float(
                env.get("FRAMESINK_NOVELTY_HEARTBEAT_SECONDS", DEFAULT_NOVELTY_HEARTBEAT_SECONDS)),
        )

    def as_env(self) -> dict[str, str]:
        """The environment that from_env reads back (local emulator, CDK)."""
        env = {
            "FRAMESINK_BUCKET": self.bucket,
            "FRAMESINK_TABLE": self.table,
            "FRAMESINK_MAX_FRAME_BYTES": str(self.max_frame_bytes),
            "FRAMESINK_MAX_FRAME_PIXELS": str(self.max_frame_pixels),
            "FRAMESINK_TOTALS_FLUSH_SECONDS": f"{self.totals_flush_seconds:g}",
            "FRAMESINK_FRAME_EXPIRY_DAYS": str(self.frame_expiry_days),
            "FRAMESINK_CONNECTION_TTL_SECONDS": str(self.connection_ttl_seconds),
            "FRAMESINK_SIGNATURE_TOLERANCE_SECONDS": str(self.signature_tolerance_seconds),
            "FRAMESINK_SECRET_MAX_AGE_SECONDS": str(self.secret_max_age_seconds),
            "FRAMESINK_PRESIGN_EXPIRY_SECONDS": str(self.presign_expiry_seconds),
        }
        env.update(self.create_bot_env())
        env.update(self.meetings_env())
        if self.token_secret_id:
            env["FRAMESINK_TOKEN_SECRET_ID"] = self.token_secret_id
        if self.verification_secret_id:
            env["FRAMESINK_VERIFICATION_SECRET_ID"] = self.verification_secret_id
        if self.event_bus:
            env["FRAMESINK_EVENT_BUS"] = self.event_bus
        if self.novelty_threshold != DEFAULT_NOVELTY_THRESHOLD:
            env["FRAMESINK_NOVELTY_THRESHOLD"] = f"{self.novelty_threshold:g}"
        if self.novelty_heartbeat_seconds != DEFAULT_NOVELTY_HEARTBEAT_SECONDS:
            env["FRAMESINK_NOVELTY_HEARTBEAT_SECONDS"] = f"{self.novelty_heartbeat_seconds:g}"
        return env

    def meetings_env(self) -> dict[str, str]:
        """The webhook and export settings, only where set (the other functions' environments
        stay free of them)."""
        env = {}
        if self.webhook_secret_id:
            env["FRAMESINK_WEBHOOK_SECRET_ID"] = self.webhook_secret_id
        if self.export_queue_url:
            env["FRAMESINK_EXPORT_QUEUE_URL"] = self.export_queue_url
        if self.export_quiet_seconds != DEFAULT_EXPORT_QUIET_SECONDS:
            env["FRAMESINK_EXPORT_QUIET_SECONDS"] = str(self.export_quiet_seconds)
        return env

    def create_bot_env(self) -> dict[str, str]:
        """create-bot's settings, only when one differs from its default: the other
        functions' environments stay free of them."""
        names = {
            "FRAMESINK_WS_URL": "ws_url",
            "FRAMESINK_RECALL_REGION": "recall_region",
            "FRAMESINK_RECALL_BASE_URL": "recall_base_url",
            "FRAMESINK_RECALL_API_KEY_SECRET_ID": "recall_api_key_secret_id",
            "FRAMESINK_BOT_TOKEN_TTL_SECONDS": "bot_token_ttl_seconds",
            "FRAMESINK_RECALL_ENDPOINT_FORM": "recall_endpoint_form",
            "FRAMESINK_RECALL_DEADLINE_SECONDS": "recall_deadline_seconds",
        }
        defaults = Settings(bucket="", table="")
        if all(getattr(self, f) == getattr(defaults, f) for f in names.values()):
            return {}
        return {env: str(getattr(self, f)) for env, f in names.items() if getattr(self, f) != ""}

# A job still "running" this long after it started was stranded (its planner died between
# its steps): a later plan message or bot.done may start it again.
STALE_RUNNING_SECONDS = 2 * 3600
