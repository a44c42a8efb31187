"""Fuzzing the ingest entry point (``Ingestor.handle`` and the ``$default`` Lambda handler).

Inputs: arbitrary bytes and text, arbitrary JSON, and valid Recall events
(framesink.synthetic.frame_event) mutated at random: keys deleted, values replaced by any
JSON (NaN and Infinity included), the base64 buffer truncated, salted with a bad character,
inflated past the maximum frame, or carrying a PNG with one byte flipped.

Properties: nothing raises; every outcome that is not "stored" is a rejection with a reason
or an acknowledged non-frame event, and writes nothing; damage to a frame's bytes is always
caught; a stored frame is in S3 byte for byte and in the index; and every valid frame among
the noise is stored exactly once (S3 objects, index items and the participant's count).

Example counts are modest so the suite stays fast. For a long run:
``FRAMESINK_FUZZ_PROFILE=long .venv/bin/pytest tests/test_fuzz.py`` (40x the examples).
"""

from __future__ import annotations

import base64
import json
import os
import string
import uuid
from types import SimpleNamespace

import boto3
import pytest
from conftest import REGION, TOKEN, LambdaContext, ws_event
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from moto import mock_aws

from framesink.local.aws import provision
from framesink.synthetic import frame_event, make_png
from framesink_core.shared import schema
from framesink_core.shared.items import BOTO_CONFIG, from_item, to_item
from framesink_core.shared.settings import Settings
from framesink_handlers import _runtime, connect, ingest

PROFILES = {"ci": 1, "long": 40}
SCALE = PROFILES[os.environ.get("FRAMESINK_FUZZ_PROFILE", "ci")]
MAX_FRAME_BYTES = 16 * 1024


def fuzz(examples: int):
    return settings(
        max_examples=examples * SCALE,
        deadline=None,  # moto calls make example times uneven; speed is not what is tested here
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def env():
    """One moto-backed stack for the module (hypothesis runs many examples per test)."""
    with mock_aws(), pytest.MonkeyPatch.context() as mp:
        clients = {name: boto3.client(name, region_name=REGION, config=BOTO_CONFIG)
                   for name in ("s3", "dynamodb", "secretsmanager")}
        bucket, table = f"fuzz-{uuid.uuid4().hex[:8]}", "framesink-fuzz"
        secret_env = provision(s3=clients["s3"], dynamodb=clients["dynamodb"],
                               secretsmanager=clients["secretsmanager"], bucket=bucket, table=table,
                               token=TOKEN, token_secret_name=f"fuzz/{bucket}")
        settings_ = Settings(bucket=bucket, table=table, max_frame_bytes=MAX_FRAME_BYTES, totals_flush_seconds=0,
                             token_secret_id=secret_env["FRAMESINK_TOKEN_SECRET_ID"])
        for key, value in settings_.as_env().items():
            mp.setenv(key, value)
        _runtime.service.cache_clear()
        context = LambdaContext()
        assert connect.handler(ws_event("$connect", "conn-fuzz", query={"token": TOKEN}), context)["statusCode"] == 200
        try:
            yield SimpleNamespace(s3=clients["s3"], ddb=clients["dynamodb"], settings=settings_,
                                  service=_runtime.service(), context=context)
        finally:
            _runtime.service.cache_clear()


def object_count(env) -> int:
    pages = env.s3.get_paginator("list_objects_v2").paginate(Bucket=env.settings.bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


def handle(env, body: str | bytes):
    return env.service.ingestor.handle(body, connection_id="conn-fuzz")


def via_lambda(env, body: str | bytes) -> dict:
    if isinstance(body, bytes):  # API Gateway hands binary frames to $default base64-encoded
        event = ws_event("$default", "conn-fuzz", body=base64.b64encode(body).decode(), binary=True)
    else:
        event = ws_event("$default", "conn-fuzz", body=body)
    return ingest.handler(event, env.context)


# --- strategies -----------------------------------------------------------------------------

PNGS = [make_png(w, h, seed=s, detailed=False) for s, (w, h) in enumerate([(8, 8), (33, 17), (64, 48), (1, 1)])]
IDS = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=24)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=24))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                          max_size=4), max_leaves=12)
BUFFER_PATH = ("data", "data", "buffer")


@st.composite
def valid_events(draw, recording_id: str | None = None, relative: float | None = None):
    png = draw(st.sampled_from(PNGS))
    event = frame_event(
        png,
        recording_id=recording_id or draw(IDS),
        participant_id=draw(st.integers(0, 10**12) | IDS),
        relative=relative if relative is not None else draw(st.floats(0, 10**6)),
        frame_type=draw(st.sampled_from(schema.FRAME_TYPES)),
        name=draw(st.none() | st.text(max_size=40)),
        is_host=draw(st.booleans()),
        platform=draw(st.none() | st.sampled_from(["desktop", "mobile_app", "unknown"])),
        bot_id=draw(st.none() | IDS),
        with_email=draw(st.booleans()),
    )
    return event, png


def paths(value, prefix=()):
    """Every key path into a JSON value (dict keys and list indices), root excluded."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


def _parent(event, path):
    for key in path[:-1]:
        event = event[key]
    return event


@st.composite
def mutated_events(draw, recording_id: str | None = None):
    """A valid event with 1-3 mutations; ``damaged`` says whether the frame's bytes were hit."""
    event, png = draw(valid_events(recording_id))
    damaged = False
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "replace", "replace", "buffer"]))
        buffer_intact = isinstance(_get(event, BUFFER_PATH), str)
        if op == "buffer" and buffer_intact:
            buffer = _get(event, BUFFER_PATH)
            how = draw(st.sampled_from(["truncate", "bad_char", "flip", "oversize"]))
            if how == "truncate":
                buffer = buffer[: draw(st.integers(0, max(0, len(buffer) - 1)))]
            elif how == "bad_char":
                at = draw(st.integers(0, len(buffer)))
                buffer = buffer[:at] + draw(st.sampled_from(list("!*. \n\x00é"))) + buffer[at:]
            elif how == "flip":  # of the frame's own bytes, whatever happened to the buffer before
                raw = bytearray(png)
                raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
                buffer = base64.b64encode(bytes(raw)).decode()
            else:
                buffer = base64.b64encode(png + bytes(MAX_FRAME_BYTES)).decode()
            _parent(event, BUFFER_PATH)[BUFFER_PATH[-1]] = buffer
            damaged = True
            continue
        candidates = list(paths(event))
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        if path[: len(BUFFER_PATH)] == BUFFER_PATH[: len(path)]:
            damaged = True  # the buffer (or an object holding it) is deleted or replaced
        parent = _parent(event, path)
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return event, damaged


def _get(event, path):
    for key in path:
        if not isinstance(event, dict) or key not in event:
            return None
        event = event[key]
    return event


def dumps(draw, event) -> str:
    return json.dumps(event, ensure_ascii=draw(st.booleans()))


# --- properties -----------------------------------------------------------------------------

NOT_STORED = {"rejected", "ignored"}


@fuzz(100)
@given(body=st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bytes_and_text_are_rejected_or_acknowledged(env, body):
    before = object_count(env)
    outcome = handle(env, body)
    assert outcome.status in NOT_STORED and outcome.reason
    response = via_lambda(env, body)
    assert response == {"statusCode": 200, "body": outcome.status}
    assert object_count(env) == before


@fuzz(100)
@given(value=JSON | st.fixed_dictionaries({"event": st.just("video_separate_png.data") | JSON},
                                          optional={"data": JSON}))
def test_arbitrary_json_is_rejected_or_acknowledged(env, value):
    before = object_count(env)
    outcome = handle(env, json.dumps(value))
    assert outcome.status in NOT_STORED and outcome.reason
    assert object_count(env) == before


@fuzz(150)
@given(data=st.data())
def test_mutated_events_never_raise_and_damaged_frames_never_store(env, data):
    event, damaged = data.draw(mutated_events())
    body = dumps(data.draw, event)
    before = object_count(env)
    outcome = handle(env, body)
    note(f"outcome: {outcome.status} {outcome.reason}")
    assert outcome.status in NOT_STORED | {"stored", "duplicate"}
    if damaged:  # rejected, or acknowledged if the event name was hit too: never stored
        assert outcome.status in NOT_STORED
    if outcome.status in NOT_STORED:
        assert outcome.reason and object_count(env) == before
    else:
        stored = env.s3.get_object(Bucket=env.settings.bucket, Key=outcome.key)["Body"].read()
        assert stored == outcome.frame.png and outcome.frame.png in PNGS
        f = outcome.frame
        item = from_item(env.ddb.get_item(TableName=env.settings.table, Key=to_item(
            schema.frame_item_key(f.recording_id, f.participant_id, f.frame_type, f.relative_ms)))["Item"])
        assert schema.frame_key(item["recording_id"], item["participant_id"], item["type"],
                                int(item["relative_ms"])) == outcome.key
        assert object_count(env) == before + (outcome.status == "stored")


@st.composite
def noisy_streams(draw):
    """A recording's valid frames (some delivered twice) shuffled into noise."""
    recording_id = f"fuzz-{uuid.uuid4().hex}"  # no noise can produce it by chance
    pid = draw(st.integers(0, 10**6))
    count = draw(st.integers(1, 6))
    frames = []
    for k in range(count):
        event, png = draw(valid_events(recording_id, relative=k * 0.5 + draw(st.integers(0, 400)) / 1000))
        event["data"]["data"]["participant"]["id"] = pid
        event["data"]["data"]["type"] = "webcam"
        frames.append((json.dumps(event), png))
    noise = draw(st.lists(
        st.binary(max_size=64) | st.text(max_size=64) | JSON.map(json.dumps)
        | mutated_events().map(lambda pair: json.dumps(pair[0])),
        max_size=8))
    redelivered = draw(st.lists(st.sampled_from(frames), max_size=3))
    messages = [body for body, _ in frames + redelivered] + noise
    order = draw(st.permutations(range(len(messages))))
    return recording_id, pid, frames, [messages[i] for i in order]


@fuzz(25)
@given(stream=noisy_streams())
def test_every_valid_frame_among_the_noise_is_stored_exactly_once(env, stream):
    recording_id, pid, frames, messages = stream
    statuses = [via_lambda(env, body) for body in messages]
    assert all(r["statusCode"] == 200 for r in statuses)  # nothing failed, nothing raised

    listed = env.s3.list_objects_v2(Bucket=env.settings.bucket, Prefix=schema.recording_prefix(recording_id))
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    expected = sorted(schema.frame_key(recording_id, str(pid), "webcam",
                                       round(json.loads(body)["data"]["data"]["timestamp"]["relative"] * 1000))
                      for body, _ in frames)
    assert keys == expected
    for key, (_, png) in zip(expected, sorted(frames, key=lambda f: json.loads(f[0])["data"]["data"]["timestamp"]
                                              ["relative"])):
        assert env.s3.get_object(Bucket=env.settings.bucket, Key=key)["Body"].read() == png
    items = env.service.index.frames(recording_id, limit=1000).items
    assert sorted(i["s3_key"] for i in items) == expected
    participant = from_item(env.ddb.get_item(TableName=env.settings.table, Key={
        "pk": {"S": schema.recording_pk(recording_id)}, "sk": {"S": schema.participant_sk(str(pid))}})["Item"])
    assert participant["frame_count"] == len(frames)
