"""The frame's S3 write through both clients (objects.py) against a moto server over HTTP:
botocore's (the Lambda functions) and obstore's (the receiver), which in-process moto cannot
answer. Objects written by either must be decided alike by the other: a redelivery to a
receiver of a frame a Lambda stored is a duplicate, different bytes a conflict."""

from __future__ import annotations

import json
import socket

import boto3
import pytest

from framesink.synthetic import frame_event, make_png
from framesink_core.ingest.events import parse_message
from framesink_core.ingest.native_objects import NativeObjects
from framesink_core.ingest.storage import FrameConflict, FrameStore, StoreError, crc32_base64
from framesink_core.ingest.png import inspect_png
from framesink_core.shared.objects import CHECKSUM_METADATA, FINGERPRINT_METADATA, BotoObjects, WriteRace
from tests.faultproxy import FaultProxy, route_native_puts
from tests.procs import REGION, Moto


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


def make_store(moto, which: str, s3=None) -> FrameStore:
    s3 = s3 or moto.client("s3")
    objects = NativeObjects(s3, moto.bucket) if which == "native" else BotoObjects(s3, moto.bucket)
    return FrameStore(moto.bucket, moto.table, s3, moto.client("dynamodb"), objects=objects, totals_interval=0)


def frame(png: bytes, recording: str, relative: float = 1.0):
    return parse_message(json.dumps(frame_event(png, recording_id=recording, participant_id=100,
                                                name="Zoë Nakamura", relative=relative)), 10**7)


def index_items(moto, recording: str) -> list[dict]:
    out = moto.client("dynamodb").query(TableName=moto.table, KeyConditionExpression="pk = :pk",
                                        ExpressionAttributeValues={":pk": {"S": f"REC#{recording}"}})
    return [item for item in out["Items"] if item.get("kind", {}).get("S") == "frame"]


@pytest.mark.parametrize("first,second", [("native", "native"), ("native", "boto"), ("boto", "native")])
def test_either_client_stores_once_and_the_other_agrees_on_duplicates_and_conflicts(moto, first, second):
    recording = f"objects-{first}-{second}"
    png = make_png(160, 120, seed=3)
    one, other = make_store(moto, first), make_store(moto, second)

    stored = one.put_frame(frame(png, recording))
    assert not stored.duplicate
    head = moto.s3.head_object(Bucket=moto.bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(png)
    assert head["Metadata"]["participant-name"] == "Zo%C3%AB%20Nakamura"  # same metadata, reindexable
    # Both: the PNG walk's fingerprint as metadata (obstore then needs no CRC32 pass). botocore
    # also sends S3's checksum header, which S3 verifies the body by (moto's server does not
    # echo it). A spooled frame from before the fingerprint: the CRC32 as metadata (below).
    assert head["Metadata"][FINGERPRINT_METADATA] == inspect_png(png).fingerprint
    assert CHECKSUM_METADATA not in head["Metadata"]

    again = other.put_frame(frame(png, recording))
    assert again.duplicate and not again.repaired
    with pytest.raises(FrameConflict):
        other.put_frame(frame(make_png(160, 120, seed=4), recording))
    body = moto.s3.get_object(Bucket=moto.bucket, Key=stored.key)["Body"].read()
    assert body == png  # the first write won
    assert len(index_items(moto, recording)) == 1


@pytest.mark.parametrize("first,second", [("native", "native"), ("native", "boto")])
def test_frames_without_a_fingerprint_are_compared_by_crc32(moto, first, second):
    """A frame spooled before fingerprints existed has none: written with the CRC32 as metadata,
    and a fingerprinted redelivery of it is still a duplicate, other bytes a conflict."""
    from dataclasses import replace

    recording = f"objects-nofp-{first}-{second}"
    png = make_png(160, 120, seed=5)
    stored = make_store(moto, first).put_frame(replace(frame(png, recording), fingerprint=None))
    head = moto.s3.head_object(Bucket=moto.bucket, Key=stored.key)
    assert head["Metadata"][CHECKSUM_METADATA] == crc32_base64(png) and FINGERPRINT_METADATA not in head["Metadata"]
    other = make_store(moto, second)
    assert other.put_frame(frame(png, recording)).duplicate
    with pytest.raises(FrameConflict):
        other.put_frame(frame(make_png(160, 120, seed=6), recording))


def test_a_native_put_whose_answer_was_lost_is_still_this_frames_write(moto):
    """The put lands, then the client reports a timeout: the retry meets the object with this
    call's write-id, so the frame is new (indexed, counted), not a duplicate."""
    store = make_store(moto, "native")
    real, calls = store.objects.put_new, []

    def landed_then_timed_out(*args):
        calls.append(args[0])
        real(*args)
        if len(calls) == 1:
            raise WriteRace("GenericError: operation timed out")

    store.objects.put_new = landed_then_timed_out
    result = store.put_frame(frame(make_png(32, 24, seed=5, detailed=False), "objects-lost-answer"))
    assert not result.duplicate and len(calls) == 2
    assert len(index_items(moto, "objects-lost-answer")) == 1


@pytest.mark.timeout(90)
def test_native_put_failures_are_one_line_store_errors(moto):
    missing = FrameStore("no-such-bucket-here", moto.table, moto.client("s3"), moto.client("dynamodb"),
                         objects=NativeObjects(moto.client("s3"), "no-such-bucket-here"))
    with pytest.raises(StoreError) as refused:
        missing.put_frame(frame(make_png(16, 16, detailed=False), "objects-missing"))
    assert refused.value.stage == "s3" and "\n" not in refused.value.detail

    with socket.socket() as closed:  # a port nobody listens on: connection refused, retried
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nowhere = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION)
    store = FrameStore(moto.bucket, moto.table, nowhere, moto.client("dynamodb"),
                       objects=NativeObjects(nowhere, moto.bucket))
    with pytest.raises(StoreError) as unreachable:  # after bounded retries (the timeout mark guards)
        store.put_frame(frame(make_png(16, 16, detailed=False), "objects-unreachable"))
    assert unreachable.value.stage == "s3" and "\n" not in unreachable.value.detail
    assert index_items(moto, "objects-unreachable") == []


def test_without_credentials_the_native_client_fails_the_frame_not_the_process(moto, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = make_store(moto, "native")  # built: nothing is resolved before the first put
    with pytest.raises(StoreError) as refused:
        store.put_frame(frame(make_png(16, 16, detailed=False), "objects-no-credentials"))
    assert refused.value.stage == "s3" and "no AWS credentials" in refused.value.detail


@pytest.mark.parametrize("kind", ["slowdown", "lost", "drop"])
def test_native_puts_ride_out_faults_on_the_wire(moto, kind):
    """Every other PUT fails on the wire (503 SlowDown; the answer lost after the write
    landed; the connection dropped before it): every frame is still stored exactly once,
    each as a new frame (a landed write is recognised by its write-id)."""
    store = make_store(moto, "native")
    proxy = FaultProxy(moto.endpoint_url, plan=lambda n, _path: kind if n % 2 == 1 else None)
    route_native_puts(store, proxy)
    try:
        recording = f"objects-wire-{kind}"
        results = [store.put_frame(frame(make_png(32, 24, seed=i, detailed=False), recording, relative=i))
                   for i in range(1, 5)]
    finally:
        proxy.stop()
    assert proxy.counts["failed"] >= 4  # the faults fired
    assert [r.duplicate for r in results] == [False] * 4
    assert len(index_items(moto, recording)) == 4
    assert len(moto.keys(f"recordings/{recording}/")) == 4
