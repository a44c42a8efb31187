"""Connection auth: static token, per-bot tokens, Recall's signed headers."""

import time

import pytest
from conftest import TOKEN, WHSEC

from framesink_core.access.auth import (
    Authenticator,
    AuthError,
    OnceStore,
    TokenStore,
    hash_token,
    sign_headers,
    verify_signed_headers,
)


def make_auth(stack, aws, secret=None):
    tokens = TokenStore(stack.table, aws["dynamodb"])
    return Authenticator(static_token=lambda: TOKEN, tokens=tokens, verification_secret=lambda: secret,
                         tolerance_seconds=300, once=OnceStore(stack.table, aws["dynamodb"])), tokens


def refused(auth, query, headers=None, now=None):
    with pytest.raises(AuthError) as err:
        auth.authenticate(query, headers or {}, now)
    return err.value


def test_static_token(stack, aws):
    auth, _ = make_auth(stack, aws)
    principal = auth.authenticate({"token": TOKEN}, {})
    assert principal.method == "static_token" and principal.bot_id is None


@pytest.mark.parametrize("query, status, reason", [
    (None, 401, "missing_token"), ({}, 401, "missing_token"), ({"token": ""}, 401, "missing_token"),
    ({"token": TOKEN + "x"}, 403, "wrong_token"), ({"token": TOKEN[:-1]}, 403, "wrong_token"),
    ({"token": "x" * 5000}, 403, "wrong_token"),
])
def test_missing_or_wrong_token(stack, aws, query, status, reason):
    auth, _ = make_auth(stack, aws)
    err = refused(auth, query)
    assert (err.status, err.reason) == (status, reason)


def test_bot_token_lifecycle(stack, aws):
    auth, tokens = make_auth(stack, aws)
    token = tokens.issue("bot-1", ttl_seconds=60)
    assert auth.authenticate({"token": token}, {}).bot_id == "bot-1"
    # only the hash is stored
    item = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": f"TOKEN#{hash_token(token)}"}, "sk": {"S": "META"}})["Item"]
    assert token not in str(item)
    # expired
    assert refused(auth, {"token": token}, now=time.time() + 61).reason == "wrong_token"
    # revoked
    assert tokens.revoke("bot-1") == 1
    assert refused(auth, {"token": token}).reason == "wrong_token"


def test_no_static_token_configured_still_accepts_bot_tokens(stack, aws):
    tokens = TokenStore(stack.table, aws["dynamodb"])
    auth = Authenticator(static_token=lambda: None, tokens=tokens)
    token = tokens.issue("bot-2", 60)
    assert auth.authenticate({"token": token}, {}).bot_id == "bot-2"
    assert refused(auth, {"token": TOKEN}).status == 403


def test_signed_headers_good_bad_stale(stack, aws):
    auth, _ = make_auth(stack, aws, secret=WHSEC)
    now = int(time.time())
    good = sign_headers(WHSEC, "msg_1", now)
    assert auth.authenticate({"token": TOKEN}, good).signed is True
    assert refused(auth, {"token": TOKEN}, {}).reason == "missing_signature"
    forged = {**good, "webhook-signature": "v1," + "A" * 44}
    assert refused(auth, {"token": TOKEN}, forged).reason == "bad_signature"
    other_id = {**good, "webhook-id": "msg_2"}
    assert refused(auth, {"token": TOKEN}, other_id).reason == "bad_signature"
    # 30 s past the 300 s window each way: `now` is truncated and the calls above take time,
    # so now + 301 could fall back inside the window by the time it is checked (a flake seen)
    stale = sign_headers(WHSEC, "msg_1", now - 330)
    assert refused(auth, {"token": TOKEN}, stale).reason == "stale_signature"
    future = sign_headers(WHSEC, "msg_1", now + 330)
    assert refused(auth, {"token": TOKEN}, future).reason == "stale_signature"
    # the token is still checked first
    assert refused(auth, {"token": "bad"}, good).reason == "wrong_token"


def test_a_signed_handshake_is_accepted_once(stack, aws):
    """A captured handshake replayed inside the time window is refused; Recall signs each
    attempt with a new webhook-id, so its reconnects pass."""
    auth, _ = make_auth(stack, aws, secret=WHSEC)
    now = int(time.time())
    first = sign_headers(WHSEC, "msg_once", now)
    assert auth.authenticate({"token": TOKEN}, first).signed
    replay = refused(auth, {"token": TOKEN}, first)
    assert (replay.status, replay.reason) == (403, "replayed_signature")
    assert auth.authenticate({"token": TOKEN}, sign_headers(WHSEC, "msg_next", now)).signed
    # the marker expires (TTL) only after any replay would be stale anyway
    item = aws["dynamodb"].get_item(TableName=stack.table,
                                    Key={"pk": {"S": "ONCE#handshake#msg_once"}, "sk": {"S": "META"}})["Item"]
    assert int(item["expires_at"]["N"]) >= now + 2 * 300


@pytest.mark.parametrize("header, value", [
    ("webhook-timestamp", "1" * 400),  # float - int would overflow: refused as text first
    ("webhook-timestamp", "1" * 5000),  # past Python's int() digit limit
    ("webhook-timestamp", "１７００００００００"),  # full-width digits are not ASCII
    ("webhook-timestamp", "-1"),
    ("webhook-id", "m" * 300),
    ("webhook-id", "msg\r\nX-Injected: 1"),
    ("webhook-signature", "v1,AAAA " * 1000),
])
def test_hostile_signature_headers_are_a_403_not_a_crash(stack, aws, header, value):
    auth, _ = make_auth(stack, aws, secret=WHSEC)
    headers = {**sign_headers(WHSEC, "msg_h", int(time.time())), header: value}
    err = refused(auth, {"token": TOKEN}, headers)
    assert (err.status, err.reason) == (403, "bad_signature")


def test_signature_variants():
    now = 1_800_000_000
    good = sign_headers(WHSEC, "msg_x", now)
    # svix- prefix (older workspaces), mixed-case header names, several signatures listed
    svix = {k.replace("webhook-", "Svix-"): v for k, v in good.items()}
    verify_signed_headers(WHSEC, svix, tolerance_seconds=300, now=now)
    several = {**good, "webhook-signature": "v1,bm9wZQ== v2,abc " + good["webhook-signature"]}
    verify_signed_headers(WHSEC, several, tolerance_seconds=300, now=now)
    with pytest.raises(AuthError):
        verify_signed_headers(WHSEC, {**good, "webhook-timestamp": "soon"}, tolerance_seconds=300, now=now)
    with pytest.raises(AuthError):
        verify_signed_headers("whsec_" + "b3RoZXIta2V5", good, tolerance_seconds=300, now=now)


def test_standard_webhooks_reference_vector():
    """The Standard Webhooks spec's published example signature."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    payload = b'{"test": 2432232314}'
    verify_signed_headers(secret, headers, tolerance_seconds=300, now=1614265330, payload=payload)
