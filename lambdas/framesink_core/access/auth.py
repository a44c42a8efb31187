"""Who may open a websocket: the connection token, and optionally Recall's signed headers.

Rules (docs/auth.md, a contract): the URL carries ``?token=...``; a missing or wrong token
is refused before any frame is read. A token is either the shared static token (Secrets
Manager) or a per-bot token whose SHA-256 hash create-bot stored in the table. When a
``whsec_`` verification secret is configured, the Standard Webhooks headers are verified too.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botocore.exceptions import ClientError

from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item

TOKEN_BYTES = 32


class AuthError(Exception):
    """Refused handshake. ``status`` is the HTTP status (401 missing, 403 wrong)."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    """Who a connection was accepted as. ``bot_id`` is None for the shared static token."""

    method: str  # "static_token" | "bot_token"
    bot_id: str | None = None
    signed: bool = False
    # A bot token's hash (never the token): an open connection's token is checked again
    # (TokenStore.lookup_hash) so a revoked or expired one is closed.
    token_hash: str | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class TokenStore:
    """Per-bot tokens: only the hash is stored, with the bot id and an expiry (TTL)."""

    def __init__(self, table: str, dynamodb):
        self.table = table
        self.dynamodb = dynamodb

    def issue(self, bot_id: str, ttl_seconds: int, now: float | None = None) -> str:
        token = mint_token()
        self.register(token, bot_id, ttl_seconds, now)
        return token

    def register(self, token: str, bot_id: str, ttl_seconds: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        token_hash = hash_token(token)
        expires = int(now + ttl_seconds)
        self.dynamodb.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "pk": schema.token_pk(token_hash),
                    "sk": schema.META_SK,
                    "kind": "bot_token",
                    "bot_id": bot_id,
                    "created_at": int(now),
                    schema.TTL_ATTRIBUTE: expires,
                }
            ),
        )
        # The bot's side of the link, so revoke(bot_id) finds the hash without a Scan.
        self.dynamodb.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "pk": schema.bot_pk(bot_id),
                    "sk": f"TOKEN#{token_hash}",
                    "kind": "bot_token_link",
                    "bot_id": bot_id,
                    schema.TTL_ATTRIBUTE: expires,
                }
            ),
        )

    def lookup(self, token: str, now: float | None = None) -> str | None:
        """The bot id of a live (unexpired, unrevoked) token, else None.

        Looked up by hash: the token has 256 bits of entropy, so a lookup by its hash
        leaks nothing through timing that a constant-time compare would protect.
        """
        return self.lookup_hash(hash_token(token), now)

    def lookup_hash(self, token_hash: str, now: float | None = None) -> str | None:
        """``lookup`` by the token's hash (what an open connection keeps)."""
        now = time.time() if now is None else now
        result = self.dynamodb.get_item(
            TableName=self.table,
            Key=to_item({"pk": schema.token_pk(token_hash), "sk": schema.META_SK}),
            ConsistentRead=True,
        )
        item = from_item(result.get("Item", {}))
        if not item or item.get("revoked") or int(item.get(schema.TTL_ATTRIBUTE, 0)) <= now:
            return None
        return item["bot_id"]

    def revoke(self, bot_id: str) -> int:
        """Revoke every token of a bot. Returns how many were revoked."""
        result = self.dynamodb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": schema.bot_pk(bot_id), ":prefix": "TOKEN#"}),
        )
        count = 0
        for raw in result.get("Items", []):
            token_hash = from_item(raw)["sk"].split("#", 1)[1]
            try:
                self.dynamodb.update_item(
                    TableName=self.table,
                    Key=to_item({"pk": schema.token_pk(token_hash), "sk": schema.META_SK}),
                    UpdateExpression="SET revoked = :t",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues=to_item({":t": True}),
                )
                count += 1
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        return count


class OnceStore:
    """Ids seen once: a conditional PutItem, so a second claim of the same id (a replayed
    signed handshake, a redelivered webhook) is refused across every process. The marker
    expires (TTL) once a replay could no longer pass the signature's time window anyway."""

    def __init__(self, table: str, dynamodb):
        self.table = table
        self.dynamodb = dynamodb

    def claim(self, scope: str, message_id: str, ttl_seconds: int, now: float | None = None) -> bool:
        """True the first time ``message_id`` is claimed in ``scope``; False afterwards."""
        now = time.time() if now is None else now
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=to_item({"pk": schema.once_pk(scope, message_id), "sk": schema.META_SK, "kind": "once",
                              "claimed_at": int(now), schema.TTL_ATTRIBUTE: int(now + ttl_seconds)}),
                ConditionExpression="attribute_not_exists(pk)",
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def release(self, scope: str, message_id: str) -> None:
        """Forget a claim whose work failed, so the sender's retry is processed."""
        self.dynamodb.delete_item(TableName=self.table,
                                  Key=to_item({"pk": schema.once_pk(scope, message_id), "sk": schema.META_SK}))


# --- Recall's signed headers (Standard Webhooks; docs/recall-events.md) -------------------------
# Hand-written (30 lines): the `standardwebhooks` package would pull httpx, attrs and
# dateutil into every Lambda asset for one HMAC. Every header is bounded before use.

SIGNATURE_PREFIXES = ("webhook-", "svix-")
MAX_MESSAGE_ID = 256
MAX_SIGNATURES_HEADER = 2048
MAX_SIGNATURES = 16
TIMESTAMP_DIGITS = 12  # Unix seconds for the next 30,000 years; anything longer is forged


def sign_headers(secret: str, msg_id: str, timestamp: int, payload: bytes = b"") -> dict[str, str]:
    """The headers Recall would send (used by the simulator and the tests)."""
    sig = _signature(secret, msg_id, str(timestamp), payload)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{sig}"}


def _signature(secret: str, msg_id: str, timestamp: str, payload: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_signed_headers(
    secret: str,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: int,
    now: float | None = None,
    payload: bytes = b"",
) -> str:
    """Raise AuthError unless the headers carry a valid, fresh v1 signature. Returns the
    message id (``webhook-id``), which the caller claims once (OnceStore) against replays."""
    lower = {k.lower(): v for k, v in headers.items()}
    for prefix in SIGNATURE_PREFIXES:
        msg_id = lower.get(prefix + "id")
        stamp = lower.get(prefix + "timestamp")
        signatures = lower.get(prefix + "signature")
        if msg_id and stamp and signatures:
            break
    else:
        raise AuthError(401, "missing_signature", "webhook-id/-timestamp/-signature headers are missing")
    if len(msg_id) > MAX_MESSAGE_ID or not msg_id.isascii() or not msg_id.isprintable():
        raise AuthError(403, "bad_signature", "webhook-id is not a short printable ASCII id")
    # Checked as text before int(): a float minus a 400-digit int overflows.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= TIMESTAMP_DIGITS):
        raise AuthError(403, "bad_signature", f"webhook-timestamp is not Unix seconds ({len(stamp)} characters)")
    if len(signatures) > MAX_SIGNATURES_HEADER:
        raise AuthError(403, "bad_signature", "webhook-signature is too long")
    now = time.time() if now is None else now
    sent = int(stamp)
    if abs(now - sent) > tolerance_seconds:
        raise AuthError(403, "stale_signature", f"webhook-timestamp is {int(now - sent)} s from now")
    expected = _signature(secret, msg_id, stamp, payload).encode()
    for entry in signatures.split()[:MAX_SIGNATURES]:
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return msg_id
    raise AuthError(403, "bad_signature", "no v1 signature matches")


class Authenticator:
    """The handshake check, shared by $connect and the container receiver."""

    def __init__(
        self,
        *,
        static_token: Callable[[], str | None],
        tokens: TokenStore | None,
        verification_secret: Callable[[], str | None] = lambda: None,
        tolerance_seconds: int = 300,
        once: OnceStore | None = None,
    ):
        # Secrets are fetched through callables so callers decide caching (Powertools
        # parameters in Lambda) and a rotated secret is picked up without a restart.
        self._static_token = static_token
        self._tokens = tokens
        self._verification_secret = verification_secret
        self._tolerance = tolerance_seconds
        # With signed handshakes: each webhook-id opens one connection. A replay within the
        # time window (a captured handshake sent again) is refused; Recall signs every
        # attempt afresh, so its reconnects pass.
        self._once = once

    def authenticate(
        self, query: Mapping[str, str] | None, headers: Mapping[str, str] | None, now: float | None = None
    ) -> Principal:
        token = (query or {}).get("token")
        if not token:
            raise AuthError(401, "missing_token", "the URL has no ?token=")
        principal = None
        static = self._static_token()
        if static and hmac.compare_digest(token.encode(), static.encode()):
            principal = Principal("static_token")
        elif self._tokens is not None and len(token) <= 256:
            token_hash = hash_token(token)
            bot_id = self._tokens.lookup_hash(token_hash, now)
            if bot_id:
                principal = Principal("bot_token", bot_id, token_hash=token_hash)
        if principal is None:
            raise AuthError(403, "wrong_token", "the token is not valid (unknown, expired or revoked)")
        secret = self._verification_secret()
        if secret:
            msg_id = verify_signed_headers(secret, headers or {}, tolerance_seconds=self._tolerance, now=now)
            # The marker outlives the window on both sides of now, so a replay is refused
            # for as long as its timestamp could pass the check.
            if self._once is not None and not self._once.claim("handshake", msg_id, 2 * self._tolerance + 60, now):
                raise AuthError(403, "replayed_signature", "this signed handshake (webhook-id) was already used")
            principal = dataclasses.replace(principal, signed=True)
        return principal
