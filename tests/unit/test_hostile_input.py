"""The hostile-input corpus (tests/hostile.py) through the core, in moto: every case gets its
outcome with one log line and one metric, in bounded CPU, and nothing it stores breaks a
limit downstream (S3's 2 KB of metadata, a 1 KB index item, a name a terminal can show).

tests/integration/test_hostile_sockets.py sends the same corpus over real sockets to both
ingresses. The CPU each message costs is printed (``-s``) for the limits table in docs/ingest.md;
nothing here asserts a time.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from hostile import cases

from bench.cost import item_bytes
from framesink_core.ingest.events import MAX_NAME_BYTES, MAX_PLATFORM_BYTES, parse_message
from framesink_core.read.query import FrameIndex
from framesink_core.service import Service
from framesink_core.shared.items import to_item

PREFIX = "hostile"


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


def test_every_hostile_case_gets_its_outcome_with_a_reason(svc, stack, aws, caplog_json):
    costs = []
    for case in cases(PREFIX):
        for step in case.steps:
            caplog_json()
            # CPU of framesink's own work on the message: parsing and every check (storing it
            # in in-process moto would mostly measure moto).
            started = time.process_time()
            for _ in range(5):
                svc.ingestor.parse(step.message) if step.status == "rejected" else parse_message(
                    step.message, stack.max_frame_bytes)
            costs.append(((time.process_time() - started) / 5, case.name, len(step.message)))
            caplog_json()
            outcome = svc.ingestor.handle(step.message, connection_id="conn-hostile")
            assert (outcome.status, outcome.reason if step.status != "stored" else None) == (
                step.status, step.reason if step.status != "duplicate" else None), case.name
            lines = caplog_json()
            if step.status == "rejected":
                [log] = [line for line in lines if line.get("message") == "message rejected"]
                assert log["reason"] == step.reason and log["detail"] and log["level"] == "WARNING", case.name
                assert len(json.dumps(log)) < 2000  # the log line is bounded, whatever the input
                metrics = [line for line in lines if "MessageRejected" in line]
                assert [(m["reason"], m["MessageRejected"]) for m in metrics] == [(step.reason, [1.0])]
            assert not [line for line in lines if line.get("reason") == "internal_error"]
    costliest = max(costs)
    print(f"\nhostile corpus: {len(costs)} messages, costliest to parse and check {costliest[0] * 1000:.2f} ms CPU "
          f"({costliest[1]}, {costliest[2]} bytes); total {sum(c[0] for c in costs) * 1000:.0f} ms")


def test_what_is_stored_stays_within_every_limit(svc, stack, aws):
    for case in cases(PREFIX):
        for step in case.steps:
            svc.ingestor.handle(step.message, connection_id="conn-hostile")
    index = FrameIndex(stack.table, aws["dynamodb"])
    for name in ("name-14000-e-umlaut", "name-450kb", "name-control-chars", "platform-100kb", "metadata-deep-500"):
        rec = f"{PREFIX}-{name}"
        [frame] = index.frames(rec).items
        head = aws["s3"].head_object(Bucket=stack.bucket, Key=frame["s3_key"])
        meta_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in head["Metadata"].items())
        assert meta_bytes <= 2048, name  # S3's limit on user metadata
        [part] = index.participants(rec)
        assert len((part["participant_name"] or "").encode()) <= MAX_NAME_BYTES
        assert len((part["platform"] or "").encode()) <= MAX_PLATFORM_BYTES
        raw = aws["dynamodb"].get_item(TableName=stack.table, Key=to_item({"pk": f"REC#{rec}", "sk": "0000001000#7#webcam"}))
        assert item_bytes(raw["Item"]) <= 1024, name  # one write unit (and its GSI copy one more)
    # the name is cut at a character boundary, not in the middle of a UTF-8 sequence
    [part] = index.participants(f"{PREFIX}-name-14000-e-umlaut")
    assert part["participant_name"] == "ë" * (MAX_NAME_BYTES // 2)
    # the conflicting frame left the first one, and its index item, in place
    [frame] = index.frames(f"{PREFIX}-conflict").items
    first = json.loads(cases(PREFIX)[-1].steps[0].message)["data"]["data"]["buffer"]
    assert aws["s3"].get_object(Bucket=stack.bucket, Key=frame["s3_key"])["Body"].read() == base64.b64decode(first)
    assert frame["bytes"] == len(base64.b64decode(first))
