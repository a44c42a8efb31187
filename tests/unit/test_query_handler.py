"""Query Lambda (HTTP API, IAM auth): routes, 400/404, presigned URLs that download the frame."""

import json

import pytest
import requests
from conftest import api_event as http_event

from framesink.synthetic import frame_message, make_png
from framesink_core.service import Service


@pytest.fixture
def stored(stack, aws):
    svc = Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])
    pngs = {}
    for ms in range(0, 2500, 500):
        for pid, name in ((7, 'Zoë "Z" 山田'), (8, None)):
            png = make_png(20, 10, seed=ms + pid, detailed=False)
            pngs[(str(pid), ms)] = png
            assert svc.ingestor.handle(frame_message(png, recording_id="rec-h", participant_id=pid,
                                                     relative=ms / 1000, name=name)).stored
    return pngs


def call(lambda_context, path, query=None):
    from framesink_handlers.query import handler

    response = handler(http_event(path, query), lambda_context)
    return response["statusCode"], json.loads(response["body"])


def test_participants(stored, lambda_context):
    status, body = call(lambda_context, "/recordings/rec-h/participants")
    assert status == 200 and body["recording_id"] == "rec-h"
    parts = {p["participant_id"]: p for p in body["participants"]}
    assert parts["7"]["participant_name"] == 'Zoë "Z" 山田' and parts["8"]["participant_name"] is None
    assert parts["7"]["frame_count"] == 5 and (parts["7"]["first_ms"], parts["7"]["last_ms"]) == (0, 2000)


def test_frames_pages_with_presigned_urls_that_download_the_bytes(stored, lambda_context, monkeypatch):
    monkeypatch.setenv("FRAMESINK_PRESIGN_EXPIRY_SECONDS", "300")
    from framesink_handlers import _runtime

    _runtime.service.cache_clear()
    got, cursor, pages = [], None, 0
    while True:
        query = {"participant": "7", "since": "500", "until": "2000", "limit": "2"}
        if cursor:
            query["cursor"] = cursor
        status, body = call(lambda_context, "/recordings/rec-h/frames", query)
        assert status == 200 and body["url_expires_in"] == 300
        got += body["frames"]
        pages += 1
        cursor = body["cursor"]
        if not cursor:
            break
    assert [f["relative_ms"] for f in got] == [500, 1000, 1500] and pages == 2
    for frame in got:
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in frame["url"] and "X-Amz-Expires=300" in frame["url"]
        # moto's mock answers requests' HTTP calls (test_query_cli.py downloads over real HTTP)
        assert requests.get(frame["url"], timeout=10).content == stored[("7", frame["relative_ms"])]


def test_type_filter_and_empty_window(stored, lambda_context):
    status, body = call(lambda_context, "/recordings/rec-h/frames", {"type": "screenshare"})
    assert status == 200 and body["frames"] == [] and body["cursor"] is None  # known, but no screenshare
    status, body = call(lambda_context, "/recordings/rec-h/frames", {"since": "2000", "until": "2001"})
    assert status == 200 and {(f["participant_id"], f["relative_ms"]) for f in body["frames"]} == {
        ("7", 2000), ("8", 2000)}


@pytest.mark.parametrize("path, query, param", [
    ("/recordings/bad.id/frames", None, "recording"),
    ("/recordings/rec-h/frames", {"participant": "x y"}, "participant"),
    ("/recordings/rec-h/frames", {"type": "audio"}, "type"),
    ("/recordings/rec-h/frames", {"since": "-5"}, "since"),
    ("/recordings/rec-h/frames", {"until": "1e3"}, "until"),
    ("/recordings/rec-h/frames", {"limit": "5000"}, "limit"),
    ("/recordings/rec-h/frames", {"cursor": "garbage"}, "cursor"),
    ("/recordings/rec-h/frames", {"partcipant": "7"}, "partcipant"),
    ("/recordings/bad.id/participants", None, "recording"),
])
def test_bad_parameters_are_400_with_a_log_line_and_metric(stored, lambda_context, caplog_json, path, query, param):
    caplog_json()  # drop what ingest printed
    status, body = call(lambda_context, path, query)
    assert status == 400 and body["param"] == param and param in body["message"]
    lines = caplog_json()
    [log] = [line for line in lines if line.get("message") == "query rejected"]
    assert log["param"] == param and log["reason"] in ("bad_parameter", "bad_cursor", "unknown_parameter")
    assert any(line.get("QueryRejected") == [1.0] and line.get("reason") == log["reason"] for line in lines)


@pytest.mark.parametrize("path", ["/recordings/nope/participants", "/recordings/nope/frames"])
def test_unknown_recording_is_404(stored, lambda_context, path):
    status, body = call(lambda_context, path)
    assert status == 404 and "nope" in body["message"]


def test_unknown_route_is_404(stored, lambda_context):
    status, _ = call(lambda_context, "/recordings/rec-h/nothing-here")
    assert status == 404


def test_recording_route_gives_status_participants_and_exports(stored, lambda_context):
    status, body = call(lambda_context, "/recordings/rec-h")
    assert status == 200
    assert body["recording_id"] == "rec-h" and body["participants"]
    assert body["bot"] is None and body["exports"] == [] and body["meta"]["recording_id"] == "rec-h"


def test_unknown_recording_route_is_404(stored, lambda_context):
    status, body = call(lambda_context, "/recordings/nope")
    assert status == 404 and "nope" in body["message"]


def test_timeline_and_transcript_routes(stored, stack, aws, lambda_context):
    from framesink.synthetic import participant_event_message, spoken, transcript_message

    svc = Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])
    for message in (participant_event_message("speech_on", recording_id="rec-q", participant_id=7, relative=1),
                    participant_event_message("speech_off", recording_id="rec-q", participant_id=7, relative=3),
                    transcript_message(spoken("good morning", 1.0), recording_id="rec-q", participant_id=7)):
        assert svc.ingestor.handle(message).status == "recorded"
    status, body = call(lambda_context, "/recordings/rec-q/timeline")
    assert status == 200 and body["talk_ms"] == {"7": 2000}
    assert [(s["start_ms"], s["end_ms"]) for s in body["segments"]] == [(1000, 3000)]
    events = call(lambda_context, "/recordings/rec-q/timeline", {"events": "true"})[1]["events"]
    assert [e["event"] for e in events] == ["speech_on", "speech_off"]
    body = call(lambda_context, "/recordings/rec-q/transcript", {"since": "0", "until": "2000"})[1]
    assert [u["text"] for u in body["utterances"]] == ["good morning"]
    assert call(lambda_context, "/recordings/rec-q/transcript", {"speaker": "7"})[0] == 400
    assert call(lambda_context, "/recordings/rec-q/timeline", {"events": "maybe"})[0] == 400
    assert call(lambda_context, "/recordings/nothing/transcript")[0] == 404
