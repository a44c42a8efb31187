"""Issue 2, point 6: every kind of bad input is rejected with one structured log line naming
the reason and a metric; the handler returns normally and a good frame right after is stored."""

import base64
import json

import pytest

from conftest import TOKEN, ws_event
from framesink.synthetic import frame_event, make_png
from framesink_handlers import connect, ingest

PNG = make_png(24, 16, seed=9, detailed=False)
MAX_FRAME_BYTES = 512 * 1024  # the stack fixture's setting


def event(**changes):
    ev = frame_event(PNG, recording_id="rec-bad", participant_id=100, relative=3.0)
    for path, value in changes.items():
        node = ev
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return json.dumps(ev)


def big_png(min_bytes):
    """A valid PNG over min_bytes (noise does not compress)."""
    side = 64
    while True:
        data = make_png(side, side, seed=side, detailed=True)
        if len(data) > min_bytes:
            return data
        side *= 2


BAD_INPUTS = {
    "not_json": ("not json at all {", False),
    "missing_event": (json.dumps({"data": {}}), False),
    "missing_buffer": (event(data__data__buffer=KeyError), False),
    "bad_base64": (event(data__data__buffer="!!!!not-base64!!!!"), False),
    "not_png": (event(data__data__buffer=base64.b64encode(b"GIF89a" + bytes(64)).decode()), False),
    "truncated_png": (event(data__data__buffer=base64.b64encode(PNG[:-30]).decode()), False),
    "bad_recording_id": (event(data__recording__id="../../etc/passwd"), False),
    "bad_recording_id_slash": (event(data__recording__id="rec/1"), False),
    "bad_participant_id": (event(data__data__participant__id={"x": 1}), False),
    "bad_participant_id_float": (event(data__data__participant__id=1.25), False),
    "bad_timestamp": (event(data__data__timestamp__relative=-1.0), False),
    "bad_timestamp_nan": (event().replace('"relative": 3.0', '"relative": NaN'), False),
    "frame_too_large": (None, False),
    "binary_message": (base64.b64encode(b"\x00\x01binary").decode(), True),
}
EXPECTED_REASON = {
    "bad_recording_id_slash": "bad_recording_id",
    "bad_participant_id_float": "bad_participant_id",
    "bad_timestamp_nan": "not_json",  # NaN is not JSON (RFC 8259); orjson refuses it
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_rejected_and_the_next_good_frame_is_stored(case, stack, aws, lambda_context, caplog_json):
    body, binary = BAD_INPUTS[case]
    if case == "frame_too_large":
        too_big = big_png(stack.max_frame_bytes)
        body = json.dumps(frame_event(too_big, recording_id="rec-bad", participant_id=100, relative=3.0))
    assert connect.handler(ws_event("$connect", "conn-bad", query={"token": TOKEN}), lambda_context)["statusCode"] == 200
    caplog_json()  # discard the connect lines

    response = ingest.handler(ws_event("$default", "conn-bad", body=body, binary=binary), lambda_context)
    assert response == {"statusCode": 200, "body": "rejected"}  # returned normally: the connection stays
    lines = caplog_json()
    rejections = [l for l in lines if l.get("message") == "message rejected"]
    reason = EXPECTED_REASON.get(case, case)
    assert len(rejections) == 1, rejections
    assert rejections[0]["reason"] == reason and rejections[0]["detail"]
    assert rejections[0]["level"] == "WARNING" and rejections[0]["connection_id"] == "conn-bad"
    metrics = [l for l in lines if "MessageRejected" in l]
    assert [(m["reason"], m["MessageRejected"]) for m in metrics] == [(reason, [1.0])]
    assert aws["s3"].list_objects_v2(Bucket=stack.bucket)["KeyCount"] == 0

    good = frame_event(PNG, recording_id="rec-bad", participant_id=100, relative=4.0)
    assert ingest.handler(ws_event("$default", "conn-bad", body=json.dumps(good)), lambda_context)["body"] == "stored"
    key = "recordings/rec-bad/participants/100/webcam/0000004000.png"
    assert aws["s3"].get_object(Bucket=stack.bucket, Key=key)["Body"].read() == PNG
