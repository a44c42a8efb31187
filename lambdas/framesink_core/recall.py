"""Recall's Create Bot API: the request body, the HTTP client, and bot creation with a token.

What is in the body and how Recall answers is in ../shared/recall/EVENTS.md ("Create Bot").

Per-bot tokens and the chicken-and-egg (the token must be in the URL Recall is given, but
the bot id exists only once Recall has answered): ``create_streaming_bot`` mints the token
first, sends Recall the websocket URL carrying it, and only after Recall returns the bot id
stores the token's hash with that id. If Recall fails, nothing is stored, so there is no
orphan token; the token in flight is valid only once it is registered.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from .auth import TokenStore, mint_token
from .events import FRAME_EVENT, KNOWN_EVENTS
from .observability import logger
from .schema import ID_PATTERN

REGIONS = {
    "us-east-1": "https://us-east-1.recall.ai",
    "us-west-2": "https://us-west-2.recall.ai",
    "eu-central-1": "https://eu-central-1.recall.ai",
    "ap-northeast-1": "https://ap-northeast-1.recall.ai",
}
VIDEO_LAYOUT = "gallery_view_v2"  # Recall requires it for video_separate_png
ENDPOINT_FORMS = ("flat", "nested")  # nested = the older {"type", "config": {url, events}}
ALLOWED_EVENTS = KNOWN_EVENTS

RETRY_STATUSES = frozenset({409, 429, 502, 503, 504, 507})
DEFAULT_WAIT_507 = 30.0  # Recall: "no bot free right now, retry after 30 s"
MAX_BACKOFF = 8.0

MAX_BOT_NAME = 100
MAX_URL = 2048
MAX_METADATA_KEYS = 50
MAX_METADATA_VALUE = 500
# The value the stack puts in the Recall API key secret until an operator sets the real key.
API_KEY_PLACEHOLDER = "REPLACE_WITH_RECALL_API_KEY"


def base_url_for(region: str) -> str:
    try:
        return REGIONS[region]
    except KeyError:
        raise ValueError(f"unknown Recall region {region!r}; one of {', '.join(REGIONS)}") from None


# --- errors -------------------------------------------------------------------------------


class InvalidBotRequest(ValueError):
    """Bad input from the caller. ``field`` names what is wrong; shown as a 400."""

    def __init__(self, field_name: str, detail: str):
        super().__init__(f"{field_name}: {detail}")
        self.field = field_name
        self.detail = detail


class RecallError(RuntimeError):
    """Recall refused or could not be reached. ``detail`` carries Recall's own words.

    ``status`` is Recall's HTTP status (None for a timeout or connection error); ``reason``
    is a stable label for logs and metrics; ``retry_after`` is set when waiting may help.
    """

    REASONS = {400: "bad_request", 401: "unauthorized", 402: "payment_required", 403: "forbidden",
               404: "not_found"}

    def __init__(self, status: int | None, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(f"Recall {status or '-'} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after

    @property
    def gateway_status(self) -> int:
        """What framesink's own API answers: the caller's fault stays 4xx, ours becomes 5xx."""
        if self.status in (400, 404):
            return self.status
        if self.reason == "timeout":
            return 504
        if self.retry_after is not None or self.status in RETRY_STATUSES:
            return 503
        return 502  # 401/402/403: the API key, the account or the ingress URL needs fixing


class ConfigError(RuntimeError):
    """framesink itself is misconfigured (no ingress URL, unknown endpoint form): a 500."""


class TokenRegistrationError(RuntimeError):
    """Recall created the bot but its token could not be stored: the bot would be refused."""

    def __init__(self, bot_id: str, detail: str):
        super().__init__(f"bot {bot_id}: token not registered: {detail}")
        self.bot_id = bot_id
        self.detail = detail


# --- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class BotRequest:
    """A validated Create Bot request from framesink's caller."""

    meeting_url: str
    bot_name: str | None = None
    join_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    events: tuple[str, ...] = (FRAME_EVENT,)

    # Written out rather than with pydantic: five fields, and pydantic would dominate the
    # Lambda asset and its cold start (the same trade-off as events.py).
    @classmethod
    def from_json(cls, body: object) -> "BotRequest":
        if not isinstance(body, Mapping):
            raise InvalidBotRequest("body", "must be a JSON object")
        unknown = set(body) - {"meeting_url", "bot_name", "join_at", "metadata", "events"}
        if unknown:
            raise InvalidBotRequest(sorted(unknown)[0], "unknown field")
        return cls(
            meeting_url=_meeting_url(body.get("meeting_url")),
            bot_name=_bot_name(body.get("bot_name")),
            join_at=_join_at(body.get("join_at")),
            metadata=_metadata(body.get("metadata")),
            events=_events(body.get("events")),
        )


def _meeting_url(value: object) -> str:
    if value is None or value == "":
        raise InvalidBotRequest("meeting_url", "is required")
    if not isinstance(value, str):
        raise InvalidBotRequest("meeting_url", "must be a string")
    if len(value) > MAX_URL:
        raise InvalidBotRequest("meeting_url", f"is longer than {MAX_URL} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidBotRequest("meeting_url", "must be an http:// or https:// URL with a host")
    return value


def _bot_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidBotRequest("bot_name", "must be a string")
    if not 1 <= len(value) <= MAX_BOT_NAME or not value.strip():
        raise InvalidBotRequest("bot_name", f"must be 1-{MAX_BOT_NAME} characters, not blank")
    return value


def _join_at(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidBotRequest("join_at", "must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidBotRequest("join_at", f"is not ISO 8601: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidBotRequest("join_at", "needs a timezone (e.g. 2026-11-23T19:00:00Z)")
    return parsed


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidBotRequest("metadata", "must be an object of string values")
    if len(value) > MAX_METADATA_KEYS:
        raise InvalidBotRequest("metadata", f"has more than {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not key:
            raise InvalidBotRequest("metadata", "keys must not be empty")
        if not isinstance(item, str):
            raise InvalidBotRequest(f"metadata.{key}", "must be a string")
        if len(item) > MAX_METADATA_VALUE:
            raise InvalidBotRequest(f"metadata.{key}", f"is longer than {MAX_METADATA_VALUE} characters")
    return dict(value)


def _events(value: object) -> tuple[str, ...]:
    if value is None:
        return (FRAME_EVENT,)
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidBotRequest("events", "must be a list of event names")
    events = [FRAME_EVENT]
    for name in value:
        if name not in ALLOWED_EVENTS:
            raise InvalidBotRequest("events", f"{str(name)[:64]!r} is not one of {', '.join(sorted(ALLOWED_EVENTS))}")
        if name not in events:
            events.append(name)
    return tuple(events)


def endpoint_url_with_token(ws_url: str, token: str) -> str:
    """The ingress URL with ``token=`` added to its query string."""
    parts = urlsplit(ws_url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"the ingress websocket URL must be ws:// or wss://, got {ws_url!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def without_token(url: str) -> str:
    """The URL with any ``token=`` removed: what may be shown to a user or returned."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact_token(url: str) -> str:
    """A URL safe to print or log: the token's value replaced."""
    parts = urlsplit(url)
    query = [(k, "REDACTED" if k == "token" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_bot_body(request: BotRequest, endpoint_url: str, endpoint_form: str = "flat") -> dict:
    """The Create Bot JSON body (recall/EVENTS.md)."""
    if endpoint_form == "flat":
        endpoint = {"type": "websocket", "url": endpoint_url, "events": list(request.events)}
    elif endpoint_form == "nested":
        endpoint = {"type": "websocket", "config": {"url": endpoint_url, "events": list(request.events)}}
    else:
        raise ValueError(f"endpoint form must be one of {ENDPOINT_FORMS}, got {endpoint_form!r}")
    body: dict = {"meeting_url": request.meeting_url}
    if request.bot_name is not None:
        body["bot_name"] = request.bot_name
    if request.join_at is not None:
        body["join_at"] = request.join_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if request.metadata:
        body["metadata"] = dict(request.metadata)
    body["recording_config"] = {
        "video_mixed_layout": VIDEO_LAYOUT,
        "video_separate_png": {},
        "realtime_endpoints": [endpoint],
    }
    return body


def bot_status(bot: Mapping) -> str:
    """The latest status code of a bot object (Recall lists them in ``status_changes``)."""
    status = bot.get("status")
    if isinstance(status, Mapping) and status.get("code"):
        return str(status["code"])
    if isinstance(status, str) and status:
        return status
    changes = bot.get("status_changes") or []
    if changes and isinstance(changes[-1], Mapping) and changes[-1].get("code"):
        return str(changes[-1]["code"])
    return "created"  # Recall has accepted the bot but reported no status yet


# --- the HTTP client ----------------------------------------------------------------------


class RecallClient:
    """Recall's REST API with Recall's retry rules.

    Hand-written retry loop (about 30 lines) instead of urllib3's ``Retry``: that has no
    total deadline, no per-status default wait (507 means "wait 30 s"), and sleeps with
    ``time.sleep`` where the tests need an injectable, cappable wait. urllib3 still does the
    HTTP (pooling, timeouts); it ships with botocore, so the Lambda asset gains nothing.
    """

    def __init__(
        self,
        api_key: Callable[[], str | None],
        base_url: str,
        *,
        deadline_seconds: float = 25.0,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_attempts: int = 8,
        max_wait_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        pool: urllib3.PoolManager | None = None,
    ):
        # The key comes through a callable (Secrets Manager via Powertools, cached) and is
        # never stored on the client, so it cannot end up in a repr, a log or a traceback.
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.deadline_seconds = deadline_seconds
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.max_wait_seconds = max_wait_seconds
        self._sleep = sleep
        self._clock = clock
        self._pool = pool or urllib3.PoolManager(retries=False, maxsize=4)

    def create_bot(self, body: Mapping, idempotency_key: str | None = None) -> dict:
        """POST /api/v1/bot/. One Idempotency-Key for every attempt, so a retry after a
        lost response returns the bot already created instead of creating a second one."""
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/api/v1/bot/", body=body, extra_headers={"Idempotency-Key": key})

    def get_bot(self, bot_id: str) -> dict:
        if not ID_PATTERN.fullmatch(bot_id or ""):
            raise InvalidBotRequest("bot_id", "must match [A-Za-z0-9_-]{1,128}")
        return self._call("GET", f"/api/v1/bot/{bot_id}/")

    def _call(self, method: str, path: str, *, body: Mapping | None = None,
              extra_headers: Mapping[str, str] | None = None) -> dict:
        api_key = self._api_key()
        if not api_key or api_key == API_KEY_PLACEHOLDER:
            raise RecallError(None, "no_api_key", "the Recall API key secret is not set: put the key into it "
                              "(README, 'Creating bots')")
        headers = {"Authorization": f"Token {api_key}", "Accept": "application/json", **(extra_headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        deadline = self._clock() + self.deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            try:
                resp = self._pool.request(
                    method, url, body=payload, headers=headers, retries=False, redirect=False,
                    timeout=urllib3.Timeout(connect=min(self.connect_timeout, max(remaining, 0.1)),
                                            read=min(self.read_timeout, max(remaining, 0.1))),
                )
            except urllib3.exceptions.HTTPError as exc:  # timeouts, refused, reset
                # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
                timed_out = not isinstance(exc, urllib3.exceptions.NewConnectionError) and isinstance(
                    exc, urllib3.exceptions.TimeoutError)
                status, reason, wait = None, "timeout" if timed_out else "unreachable", None
                detail = f"{exc.__class__.__name__} calling {method} {path}"
            else:
                if 200 <= resp.status < 300:
                    return _json(resp.data) or {}
                status, detail = resp.status, _detail(resp.data)
                reason = RecallError.REASONS.get(status, f"http_{status}")
                if status not in RETRY_STATUSES:
                    raise RecallError(status, reason, detail)
                wait = _retry_after(resp.headers.get("Retry-After"))
                if wait is None and status == 507:
                    wait = DEFAULT_WAIT_507
            if wait is None:
                wait = min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            slept = wait if self.max_wait_seconds is None else min(wait, self.max_wait_seconds)
            if attempt >= self.max_attempts or self._clock() + slept >= deadline:
                raise RecallError(status, reason, detail, retry_after=wait if status else None)
            logger.info("recall retry", extra={"recall_status": status, "reason": reason, "attempt": attempt,
                                               "wait_seconds": round(wait, 3), "path": path})
            self._sleep(slept)


def _json(data: bytes):
    try:
        return json.loads(data or b"null")
    except ValueError:
        return None


def _detail(data: bytes) -> str:
    """Recall's explanation: ``detail`` when present, else the whole (short) body."""
    parsed = _json(data)
    if isinstance(parsed, Mapping) and "detail" in parsed:
        text = parsed["detail"] if isinstance(parsed["detail"], str) else json.dumps(parsed["detail"])
    elif parsed is not None:
        text = json.dumps(parsed)
    else:
        text = (data or b"").decode("utf-8", "replace")
    return text[:1000] or "(empty body)"


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# --- bot creation with a per-bot token ----------------------------------------------------


@dataclass(frozen=True)
class CreatedBot:
    bot_id: str
    status: str
    connection_url: str  # the ingress URL without any token
    token_expires_at: int
    bot: dict

    def summary(self) -> dict:
        return {
            "bot_id": self.bot_id,
            "status": self.status,
            "connection_url": self.connection_url,
            "token_expires_at": self.token_expires_at,
            "meeting_url": self.bot.get("meeting_url"),
            "join_at": self.bot.get("join_at"),
        }


def create_streaming_bot(
    request: BotRequest,
    *,
    client: RecallClient,
    tokens: TokenStore,
    ws_url: str,
    token_ttl_seconds: int,
    endpoint_form: str = "flat",
    idempotency_key: str | None = None,
    now: float | None = None,
) -> CreatedBot:
    """Mint a token, have Recall create a bot streaming to ``ws_url?token=...``, then
    register the token's hash for the returned bot id (see the module docstring)."""
    token = mint_token()
    try:
        body = create_bot_body(request, endpoint_url_with_token(ws_url, token), endpoint_form)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    bot = client.create_bot(body, idempotency_key)  # raises RecallError: nothing registered
    bot_id = bot.get("id")
    if not isinstance(bot_id, str) or not ID_PATTERN.fullmatch(bot_id):
        raise RecallError(201, "bad_response", f"Create Bot returned no usable bot id: {str(bot_id)[:64]!r}")
    now = time.time() if now is None else now
    # The token must outlive a bot scheduled for later: count the TTL from join_at.
    starts = max(now, request.join_at.timestamp()) if request.join_at else now
    ttl = int(starts - now) + token_ttl_seconds
    try:
        tokens.register(token, bot_id, ttl, now)
    except (ClientError, BotoCoreError) as exc:  # after boto3's own retries
        raise TokenRegistrationError(bot_id, f"{exc.__class__.__name__}: {exc}"[:300]) from exc
    return CreatedBot(bot_id, bot_status(bot), without_token(ws_url), int(now + ttl), bot)
