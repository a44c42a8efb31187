"""The meeting's context (framesink_core/ingest/context_events.py) through the ingest core over
moto: participant events and final transcript utterances parsed from the documented shapes
(negative times, optional fields missing), hostile variants refused with a reason or cut to
their bounds, redeliveries idempotent, a deleted recording's events refused; and the queries
(speaker timeline, transcript range, who was speaking at t, talk time) and the CLI."""

from __future__ import annotations

import json
import time

import pytest

from framesink.synthetic import participant_event_message, spoken, transcript_message
from framesink_core.ingest.context_events import (
    MAX_UTTERANCE_BYTES,
    MAX_WORD_BYTES,
    MAX_WORDS,
    ParticipantEvent,
    Utterance,
    parse_context,
)
from framesink_core.ingest.events import Rejected
from framesink_core.ingest.tombstones import write_tombstone
from framesink_core.read.query import FrameIndex
from framesink_core.service import Service


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


@pytest.fixture
def index(svc):
    return FrameIndex(svc.settings.table, svc.dynamodb)


def parsed(message: str):
    body = json.loads(message)
    return parse_context(body, body["event"])


def test_documented_shapes_parse_with_negative_times_and_missing_optional_fields():
    join = parsed(participant_event_message("join", recording_id="r1", participant_id=12, relative=-3.25))
    assert join == ParticipantEvent("r1", "12", "Ada Lovelace", "join", -3250, "2026-11-23T18:59:56.750Z", None, None)
    chat = parsed(participant_event_message("chat_message", recording_id="r1", participant_id=12, relative=5,
                                            text="slides are up", name=None))
    assert (chat.kind, chat.text, chat.participant_name) == ("chat_message", "slides are up", None)
    words = [("so", 1.0, 1.2), ("this", 1.3, None), ("works", 1.6, 2.0)]  # an end_timestamp may be null
    utterance = parsed(transcript_message(words, recording_id="r1", participant_id="12"))
    assert utterance == Utterance("r1", "12", "Ada Lovelace", 1000, 2000, "so this works", 3, None)


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m["data"]["data"].pop("participant"), "missing_participant"),
    (lambda m: m["data"]["data"]["participant"].update(id="bad id!"), "bad_participant_id"),
    (lambda m: m["data"]["recording"].update(id="x" * 200), "bad_recording_id"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=float("inf")), "bad_timestamp"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=-90_000.0), "bad_timestamp"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=True), "bad_timestamp"),
    (lambda m: m["data"]["data"]["timestamp"].update(absolute="yesterday"), "bad_timestamp"),
    (lambda m: m["data"].update(data="not an object"), "missing_data"),
])
def test_hostile_participant_events_are_refused_with_a_reason(mutate, reason):
    message = json.loads(participant_event_message("speech_on", recording_id="r", participant_id=1, relative=1))
    mutate(message)
    with pytest.raises(Rejected) as refused:
        parse_context(message, message["event"])
    assert refused.value.reason == reason


def test_hostile_transcripts_are_refused_or_cut_to_their_bounds():
    too_many = json.loads(transcript_message([("w", 0.0, 0.1)] * (MAX_WORDS + 1), recording_id="r", participant_id=1))
    with pytest.raises(Rejected, match="over 5000"):
        parse_context(too_many, "transcript.data")
    for words in ([], [{"text": "x"}], ["not an object"], [{"start_timestamp": {"relative": 1}}]):
        message = json.loads(transcript_message([("a", 0, 1)], recording_id="r", participant_id=1))
        message["data"]["data"]["words"] = words
        with pytest.raises(Rejected) as refused:
            parse_context(message, "transcript.data")
        assert refused.value.reason in ("bad_transcript", "bad_timestamp")
    # the most words, each far over its bound: cut, never refused, linear in the message
    huge = [("é" * 10_000, n / 10, n / 10 + 0.05) for n in range(MAX_WORDS)]
    started = time.perf_counter()
    cut = parsed(transcript_message(huge, recording_id="r", participant_id=1))
    assert time.perf_counter() - started < 30  # a hang guard, not a timing goal
    assert cut.words == MAX_WORDS and len(cut.text.encode()) <= MAX_UTTERANCE_BYTES
    assert all(len(w.encode()) <= MAX_WORD_BYTES for w in cut.text.split())
    assert (cut.start_ms, cut.end_ms) == (0, round((MAX_WORDS - 1) / 10 * 1000 + 50))


def meeting(svc, rec: str) -> list[str]:
    """Ada speaks, then Grace (who joined before the recording started), then Ada again."""
    messages = [
        participant_event_message("join", recording_id=rec, participant_id=2, relative=-4.0, name="Grace Hopper"),
        participant_event_message("join", recording_id=rec, participant_id=1, relative=0.0),
        participant_event_message("speech_on", recording_id=rec, participant_id=1, relative=1.0),
        transcript_message(spoken("welcome to the review", 1.0), recording_id=rec, participant_id=1),
        participant_event_message("speech_off", recording_id=rec, participant_id=1, relative=2.5),
        participant_event_message("speech_on", recording_id=rec, participant_id=2, relative=3.0, name="Grace Hopper"),
        transcript_message(spoken("the chart shows growth", 3.0), recording_id=rec, participant_id=2,
                           name="Grace Hopper"),
        participant_event_message("chat_message", recording_id=rec, participant_id=2, relative=4.0,
                                  name="Grace Hopper", text="link in chat"),
        participant_event_message("speech_off", recording_id=rec, participant_id=2, relative=5.0, name="Grace Hopper"),
        participant_event_message("speech_on", recording_id=rec, participant_id=1, relative=6.0),
        transcript_message(spoken("thanks", 6.0), recording_id=rec, participant_id=1, partial=True),  # not stored
    ]
    return [svc.ingestor.handle(m, connection_id="c").status for m in messages]


def test_a_meeting_gives_its_timeline_transcript_and_talk_time(svc, index):
    statuses = meeting(svc, "rec-ctx")
    assert statuses == ["recorded"] * 10 + ["ignored"]
    events = index.participant_events("rec-ctx")
    assert [(e["relative_ms"], e["participant_id"], e["event"]) for e in events][:2] == [(-4000, "2", "join"),
                                                                                        (0, "1", "join")]
    assert [e["text"] for e in events if e["event"] == "chat_message"] == ["link in chat"]
    assert index.speaker_timeline("rec-ctx") == [
        {"participant_id": "1", "participant_name": "Ada Lovelace", "start_ms": 1000, "end_ms": 2500, "source": "speech"},
        {"participant_id": "2", "participant_name": "Grace Hopper", "start_ms": 3000, "end_ms": 5000, "source": "speech"},
        {"participant_id": "1", "participant_name": "Ada Lovelace", "start_ms": 6000, "end_ms": None, "source": "speech"},
    ]
    assert [s["participant_id"] for s in index.speaking_at("rec-ctx", 4000)] == ["2"]
    assert index.speaking_at("rec-ctx", 2700) == []
    assert index.talk_time("rec-ctx") == {"1": 1500, "2": 2000}
    assert [u["text"] for u in index.transcript("rec-ctx")] == ["welcome to the review", "the chart shows growth"]
    assert [u["text"] for u in index.transcript("rec-ctx", since=2000, until=4000)] == ["the chart shows growth"]
    # a redelivery of the whole meeting changes nothing
    meeting(svc, "rec-ctx")
    assert len(index.participant_events("rec-ctx")) == len(events) and len(index.transcript("rec-ctx")) == 2


def test_without_speech_events_the_transcript_stands_in(svc, index):
    svc.ingestor.handle(transcript_message(spoken("only words here", 2.0), recording_id="rec-tr", participant_id=5))
    assert index.speaker_timeline("rec-tr") == [{"participant_id": "5", "participant_name": "Ada Lovelace",
                                                 "start_ms": 2000, "end_ms": 2840, "source": "transcript"}]


def test_a_deleted_recordings_events_are_refused(svc, index, caplog_json):
    write_tombstone(svc.dynamodb, svc.settings.table, "rec-del")
    from framesink_core.ingest.tombstones import DeletedRecordings

    svc.ingestor.deleted = DeletedRecordings(svc.dynamodb, svc.settings.table)
    outcome = svc.ingestor.handle(participant_event_message("join", recording_id="rec-del", participant_id=1,
                                                            relative=0))
    assert (outcome.status, outcome.reason) == ("rejected", "recording_deleted")
    assert index.participant_events("rec-del") == []


def test_the_lambda_path_records_them(stack, aws, lambda_context):
    from conftest import TOKEN, ws_event
    from framesink_handlers import connect, ingest

    connect.handler(ws_event("$connect", "c9", query={"token": TOKEN}), lambda_context)
    body = participant_event_message("speech_on", recording_id="rec-lambda", participant_id=3, relative=1.5)
    assert ingest.handler(ws_event("$default", "c9", body=body), lambda_context) == {"statusCode": 200,
                                                                                     "body": "recorded"}
    (event,) = FrameIndex(stack.table, aws["dynamodb"]).participant_events("rec-lambda")
    assert (event["event"], event["relative_ms"]) == ("speech_on", 1500)


def test_the_cli_prints_timeline_and_transcript(svc, stack, capsys, monkeypatch):
    from framesink.cli import main

    meeting(svc, "rec-cli")
    monkeypatch.setenv("FRAMESINK_TABLE", stack.table)
    monkeypatch.setenv("FRAMESINK_BUCKET", stack.bucket)
    assert main(["timeline", "--recording", "rec-cli"]) == 0
    out = capsys.readouterr().out
    assert "Grace Hopper" in out and "talk time: 2 2.0 s, 1 1.5 s" in out
    assert main(["transcript", "--recording", "rec-cli", "--since", "2000"]) == 0
    out = capsys.readouterr().out
    assert "Grace Hopper: the chart shows growth" in out and "welcome" not in out
    assert main(["timeline", "--recording", "rec-cli", "--events", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8  # 2 joins, 3 speech_on, 2 speech_off, a chat
    assert main(["transcript", "--recording", "nothing-here"]) == 1


def test_a_participants_frames_while_speaking(svc, index, stack, capsys, monkeypatch):
    from framesink.cli import main
    from framesink.synthetic import frame_message, make_png

    meeting(svc, "rec-speak")  # Ada (1) speaks 1.0-2.5 s and from 6.0 s on
    for k in range(16):  # a frame of Ada every 0.5 s, 0-7.5 s
        assert svc.ingestor.handle(frame_message(make_png(16, 12, seed=k, detailed=False), recording_id="rec-speak",
                                                 participant_id=1, relative=k / 2)).stored
    shown = [f["relative_ms"] for f in index.frames_while_speaking("rec-speak", "1")]
    assert shown == [1000, 1500, 2000, 6000, 6500, 7000, 7500]
    # Ada's frames while Grace (2) spoke, 3.0-5.0 s: how she reacted
    assert [f["relative_ms"] for f in index.frames_while_speaking("rec-speak", "1", speaker="2")] == [
        3000, 3500, 4000, 4500]
    monkeypatch.setenv("FRAMESINK_TABLE", stack.table)
    monkeypatch.setenv("FRAMESINK_BUCKET", stack.bucket)
    assert main(["frames", "--recording", "rec-speak", "--participant", "1", "--speaking"]) == 0
    assert "7 frames while speaking" in capsys.readouterr().out
    assert main(["frames", "--recording", "rec-speak", "--speaking"]) == 1
