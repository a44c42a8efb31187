"""Recall event parsing: both payload variants, other events, ids, timestamps and keys."""

import json
import math

import pytest

from framesink.synthetic import frame_event, make_png
from framesink_core.ingest.events import FRAME_EVENT, Frame, OtherEvent, Rejected, parse_message
from framesink_core.shared.schema import frame_key

MAX = 512 * 1024


@pytest.fixture(scope="module")
def png():
    return make_png(48, 32, seed=5, detailed=False)


def parse(event, max_bytes=MAX):
    return parse_message(json.dumps(event), max_bytes)


def test_frame_fields_and_contract_key(png):
    ev = frame_event(png, recording_id="rec-1", participant_id=100, relative=12.5,
                     name="Ada Lovelace", is_host=True, platform="desktop", bot_id="bot_9")
    frame = parse(ev)
    assert isinstance(frame, Frame)
    assert frame.png == png and (frame.width, frame.height) == (48, 32)
    assert frame.participant_id == "100" and frame.participant_name == "Ada Lovelace"
    assert frame.is_host is True and frame.platform == "desktop" and frame.bot_id == "bot_9"
    assert frame.absolute == "2026-11-23T19:00:12.500Z"
    assert frame.s3_key == "recordings/rec-1/participants/100/webcam/0000012500.png"


def test_newer_payload_with_email_and_null_bot_and_nulls(png):
    ev = frame_event(png, recording_id="r", participant_id=7, relative=0.0, name=None,
                     platform=None, with_email=True, frame_type="screenshare")
    assert ev["data"]["bot"] is None and "email" in ev["data"]["data"]["participant"]
    frame = parse(ev)
    assert frame.bot_id is None and frame.participant_name is None and frame.platform is None
    assert frame.s3_key == "recordings/r/participants/7/screenshare/0000000000.png"


def test_bot_absent_entirely(png):
    ev = frame_event(png, recording_id="r", participant_id=7, relative=1)
    del ev["data"]["bot"]
    assert parse(ev).bot_id is None


def test_string_participant_id_is_accepted(png):
    assert parse(frame_event(png, recording_id="r", participant_id="abc_-9", relative=1)).participant_id == "abc_-9"


@pytest.mark.parametrize(
    "relative, expected",
    [(0, "0000000000"), (0.001, "0000000001"), (12.5, "0000012500"), (3599.9994, "0003599999"),
     (86400.25, "0086400250")],
)
def test_relative_ms_is_rounded_and_padded(png, relative, expected):
    frame = parse(frame_event(png, recording_id="r", participant_id=1, relative=relative))
    assert frame.relative_ms == round(relative * 1000)
    assert frame.s3_key.endswith(f"/{expected}.png")


def test_keys_sort_in_time_order():
    keys = [frame_key("r", "1", "webcam", ms) for ms in (5, 40, 1000, 99999, 1234567)]
    assert keys == sorted(keys)


@pytest.mark.parametrize("name", ["participant_events.join", "transcript.data", "audio_mixed_raw.data"])
def test_known_other_events_are_acknowledged(name):
    """Not frames: handed on whole (the ingestor stores participant events and utterances,
    tests/unit/test_context_events.py), counted under their own name."""
    result = parse({"event": name, "data": {"data": {"words": []}}})
    assert result == OtherEvent(name) and result.metric_label == name and result.message["event"] == name


def test_unknown_event_counts_as_other():
    result = parse({"event": "something.new", "data": {}})
    assert isinstance(result, OtherEvent) and result.metric_label == "other"


def bad(png, mutate):
    ev = frame_event(png, recording_id="rec", participant_id=3, relative=2.0)
    mutate(ev)
    return ev


def _set(path, value):
    def mutate(ev):
        node = ev
        for part in path[:-1]:
            node = node[part]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return mutate


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (_set(["event"], KeyError), "missing_event"),
        (_set(["event"], 5), "missing_event"),
        (_set(["data"], KeyError), "missing_data"),
        (_set(["data", "data"], "x"), "missing_data"),
        (_set(["data", "data", "buffer"], KeyError), "missing_buffer"),
        (_set(["data", "data", "buffer"], "%%%not base64%%%"), "bad_base64"),
        (_set(["data", "data", "buffer"], "aGVsbG8gd29ybGQ="), "not_png"),
        (_set(["data", "recording"], None), "missing_recording"),
        (_set(["data", "recording", "id"], "../etc"), "bad_recording_id"),
        (_set(["data", "recording", "id"], "a/b"), "bad_recording_id"),
        (_set(["data", "recording", "id"], ""), "bad_recording_id"),
        (_set(["data", "recording", "id"], "x" * 129), "bad_recording_id"),
        (_set(["data", "data", "participant", "id"], 1.5), "bad_participant_id"),
        (_set(["data", "data", "participant", "id"], -1), "bad_participant_id"),
        (_set(["data", "data", "participant", "id"], True), "bad_participant_id"),
        (_set(["data", "data", "participant", "id"], "a b"), "bad_participant_id"),
        (_set(["data", "data", "participant", "id"], None), "bad_participant_id"),
        (_set(["data", "data", "participant"], KeyError), "missing_participant"),
        (_set(["data", "data", "timestamp", "relative"], -0.5), "bad_timestamp"),
        (_set(["data", "data", "timestamp", "relative"], "12"), "bad_timestamp"),
        (_set(["data", "data", "timestamp", "relative"], 1e12), "bad_timestamp"),
        (_set(["data", "data", "timestamp"], KeyError), "bad_timestamp"),
        (_set(["data", "data", "type"], "audio"), "bad_type"),
        (_set(["data", "bot"], {"id": "bot/../x"}), "bad_bot_id"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason(png, mutate, reason):
    with pytest.raises(Rejected) as err:
        parse(bad(png, mutate))
    assert err.value.reason == reason and err.value.detail


def test_nan_infinity_and_overflowing_timestamps_are_rejected(png):
    # NaN and Infinity are not JSON, and a literal that overflows a double is refused by the
    # parser too (orjson), so all are not_json; a finite number past the key range is a
    # bad_timestamp, checked before it is multiplied (1e306 * 1000 would be inf).
    for value, reason in (("NaN", "not_json"), ("Infinity", "not_json"), ("-Infinity", "not_json"),
                          ("1" * 400, "not_json"), ("1e999", "not_json"), ("1e306", "bad_timestamp"),
                          ("9999999.9996", "bad_timestamp"), ("18446744073709551616", "bad_timestamp")):
        text = json.dumps(frame_event(png, recording_id="r", participant_id=1, relative=1.0))
        text = text.replace('"relative": 1.0', f'"relative": {value}')
        with pytest.raises(Rejected) as err:
            parse_message(text, MAX)
        assert err.value.reason == reason, value
    assert parse(frame_event(png, recording_id="r", participant_id=1, relative=9999999.999)).relative_ms == 9999999999
    assert not math.isnan(parse(frame_event(png, recording_id="r", participant_id=1, relative=1.0)).relative_ms)


def test_not_json_not_object_and_binary():
    for body, reason in (("{nope", "not_json"), ("[1,2]", "not_json_object"), (b"\x89PNG", "binary_message")):
        with pytest.raises(Rejected) as err:
            parse_message(body, MAX)
        assert err.value.reason == reason


def test_frame_over_max_bytes_is_rejected_before_and_after_decoding(png):
    ev = frame_event(png, recording_id="r", participant_id=1, relative=1)
    with pytest.raises(Rejected) as err:
        parse(ev, max_bytes=len(png) - 1)
    assert err.value.reason == "frame_too_large"
    assert parse(ev, max_bytes=len(png)).png == png


def test_truncated_png_is_rejected(png):
    import base64

    ev = frame_event(png, recording_id="r", participant_id=1, relative=1)
    ev["data"]["data"]["buffer"] = base64.b64encode(png[: len(png) // 2]).decode()
    with pytest.raises(Rejected) as err:
        parse(ev)
    assert err.value.reason == "truncated_png"


def test_rejection_context_names_the_ids(png):
    ev = frame_event(png, recording_id="rec", participant_id=3, relative=-1)
    with pytest.raises(Rejected) as err:
        parse(ev)
    assert err.value.context == {"recording_id": "rec", "participant_id": "3"}
    assert FRAME_EVENT == ev["event"]
