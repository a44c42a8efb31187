"""A meeting's life, from Recall's bot status webhooks (docs/recall-events.md): verify, record a
status and a timeline, and start the export when the meeting is over.

Webhooks are delivered by Svix, signed like Recall's websocket handshakes (Standard Webhooks,
auth.verify_signed_headers, over the raw body), retried for about a day with the same
``webhook-id``: each id is processed once (auth.OnceStore), a failure releases it so the retry
is processed. Events can arrive out of order, so a bot's status is the one with the highest
*precedence*: a terminal status (done, fatal) beats any other, then the latest ``updated_at``,
then the later stage of a call; ``call_ended`` arriving after ``done`` leaves ``done``.

Where it goes in the index (schema.py): the bot's META item (status), one EVENT item per
webhook (the timeline), and the status copied onto the META item of each recording the bot
streamed (so `framesink recordings --status done` is one Query). ``done`` queues the export
of each recording; ``call_ended`` queues it after a quiet period (media may still be
processing: if frames keep arriving, it waits again), in case ``done`` never comes.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
from botocore.exceptions import ClientError

from framesink_core.access.auth import AuthError, OnceStore, verify_signed_headers
from framesink_core.ingest.status import set_status
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.objects import error_code
from framesink_core.shared.observability import count, logger

# Recall's bot statuses in the order a call goes through them (v1.11 event names are
# "bot.<code>"; the legacy "bot.status_change" carries data.status.code).
STATUS_ORDER = ("joining_call", "in_waiting_room", "in_call_not_recording", "recording_permission_allowed",
                "recording_permission_denied", "in_call_recording", "call_ended", "done", "fatal")
TERMINAL = frozenset({"done", "fatal"})
KNOWN = frozenset(STATUS_ORDER)
# Svix retries a delivery for about a day with the same webhook-id: remember ids longer.
WEBHOOK_ID_TTL_SECONDS = 3 * 24 * 3600
MAX_BODY_BYTES = 256 * 1024


class WebhookError(ValueError):
    """A webhook we will not process. ``status``: the HTTP answer (400 bad, 401 unsigned)."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


@dataclass(frozen=True)
class StatusEvent:
    message_id: str
    event: str  # the event name as sent ("bot.done", "bot.status_change")
    bot_id: str
    code: str  # the status (done, call_ended, ...)
    sub_code: str | None
    updated_at: str | None  # Recall's time of the change (ISO 8601), when it says
    recording_id: str | None = None  # realtime_endpoint.* events name their recording

    def precedence(self, now: float) -> str:
        """A sortable key: terminal first, then the time of the change, then the stage.

        The time is ``updated_at`` parsed (any ISO 8601 offset, fractions or none) as UTC
        milliseconds, fixed-width, so text order is time order; a time that does not parse,
        or lies outside [2000, now + 1 day], ranks below every real time and never pins a
        status (a ``joining_call`` dated 9999 would otherwise win for ever). The ``t`` marks
        this form: it sorts above the raw ISO text keys written before it (``0#2026-...``),
        so a deploy mid-meeting does not freeze a bot's status."""
        stage = STATUS_ORDER.index(self.code) if self.code in KNOWN else -1
        at = change_time_ms(self.updated_at, now)
        return f"{int(self.code in TERMINAL)}#{'' if at is None else f't{at:015d}'}#{stage + 1:02d}"


EARLIEST_CHANGE_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: nothing of Recall's is older
MAX_CLOCK_SKEW_SECONDS = 24 * 3600  # a change Recall dates more than a day ahead is not believed


def change_time_ms(text: str | None, now: float) -> int | None:
    """``updated_at`` as UTC epoch milliseconds, or None (absent, unparsable, out of range).
    A time without an offset is taken as UTC, as Recall writes its times."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None
    return ms if EARLIEST_CHANGE_MS <= ms <= (now + MAX_CLOCK_SKEW_SECONDS) * 1000 else None


def _text(value, limit: int = 128) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def parse_status_event(body: bytes, message_id: str) -> StatusEvent | str:
    """A bot status event, or the event's name for anything else (acknowledged, counted).
    Raises WebhookError for a body that is not a JSON event."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookError(400, "not_json", "the body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        raise WebhookError(400, "not_an_event", "the body has no string 'event'")
    name = doc["event"][:128]
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    if name == "bot.status_change":  # legacy (v1.10)
        status = data.get("status") if isinstance(data.get("status"), dict) else {}
        code, sub_code = _text(status.get("code")), _text(status.get("sub_code"))
        updated_at = _text(status.get("created_at"), 40) or _text(status.get("updated_at"), 40)
    elif name.startswith("bot.") and name[4:] in KNOWN:
        inner = data.get("data") if isinstance(data.get("data"), dict) else {}
        code = _text(inner.get("code")) or name[4:]
        sub_code, updated_at = _text(inner.get("sub_code")), _text(inner.get("updated_at"), 40)
    elif name in ENDPOINT_EVENTS:
        inner = data.get("data") if isinstance(data.get("data"), dict) else {}
        code = name.removeprefix("realtime_endpoint.")
        sub_code, updated_at = _text(inner.get("sub_code")), _text(inner.get("updated_at"), 40)
    else:
        return name
    bot = data.get("bot") if isinstance(data.get("bot"), dict) else {}
    bot_id = bot.get("id") if isinstance(bot.get("id"), str) else data.get("bot_id")
    if not isinstance(bot_id, str) or not schema.ID_PATTERN.fullmatch(bot_id):
        raise WebhookError(400, "bad_bot_id", "the event names no valid bot id (data.bot.id or data.bot_id)")
    if not code or not schema.ID_PATTERN.fullmatch(code):
        raise WebhookError(400, "bad_status", "the event carries no status code")
    recording = data.get("recording") if isinstance(data.get("recording"), dict) else {}
    recording_id = recording.get("id") if isinstance(recording.get("id"), str) else None
    if recording_id is not None and not schema.ID_PATTERN.fullmatch(recording_id):
        raise WebhookError(400, "bad_recording_id", "data.recording.id is not a valid id")
    return StatusEvent(message_id, name, bot_id, code, sub_code, updated_at, recording_id)


# Recall's realtime endpoint status (docs/meetings.md): ``failed`` comes after 30 reconnects
# failed, 3 s apart; from then on Recall sends nothing more while the bot may still be in the
# call. Recorded on the bot's timeline and the recording, never as the bot's status.
ENDPOINT_EVENTS = frozenset({"realtime_endpoint.running", "realtime_endpoint.done", "realtime_endpoint.failed"})


class Meetings:
    """Verify and record status webhooks; start exports (``queue_export(recording_id, trigger,
    delay_seconds)`` sends the job, see export.py)."""

    def __init__(self, table: str, dynamodb, *, secrets: Callable[[], list[str]], once: OnceStore,
                 queue_export: Callable[[str, str, int], None] | None = None, tolerance_seconds: int = 300,
                 quiet_seconds: int = 600, expiry_days: int = 30):
        self.table, self.dynamodb = table, dynamodb
        self._secrets = secrets
        self.once = once
        self.queue_export = queue_export
        self.tolerance_seconds = tolerance_seconds
        self.quiet_seconds = quiet_seconds
        self.expiry_days = expiry_days

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """The message id of a delivery whose signature is good and fresh; AuthError (401/403)
        otherwise. Either configured secret may have signed it (older workspaces have a
        separate one for webhooks)."""
        # Only whsec_ values: the stack's secret holds a placeholder until you put Recall's in.
        secrets = [s for s in self._secrets() if s and s.startswith("whsec_")]
        if not secrets:
            raise AuthError(401, "no_secret", "no Recall webhook secret (whsec_...) is configured: put it into "
                            "the RecallWebhookSecretArn secret")
        if len(body) > MAX_BODY_BYTES:
            raise AuthError(403, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
        last: AuthError | None = None
        for secret in secrets:
            try:
                return verify_signed_headers(secret, headers, tolerance_seconds=self.tolerance_seconds, now=now,
                                             payload=body)
            except (binascii.Error, ValueError) as exc:  # the configured secret is not base64 after whsec_
                raise AuthError(401, "bad_secret", "the configured whsec_ secret does not decode (base64): "
                                "copy it again from Recall's dashboard") from exc
            except AuthError as exc:
                if exc.reason != "bad_signature":
                    raise  # missing or stale: another secret would not change that
                last = exc
        raise last

    def handle(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> dict:
        """Verify, dedupe and record one delivery. Returns what was done (for the answer)."""
        message_id = self.verify(headers, body, now)
        event = parse_status_event(body, message_id)
        if not self.once.claim("webhook", message_id, WEBHOOK_ID_TTL_SECONDS, now):
            return {"result": "duplicate", "webhook_id": message_id}
        try:
            if isinstance(event, str):
                return {"result": "ignored", "event": event}
            recordings = self.record(event, now)
            return {"result": "recorded", "bot_id": event.bot_id, "status": event.code, "recordings": recordings,
                    "endpoint": event.event in ENDPOINT_EVENTS}
        except Exception:
            self.once.release("webhook", message_id)  # Svix retries it: process it then
            raise

    def record(self, event: StatusEvent, now: float | None = None) -> list[str]:
        """The timeline item, the bot's status if this event takes precedence, the status of the
        bot's recordings, and the export when the meeting is over. Returns the recordings."""
        now = time.time() if now is None else now
        received = int(now * 1000)
        received_iso = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        expires = int(now) + max(self.expiry_days, 1) * schema.DAY_SECONDS if self.expiry_days else None
        self.dynamodb.put_item(TableName=self.table, Item=to_item({
            "pk": schema.bot_pk(event.bot_id), "sk": schema.bot_event_sk(event.updated_at or received_iso, event.message_id),
            "kind": "bot_event", "bot_id": event.bot_id, "event": event.event, "status": event.code,
            "sub_code": event.sub_code, "at": event.updated_at, "received_at": received, schema.TTL_ATTRIBUTE: expires,
        }))
        if event.event in ENDPOINT_EVENTS:
            return self._endpoint(event, received_iso)
        status = {"status": event.code, "status_at": event.updated_at or received_iso, "sub_code": event.sub_code,
                  "status_key": event.precedence(now)}
        self._set_status({"pk": schema.bot_pk(event.bot_id), "sk": schema.META_SK},
                         {**status, "kind": "bot", "bot_id": event.bot_id})
        recordings = self._recordings_of(event.bot_id)
        for recording_id in recordings:
            # on the recording's META item (`recordings --status`, `recording R`) and on the
            # bot's link to it (`recordings --bot B`): each listing stays one Query
            self._set_status({"pk": schema.recording_pk(recording_id), "sk": schema.META_SK}, status)
            self._set_status({"pk": schema.bot_pk(event.bot_id), "sk": schema.bot_recording_sk(recording_id)}, status)
            if self.queue_export is None:
                continue
            # (Re)queue while the job has not started: a message lost with an earlier attempt
            # is sent again; the export starts once whatever the number of messages (export.py).
            if event.code == "done":
                if claim_export(self.dynamodb, self.table, recording_id, "bot.done", now) == "queued":
                    self.queue_export(recording_id, "bot.done", 0)
            elif event.code == "call_ended":
                if claim_export(self.dynamodb, self.table, recording_id, "bot.call_ended", now,
                                quiet_until=int(now) + self.quiet_seconds) == "pending":
                    self.queue_export(recording_id, "bot.call_ended", self.quiet_seconds)
        return recordings

    def _endpoint(self, event: StatusEvent, received_iso: str) -> list[str]:
        """A realtime endpoint's status on its recording (or the bot's recordings): the META
        item's endpoint_status, and for ``failed`` one error line and the EndpointFailed
        metric, which alarms (infra/monitoring.py): frames stop while the bot may be in the call."""
        recordings = [event.recording_id] if event.recording_id else self._recordings_of(event.bot_id)
        at = event.updated_at or received_iso
        values = {":s": event.code, ":at": at}
        update = "SET endpoint_status = :s, endpoint_status_at = :at"
        if event.sub_code:
            values[":sub"] = event.sub_code
            update += ", endpoint_sub_code = :sub"
        else:
            update += " REMOVE endpoint_sub_code"
        for recording_id in recordings:
            self.dynamodb.update_item(
                TableName=self.table, Key=to_item({"pk": schema.recording_pk(recording_id), "sk": schema.META_SK}),
                UpdateExpression=update, ExpressionAttributeValues=to_item(values))
        if event.code == "failed":
            logger.error("realtime endpoint failed", extra={
                "reason": "endpoint_failed", "bot_id": event.bot_id, "recordings": recordings,
                "sub_code": event.sub_code, "detail": "Recall stopped sending to framesink after its reconnects "
                "failed; the bot may still be in the call (a gap in the frames from here)"})
            count("EndpointFailed")
        return recordings

    def _set_status(self, key: dict, values: dict) -> None:
        set_status(self.dynamodb, self.table, key, values)

    def _recordings_of(self, bot_id: str) -> list[str]:
        result = self.dynamodb.query(
            TableName=self.table, KeyConditionExpression="pk = :pk AND begins_with(sk, :rec)",
            ExpressionAttributeValues=to_item({":pk": schema.bot_pk(bot_id), ":rec": "REC#"}),
            ProjectionExpression="recording_id")
        return sorted(from_item(i)["recording_id"] for i in result.get("Items", []))


MANUAL_TRIGGER, RERUN_TRIGGER = "export-job", "export-job --again"  # `framesink export-job`


def claim_export(dynamodb, table: str, recording_id: str, trigger: str, now: float,
                 quiet_until: int | None = None) -> str:
    """Create the recording's export job, once; returns its status after the call: "queued"
    or "pending" (quiet period) while it has not started, then "running", "done", "failed".
    ``bot.done`` takes over a job still waiting out ``call_ended``'s quiet period (it starts
    at once instead)."""
    item = {"pk": schema.recording_pk(recording_id), "sk": schema.EXPORT_JOB_SK, "kind": "export_job",
            "recording_id": recording_id, "job_status": "pending" if quiet_until else "queued", "trigger": trigger,
            "queued_at": int(now * 1000), "quiet_until": quiet_until, "attempts": 0}
    condition = "attribute_not_exists(pk)"
    values = None
    if trigger in (MANUAL_TRIGGER, RERUN_TRIGGER, "bot.done"):
        # bot.done and `framesink export-job` also restart a job that failed or was stranded
        # "running" (export.py); `export-job --again` a finished one too.
        from framesink_core.shared.settings import STALE_RUNNING_SECONDS

        condition += " OR job_status IN (:pending, :failed) OR (job_status = :running AND started_at < :stale)"
        values = {":pending": "pending", ":failed": "failed", ":running": "running",
                  ":stale": int((now - STALE_RUNNING_SECONDS) * 1000)}
        if trigger == RERUN_TRIGGER:
            condition += " OR job_status = :done"
            values[":done"] = "done"
        values = to_item(values)
    try:
        kwargs = {"TableName": table, "Item": to_item(item), "ConditionExpression": condition}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        dynamodb.put_item(**kwargs)
        return item["job_status"]
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
    existing = dynamodb.get_item(TableName=table, Key=to_item({"pk": item["pk"], "sk": item["sk"]}),
                                 ConsistentRead=True).get("Item")
    return from_item(existing).get("job_status", "") if existing else ""
