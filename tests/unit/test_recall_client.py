"""framesink_core.meeting.recall's HTTP client against a fake Recall over real HTTP on loopback."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import datetime, timezone

import pytest

from fake_recall import API_KEY, fake_recall  # noqa: F401  (fixture)
from framesink_core.meeting.recall import (
    API_KEY_PLACEHOLDER,
    BotRequest,
    RecallClient,
    RecallError,
    _retry_after,
    base_url_for,
    bot_status,
    create_bot_body,
    endpoint_url_with_token,
    redact_token,
    without_token,
)

WS = "wss://abc123.execute-api.us-east-1.amazonaws.com/live"


def client(server, waits=None, **kwargs) -> RecallClient:
    """A client whose waits are recorded, not slept: the tests see what Recall asked for."""
    kwargs.setdefault("sleep", (waits if waits is not None else []).append)
    return RecallClient(lambda: API_KEY, server.url, **kwargs)


def body(events=("video_separate_png.data",), form="flat") -> dict:
    request = BotRequest.from_json({"meeting_url": "https://zoom.us/j/123?pwd=x", "events": list(events)})
    return create_bot_body(request, endpoint_url_with_token(WS, "tok"), form)


def test_create_bot_sends_exact_body_and_headers(fake_recall):
    request = BotRequest.from_json({
        "meeting_url": "https://meet.google.com/abc-defg-hij",
        "bot_name": "Frame Sink",
        "join_at": "2026-11-23T20:00:00+01:00",
        "metadata": {"team": "research"},
        "events": ["participant_events.join", "video_separate_png.data"],
    })
    sent = create_bot_body(request, endpoint_url_with_token(WS + "?stage=1", "t0k3n"))
    bot = client(fake_recall).create_bot(sent, idempotency_key="idem-1")

    [req] = fake_recall.requests
    assert (req.method, req.path) == ("POST", "/api/v1/bot/")
    assert req.body == {
        "meeting_url": "https://meet.google.com/abc-defg-hij",
        "bot_name": "Frame Sink",
        "join_at": "2026-11-23T19:00:00Z",
        "metadata": {"team": "research"},
        "recording_config": {
            "video_mixed_layout": "gallery_view_v2",
            "video_separate_png": {},
            "realtime_endpoints": [{
                "type": "websocket",
                "url": WS + "?stage=1&token=t0k3n",
                "events": ["video_separate_png.data", "participant_events.join"],
            }],
        },
    }
    assert req.headers["Authorization"] == f"Token {API_KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "idem-1"
    assert bot["id"] in fake_recall.bots


def test_nested_endpoint_form_and_defaults(fake_recall):
    client(fake_recall).create_bot(body(form="nested"))
    [req] = fake_recall.requests
    assert req.body["recording_config"]["realtime_endpoints"] == [
        {"type": "websocket", "config": {"url": WS + "?token=tok", "events": ["video_separate_png.data"]}}
    ]
    assert set(req.body) == {"meeting_url", "recording_config"}  # optional fields stay out
    uuid.UUID(req.headers["Idempotency-Key"])  # generated when not given


def test_429_waits_retry_after_then_succeeds_with_the_same_idempotency_key(fake_recall):
    fake_recall.queue(429, {"detail": "Request was throttled."}, {"Retry-After": "7"})
    waits = []
    bot = client(fake_recall, waits).create_bot(body())
    assert waits == [7.0]
    first, second = fake_recall.posts()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.body == second.body
    assert bot["id"] in fake_recall.bots


def test_507_waits_30_seconds_by_default_then_succeeds(fake_recall):
    fake_recall.queue(507, {"detail": "No bots available."})
    waits = []
    bot = client(fake_recall, waits, deadline_seconds=60).create_bot(body())
    assert waits == [30.0]
    assert len(fake_recall.posts()) == 2 and bot["id"] in fake_recall.bots


def test_507_retry_after_overrides_the_default(fake_recall):
    fake_recall.queue(507, {"detail": "No bots available."}, {"Retry-After": "3"})
    waits = []
    client(fake_recall, waits).create_bot(body())
    assert waits == [3.0]


def test_a_wait_beyond_the_deadline_gives_up_at_once_and_says_when_to_retry(fake_recall):
    fake_recall.queue(507, {"detail": "No bots available."})
    waits = []
    with pytest.raises(RecallError) as info:
        client(fake_recall, waits, deadline_seconds=25).create_bot(body())
    assert waits == [] and len(fake_recall.posts()) == 1
    assert (info.value.status, info.value.retry_after, info.value.gateway_status) == (507, 30.0, 503)
    assert "No bots available." in info.value.detail


def test_capped_waits_really_sleep_only_the_cap(fake_recall):
    """max_wait_seconds lets a test (or the CLI) honour a 30 s wait in a fraction of it."""
    fake_recall.queue(507, {"detail": "No bots available."})
    slept = []
    RecallClient(lambda: API_KEY, fake_recall.url, max_wait_seconds=0.01, sleep=slept.append).create_bot(body())
    assert slept == [0.01]


@pytest.mark.parametrize("status", [409, 502, 503, 504])
def test_transient_statuses_are_retried(fake_recall, status):
    fake_recall.queue(status, {"detail": "try again"})
    fake_recall.queue(status, {"detail": "try again"})
    waits = []
    bot = client(fake_recall, waits).create_bot(body())
    assert len(waits) == 2 and all(0 < w <= 8 for w in waits)
    keys = {r.headers["Idempotency-Key"] for r in fake_recall.posts()}
    assert len(fake_recall.posts()) == 3 and len(keys) == 1
    assert bot["id"] in fake_recall.bots


def test_retries_stop_after_max_attempts(fake_recall):
    for _ in range(5):
        fake_recall.queue(503, {"detail": "busy"})
    with pytest.raises(RecallError) as info:
        client(fake_recall, max_attempts=3).create_bot(body())
    assert len(fake_recall.posts()) == 3
    assert info.value.status == 503 and info.value.detail == "busy"


@pytest.mark.parametrize(
    "status, payload, reason, detail, gateway",
    [
        (400, {"meeting_url": ["Enter a valid URL."]}, "bad_request", '{"meeting_url": ["Enter a valid URL."]}', 400),
        (400, {"detail": "join_at must be in the future"}, "bad_request", "join_at must be in the future", 400),
        (401, {"detail": "Invalid token."}, "unauthorized", "Invalid token.", 502),
        (402, {"detail": "Your account is out of credits."}, "payment_required", "Your account is out of credits.", 502),
        (403, {"detail": "Request blocked: localhost URL"}, "forbidden", "Request blocked: localhost URL", 502),
    ],
)
def test_client_errors_surface_recalls_detail_without_retry(fake_recall, status, payload, reason, detail, gateway):
    fake_recall.queue(status, payload)
    waits = []
    with pytest.raises(RecallError) as info:
        client(fake_recall, waits).create_bot(body())
    exc = info.value
    assert (exc.status, exc.reason, exc.detail, exc.gateway_status) == (status, reason, detail, gateway)
    assert waits == [] and len(fake_recall.requests) == 1


def test_wrong_api_key_is_refused_by_recall_and_the_key_is_never_logged(fake_recall, caplog):
    fake_recall.queue(429, {"detail": "slow down"}, {"Retry-After": "1"})  # a retry log line
    wrong = "sk-wrong-" + uuid.uuid4().hex
    caplog.set_level("DEBUG")
    with pytest.raises(RecallError) as info:
        RecallClient(lambda: wrong, fake_recall.url, sleep=lambda s: None).create_bot(body())
    assert info.value.status == 401 and info.value.detail == "Invalid token."
    retries = [r for r in caplog.records if r.getMessage() == "recall retry"]
    assert [r.recall_status for r in retries] == [429]
    everything = json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert wrong not in everything and wrong not in str(info.value) and wrong not in repr(info.value)


def test_a_missing_or_placeholder_key_fails_before_any_request(fake_recall):
    for key in (None, "", API_KEY_PLACEHOLDER, json.dumps({"api_key": API_KEY_PLACEHOLDER, "nonce": "x"}), "{bad"):
        with pytest.raises(RecallError) as info:
            RecallClient(lambda k=key: k, fake_recall.url).create_bot(body())
        assert info.value.reason == "no_api_key" and info.value.gateway_status == 502
    assert fake_recall.requests == []


def test_the_secret_may_hold_the_bare_key_or_json(fake_recall):
    RecallClient(lambda: json.dumps({"api_key": API_KEY}), fake_recall.url).create_bot(body())
    RecallClient(lambda: f" {API_KEY}\n", fake_recall.url).create_bot(body())
    assert [r.headers["Authorization"] for r in fake_recall.requests] == [f"Token {API_KEY}"] * 2


def test_a_timeout_is_retried_with_the_same_key(fake_recall):
    fake_recall.queue(201, {"id": "never-seen"}, delay=3)  # answered after the client gave up
    bot = client(fake_recall, read_timeout=0.3, deadline_seconds=10).create_bot(body())
    first, second = fake_recall.posts()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert bot["id"] in fake_recall.bots and bot["id"] != "never-seen"


def test_a_server_that_never_answers_in_time_ends_in_a_timeout_error(fake_recall):
    for _ in range(3):
        fake_recall.queue(201, {"id": "late"}, delay=3)
    with pytest.raises(RecallError) as info:
        client(fake_recall, read_timeout=0.2, deadline_seconds=0.5, max_attempts=3).create_bot(body())
    assert (info.value.status, info.value.reason, info.value.gateway_status) == (None, "timeout", 504)


def test_an_unreachable_recall_is_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RecallError) as info:
        RecallClient(lambda: API_KEY, url, sleep=lambda s: None, max_attempts=2).create_bot(body())
    assert info.value.reason == "unreachable" and info.value.gateway_status == 502


def test_get_bot(fake_recall):
    bot = client(fake_recall).create_bot(body())
    fake_recall.bots[bot["id"]]["status_changes"] = [
        {"code": "joining_call", "created_at": "2026-11-23T19:00:00Z"},
        {"code": "in_call_recording", "created_at": "2026-11-23T19:00:05Z"},
    ]
    got = client(fake_recall).get_bot(bot["id"])
    assert got["id"] == bot["id"] and bot_status(got) == "in_call_recording"
    assert fake_recall.requests[-1].path == f"/api/v1/bot/{bot['id']}/"
    with pytest.raises(RecallError) as info:
        client(fake_recall).get_bot(str(uuid.uuid4()))
    assert (info.value.status, info.value.gateway_status, info.value.detail) == (404, 404, "Not found.")


def test_bot_status_forms():
    assert bot_status({"status_changes": []}) == "created"
    assert bot_status({"status": {"code": "done"}}) == "done"
    assert bot_status({"status": "fatal"}) == "fatal"


def test_retry_after_forms():
    assert _retry_after("12") == 12.0
    assert _retry_after("-3") == 0.0
    assert _retry_after("soon") is None and _retry_after(None) is None
    future = datetime.now(timezone.utc).timestamp() + 120
    date = datetime.fromtimestamp(future, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 100 < _retry_after(date) <= 120


def test_urls():
    assert base_url_for("eu-central-1") == "https://eu-central-1.recall.ai"
    with pytest.raises(ValueError, match="unknown Recall region"):
        base_url_for("mars-1")
    url = endpoint_url_with_token("wss://h/live?a=1&token=old", "new")
    assert url == "wss://h/live?a=1&token=new"
    assert redact_token(url) == "wss://h/live?a=1&token=REDACTED"
    assert without_token(url) == "wss://h/live?a=1" and without_token("ws://h/live?token=x") == "ws://h/live"
    for bad in ("https://h/live", "", "wss://"):
        with pytest.raises(ValueError):
            endpoint_url_with_token(bad, "t")


def test_event_groups_ask_recall_for_what_they_need():
    """create-bot --events: groups expand to their events, frames always first; the transcript
    turns on Recall's streaming provider in low-latency mode (its realtime events otherwise
    come 3-10 minutes late), audio the raw separate and mixed streams; by default what the stack
    stores (all four)."""
    from framesink_core.meeting.recall import DEFAULT_EVENTS, PARTICIPANT_EVENTS, BotRequest, create_bot_body

    default = create_bot_body(BotRequest.from_json({"meeting_url": "https://zoom.us/j/123"}), "wss://x/?token=t")
    config = default["recording_config"]
    assert config["realtime_endpoints"][0]["events"] == list(DEFAULT_EVENTS)
    assert DEFAULT_EVENTS[0] == "video_separate_png.data" and set(PARTICIPANT_EVENTS) <= set(DEFAULT_EVENTS)
    assert config["transcript"] == {"provider": {"recallai_streaming": {"mode": "prioritize_low_latency"}}}
    assert config["audio_separate_raw"] == {} and config["audio_mixed_raw"] == {}
    assert {"transcript.data", "audio_separate_raw.data", "audio_mixed_raw.data"} <= set(DEFAULT_EVENTS)
    only_video = create_bot_body(BotRequest.from_json({"meeting_url": "https://zoom.us/j/123", "events": ["video"]}),
                                 "wss://x/")
    assert only_video["recording_config"]["realtime_endpoints"][0]["events"] == ["video_separate_png.data"]
    assert "transcript" not in only_video["recording_config"]
    assert "audio_separate_raw" not in only_video["recording_config"]
    audio = create_bot_body(BotRequest.from_json({"meeting_url": "https://zoom.us/j/123",
                                                  "events": ["audio", "participant_events.join", "audio"]}), "wss://x/")
    assert audio["recording_config"]["realtime_endpoints"][0]["events"] == [
        "video_separate_png.data", "audio_separate_raw.data", "audio_mixed_raw.data", "participant_events.join"]
    assert audio["recording_config"]["audio_separate_raw"] == {} and audio["recording_config"]["audio_mixed_raw"] == {}
