"""Reindex: the index rebuilt from S3 objects alone equals the index ingest wrote."""

import pytest

from framesink.cli import main
from framesink_core.ingest.audio import audio_key, is_audio_key
from framesink.synthetic import audio_message, frame_message, make_png
from framesink_core.ingest.storage import FrameStore
from framesink_core.ingest.stored_frame import StoredFrame
from framesink_core.read.reindex import reindex_recording
from framesink_core.service import Service
from framesink_core.shared import schema
from framesink_core.shared.items import from_item

REC = "rec-r"
# A recount marks participant items with the newest stored_at it counted (totals.py): what
# ingest wrote has no such mark, everything else is restored exactly.
NOT_RESTORED: set[str] = {"counted_through"}


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


@pytest.fixture
def recorded(svc):
    """A recording stored by the real Ingestor: unicode/quoted names, both types, a name
    change mid-meeting, out-of-order arrival, a participant without name or host flag."""
    plan = []
    for ms in range(0, 4000, 500):
        plan.append(dict(participant_id=1, relative=ms / 1000, name='Zoë "Z" O\'Neil 山田', is_host=True))
        plan.append(dict(participant_id=2, relative=ms / 1000 + 0.123,
                         name="Bob" if ms < 2000 else "Bob (phone)", platform="mobile_app"))
    plan += [dict(participant_id=1, relative=1.25, frame_type="screenshare", name='Zoë "Z" O\'Neil 山田', is_host=True),
             dict(participant_id=3, relative=0.75, name=None, is_host=None, platform=None)]
    plan.append(dict(participant_id=1, relative=0.1, name='Zoë "Z" O\'Neil 山田', is_host=True))  # late
    for i, kw in enumerate(plan):
        png = make_png(24, 18, seed=i, detailed=False)
        kw.setdefault("is_host", False)
        outcome = svc.ingestor.handle(frame_message(png, recording_id=REC, bot_id="bot-9", **kw),
                                      connection_id="conn-7" if i % 2 else None)
        assert outcome.status == "stored"
    other = make_png(8, 8, detailed=False)
    assert svc.ingestor.handle(frame_message(other, recording_id="rec-other", participant_id=1, relative=1)).stored
    return len(plan)


def table_items(aws, table):
    items = []
    for page in aws["dynamodb"].get_paginator("scan").paginate(TableName=table):
        items += [from_item(i) for i in page["Items"]]
    return {(i["pk"], i["sk"]): {k: v for k, v in i.items() if k not in NOT_RESTORED} for i in items}


def delete(aws, table, keys):
    for pk, sk in keys:
        aws["dynamodb"].delete_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}})


def recording_keys(items):
    def mine(pk):
        return pk == f"REC#{REC}" or pk == "BOT#bot-9"
    return [k for k in items if mine(k[0]) and not (k[0] == "BOT#bot-9" and k[1] != f"REC#{REC}")]


def test_reindex_after_losing_the_whole_index_restores_it_exactly(svc, stack, aws, recorded):
    before = table_items(aws, stack.table)
    lost = recording_keys(before)
    # frames, three participants, the recording's META item and the bot's recording item
    assert len(lost) == recorded + 3 + 1 + 1
    # every one of them expires with its objects, and reindex must rebuild that too
    assert all(before[k][schema.TTL_ATTRIBUTE] > 0 for k in lost)
    delete(aws, stack.table, lost)
    assert len(table_items(aws, stack.table)) == len(before) - len(lost)

    result = reindex_recording(svc.store, REC)
    assert (result.objects, result.indexed, result.participants, result.bots, result.skipped) == (
        recorded, recorded, 3, 1, [])
    assert table_items(aws, stack.table) == before


def test_reindex_repairs_a_lost_frame_write_and_running_it_again_changes_nothing(svc, stack, aws, recorded):
    before = table_items(aws, stack.table)
    # A frame whose index write was lost: its item missing and the participant never counted it.
    key = (schema.recording_pk(REC), schema.frame_sk(1623, "2", "webcam"))
    lost = before[key]
    delete(aws, stack.table, [key])
    aws["dynamodb"].update_item(
        TableName=stack.table, Key={"pk": {"S": f"REC#{REC}"}, "sk": {"S": "PART#2"}},
        UpdateExpression="ADD frame_count :m, #b :b", ExpressionAttributeNames={"#b": "bytes"},
        ExpressionAttributeValues={":m": {"N": "-1"}, ":b": {"N": str(-lost["bytes"])}})
    assert svc.index.frames(REC, participant_id="2", since=1623, until=1624).items == []

    reindex_recording(svc.store, REC, workers=4)
    assert table_items(aws, stack.table) == before
    reindex_recording(svc.store, REC)  # counts are recomputed, not added: no doubling
    assert table_items(aws, stack.table) == before
    part = {p["participant_id"]: p for p in svc.index.participants(REC)}["2"]
    assert part["frame_count"] == 8 and part["participant_name"] == "Bob (phone)"


def test_reindex_rebuilds_expiry_for_the_configured_days(svc, stack, aws, recorded):
    before = table_items(aws, stack.table)
    mine = recording_keys(before)
    # Frames kept forever from now on (frameExpiryDays=0): reindex clears every TTL...
    forever = FrameStore(stack.bucket, stack.table, aws["s3"], aws["dynamodb"], frame_expiry_days=0)
    reindex_recording(forever, REC)
    after = table_items(aws, stack.table)
    assert not [k for k in mine if schema.TTL_ATTRIBUTE in after[k]]
    assert {k: after[k] for k in mine} == {
        k: {a: v for a, v in before[k].items() if a != schema.TTL_ATTRIBUTE} for k in mine}
    # ...and with the days back, reindex (twice: idempotent) restores exactly what ingest wrote.
    for _ in range(2):
        reindex_recording(svc.store, REC)
        assert table_items(aws, stack.table) == before


def test_foreign_and_inconsistent_objects_are_skipped_with_a_reason(svc, stack, aws, recorded):
    s3 = aws["s3"]
    s3.put_object(Bucket=stack.bucket, Key=f"recordings/{REC}/notes.txt", Body=b"hello")
    forged = schema.frame_key(REC, "9", "webcam", 5000)
    s3.put_object(Bucket=stack.bucket, Key=forged, Body=make_png(8, 8, detailed=False),
                  Metadata={"recording-id": REC, "participant-id": "8", "type": "webcam", "relative-ms": "5000",
                            "width": "8", "height": "8"})
    bare = schema.frame_key(REC, "9", "webcam", 6000)
    s3.put_object(Bucket=stack.bucket, Key=bare, Body=make_png(8, 8, detailed=False))
    # the recording's audio: not frames, and not reported as skipped either
    svc.ingestor.handle(audio_message(b"\0\0" * 160, recording_id=REC, relative=1.0, participant_id=9))
    assert is_audio_key(audio_key(REC, "9", 1000))
    result = reindex_recording(svc.store, REC)
    assert sorted(result.skipped) == sorted([(f"recordings/{REC}/notes.txt", "not_a_frame_key"),
                                             (forged, "metadata_mismatch"), (bare, "metadata_mismatch")])
    assert result.indexed == recorded and svc.index.frames(REC, participant_id="9").items == []


def test_metadata_round_trip_keeps_none_apart_from_empty(svc, stack, aws, recorded):
    key = schema.frame_key(REC, "3", "webcam", 750)
    head = aws["s3"].head_object(Bucket=stack.bucket, Key=key)
    frame = StoredFrame.from_object(key, head["Metadata"], head["ContentLength"])
    assert (frame.participant_name, frame.is_host, frame.platform) == (None, None, None)
    assert frame.bot_id == "bot-9" and frame.stored_at and frame.size == head["ContentLength"]
    assert frame.key == key and frame.index_item()["sk"] == "0000000750#3#webcam"


def test_reindex_command(svc, stack, aws, recorded, capsys):
    delete(aws, stack.table, recording_keys(table_items(aws, stack.table)))
    assert main(["reindex", "--recording", REC, "--bucket", stack.bucket, "--table", stack.table]) == 0
    out = capsys.readouterr().out
    assert f"reindexed recording {REC}: {recorded} frames of {recorded} objects, 3 participants" in out
    assert len(svc.index.participants(REC)) == 3
    assert main(["reindex", "--recording", "nothing-here", "--bucket", stack.bucket, "--table", stack.table]) == 1
    assert "no objects under" in capsys.readouterr().err
    assert main(["reindex", "--recording", "bad/id", "--bucket", stack.bucket, "--table", stack.table]) == 1
    assert "--recording" in capsys.readouterr().err
