"""The end-of-meeting export job (plan, one MP4 per stream, contact sheets, the EXPORT items),
`framesink export --video`, `framesink recording(s)` and delete, on moto; MP4s read back with
PyAV."""

from __future__ import annotations

import io
import json

import pytest
from conftest import api_event
from PIL import Image

from framesink.cli import main
from framesink.synthetic import frame_message, make_png
from framesink_core.meeting.meetings import claim_export
from framesink_core.read.video import probe
from framesink_core.service import Service
from framesink_core.shared.items import from_item
from framesink_handlers import _runtime
from framesink_handlers import delete as delete_handler
from framesink_handlers import export as export_handler
from framesink_handlers import query as query_handler

REC, BOT = "rec-meeting", "bot-77"
# participant 5: webcam with a 20 s gap and a screenshare; participant 6: webcam only
WEBCAM_5 = [0, 500, 1000, 1500, 21500, 22000]
SCREEN_5 = [250, 750, 1250]
WEBCAM_6 = [100, 600, 1100, 1600]


pytestmark = pytest.mark.usefixtures("no_export_settling")


@pytest.fixture
def meeting(stack, aws, export_queue):
    sqs, queue = export_queue
    svc = Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])
    for pid, frame_type, times, size in ((5, "webcam", WEBCAM_5, (320, 240)), (5, "screenshare", SCREEN_5, (640, 360)),
                                         (6, "webcam", WEBCAM_6, (160, 120))):
        for i, ms in enumerate(times):
            png = make_png(*size, seed=pid * 100 + i, detailed=False)
            assert svc.ingestor.handle(frame_message(png, recording_id=REC, participant_id=pid, relative=ms / 1000,
                                                     frame_type=frame_type, bot_id=BOT, name=f"P{pid}")).stored
    svc.store.totals.flush_all()
    return {"settings": stack, "sqs": sqs, "queue": queue, "svc": svc}


def drain(meeting, lambda_context) -> list[str]:
    """Run the export Lambda on every message the queue holds, as SQS would (batch size 1)."""
    outcomes = []
    while True:
        got = meeting["sqs"].receive_message(QueueUrl=meeting["queue"], MaxNumberOfMessages=1).get("Messages", [])
        if not got:
            return outcomes
        event = {"Records": [{"messageId": got[0]["MessageId"], "body": got[0]["Body"], "eventSource": "aws:sqs"}]}
        outcomes += export_handler.handler(event, lambda_context)["results"]
        meeting["sqs"].delete_message(QueueUrl=meeting["queue"], ReceiptHandle=got[0]["ReceiptHandle"])


def s3_keys(aws, bucket, prefix) -> list[str]:
    pages = aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def run_export(meeting, lambda_context):
    svc = _runtime.service()
    assert claim_export(svc.dynamodb, svc.settings.table, REC, "bot.done", 0) == "queued"
    svc.queue_export(REC, "bot.done")
    return drain(meeting, lambda_context)


def test_the_export_job_writes_an_mp4_and_a_contact_sheet_per_stream(meeting, aws, lambda_context, tmp_path):
    outcomes = run_export(meeting, lambda_context)
    assert outcomes[0] == "planned 3 streams"
    assert sorted(outcomes[1:]) == ["exported 5/screenshare", "exported 5/webcam", "exported 6/webcam"]
    bucket = meeting["settings"].bucket
    assert s3_keys(aws, bucket, f"exports/{REC}/") == [
        f"exports/{REC}/5/screenshare-contact-sheet.png", f"exports/{REC}/5/screenshare.mp4",
        f"exports/{REC}/5/webcam-contact-sheet.png", f"exports/{REC}/5/webcam.mp4",
        f"exports/{REC}/6/webcam-contact-sheet.png", f"exports/{REC}/6/webcam.mp4"]
    expected = {("5", "webcam"): (WEBCAM_5, 320, 240), ("5", "screenshare"): (SCREEN_5, 640, 360),
                ("6", "webcam"): (WEBCAM_6, 160, 120)}
    for (pid, frame_type), (times, width, height) in expected.items():
        path = tmp_path / f"{pid}-{frame_type}.mp4"
        aws["s3"].download_file(bucket, f"exports/{REC}/{pid}/{frame_type}.mp4", str(path))
        info = probe(path)
        assert (info.frames, info.width, info.height) == (len(times), width, height)
        assert info.pts_ms == [t - times[0] for t in times]  # the gap in 5's webcam holds its last frame
        sheet = aws["s3"].get_object(Bucket=bucket, Key=f"exports/{REC}/{pid}/{frame_type}-contact-sheet.png")
        assert Image.open(io.BytesIO(sheet["Body"].read())).format == "PNG"
    job = meeting["svc"].exports.job(REC)
    assert job["job_status"] == "done" and job["streams_total"] == 3 and len(job["streams_done"]) == 3
    # the query API lists them with presigned URLs
    answer = query_handler.handler(api_event(f"/recordings/{REC}"), lambda_context)
    body = json.loads(answer["body"])
    assert answer["statusCode"] == 200 and body["meta"]["bot_id"] == BOT
    by_stream = {(e["participant_id"], e["type"]): e for e in body["exports"]}
    assert set(by_stream) == set(expected)
    webcam = by_stream[("5", "webcam")]
    assert (webcam["frames"], webcam["duration_ms"], webcam["width"]) == (6, 22000, 320)
    assert webcam["url"].startswith("https://") and "X-Amz-Signature=" in webcam["url"]
    # exports live outside recordings/, so reindex never reads them as frames
    assert not any("exports" in k for k in s3_keys(aws, bucket, f"recordings/{REC}/"))


def test_a_redelivered_message_exports_nothing_twice(meeting, aws, lambda_context):
    run_export(meeting, lambda_context)
    svc = _runtime.service()
    svc.queue_export(REC, "bot.done")  # the plan message, again
    svc.send_export({"kind": "stream", "recording_id": REC, "participant_id": "6", "type": "webcam"})
    outcomes = drain(meeting, lambda_context)
    assert outcomes[0] == "skipped: job done"
    assert outcomes[1] == "exported 6/webcam"  # a stream message redone rewrites the same key...
    job = svc.exports.job(REC)
    assert job["attempts"] == 1 and len(job["streams_done"]) == 3  # ...and counts once


def test_a_failing_stream_raises_so_the_queue_retries_it(meeting, aws, lambda_context, monkeypatch):
    svc = _runtime.service()
    monkeypatch.setattr(svc.s3, "upload_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    event = {"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": json.dumps(
        {"kind": "stream", "recording_id": REC, "participant_id": "6", "type": "webcam"})}]}
    with pytest.raises(OSError):
        export_handler.handler(event, lambda_context)


def test_a_plan_that_fails_after_starting_is_retried_to_completion(meeting, aws, lambda_context, monkeypatch):
    """A transient failure after the job turned "running" (here: the second stream message's
    send) marks the attempt failed and raises, so SQS redelivers the plan, which starts again
    and finishes every stream (before: "skipped: job running" for ever, 1 of 3 MP4s)."""
    svc = _runtime.service()
    send, sends = svc.exports.send, []

    def flaky(message, delay_seconds=0):
        sends.append(message.get("kind"))
        if message.get("kind") == "stream" and sends.count("stream") == 2:
            raise RuntimeError("SQS throttled")
        return send(message, delay_seconds)

    monkeypatch.setattr(svc.exports, "send", flaky)
    assert claim_export(svc.dynamodb, svc.settings.table, REC, "bot.done", 0) == "queued"
    event = {"Records": [{"messageId": "plan", "eventSource": "aws:sqs", "body": json.dumps(
        {"kind": "recording", "recording_id": REC, "trigger": "bot.done"})}]}
    with pytest.raises(RuntimeError):
        export_handler.handler(event, lambda_context)
    job = svc.exports.job(REC)
    assert job["job_status"] == "failed" and "SQS throttled" in job["failure"]
    assert export_handler.handler(event, lambda_context)["results"] == ["planned 3 streams"]  # the redelivery
    drain(meeting, lambda_context)
    job = svc.exports.job(REC)
    assert job["job_status"] == "done" and job["attempts"] == 2 and len(job["streams_done"]) == 3
    assert len(s3_keys(aws, meeting["settings"].bucket, f"exports/{REC}/")) == 6  # 3 MP4s, 3 contact sheets


def test_a_stranded_running_job_is_restarted_by_a_later_bot_done(meeting, aws, lambda_context):
    """A job left "running" (its planner died between steps) past STALE_RUNNING_SECONDS: a
    later bot.done queues it again and it finishes; a fresh running job is left alone."""
    from framesink_core.shared.items import to_item
    from framesink_core.shared.settings import STALE_RUNNING_SECONDS

    svc = _runtime.service()
    stranded = {"pk": f"REC#{REC}", "sk": "JOB#export", "kind": "export_job", "recording_id": REC,
                "job_status": "running", "started_at": 1_000, "attempts": 1}
    svc.dynamodb.put_item(TableName=svc.settings.table, Item=to_item(stranded))
    fresh_now = (1_000 / 1000) + 60
    assert claim_export(svc.dynamodb, svc.settings.table, REC, "bot.done", fresh_now) == "running"
    later = (1_000 / 1000) + STALE_RUNNING_SECONDS + 1
    assert claim_export(svc.dynamodb, svc.settings.table, REC, "bot.done", later) == "queued"
    svc.queue_export(REC, "bot.done")
    drain(meeting, lambda_context)
    assert svc.exports.job(REC)["job_status"] == "done"


def test_a_delete_while_a_stream_is_exported_wins(meeting, aws, lambda_context, monkeypatch):
    """framesink delete while the export job encodes: the stream finishes after the delete,
    finds the tombstone and removes its MP4, contact sheet, EXPORT# and JOB# items (they came
    back before: 27 frames of MP4 after a privacy delete). Later plan and stream messages skip."""
    import framesink_core.read.export as export
    from framesink_core.read.delete import delete_recording

    svc, stack = _runtime.service(), meeting["settings"]
    encode = export.export_stream

    def encode_then_deleted(*args, **kwargs):  # the delete lands while this stream is encoded
        result = encode(*args, **kwargs)
        delete_recording(svc.s3, svc.dynamodb, stack.bucket, stack.table, REC, dry_run=False, settle_seconds=0)
        return result

    assert claim_export(svc.dynamodb, svc.settings.table, REC, "bot.done", 0) == "queued"
    assert svc.exports.handle({"kind": "recording", "recording_id": REC, "trigger": "bot.done"}) == "planned 3 streams"
    monkeypatch.setattr(export, "export_stream", encode_then_deleted)
    outcome = svc.exports.handle({"kind": "stream", "recording_id": REC, "participant_id": "6", "type": "webcam"})
    assert outcome == f"removed 6/webcam: recording {REC} deleted while it was exported"
    assert s3_keys(aws, stack.bucket, f"exports/{REC}/") == [] and s3_keys(aws, stack.bucket, f"recordings/{REC}/") == []
    assert partition(aws, stack, f"REC#{REC}") == []
    assert svc.exports.handle({"kind": "stream", "recording_id": REC, "participant_id": "5", "type": "webcam"}) == (
        f"skipped: recording {REC} deleted")
    assert svc.exports.handle({"kind": "recording", "recording_id": REC, "trigger": "bot.done"}) == (
        f"skipped: recording {REC} deleted")
    assert partition(aws, stack, f"REC#{REC}") == [] and s3_keys(aws, stack.bucket, f"exports/{REC}/") == []


def test_a_mistyped_delete_leaves_no_tombstone(meeting, aws):
    from framesink_core.ingest.tombstones import is_deleted
    from framesink_core.read.delete import delete_recording

    svc, stack = _runtime.service(), meeting["settings"]
    assert not delete_recording(svc.s3, svc.dynamodb, stack.bucket, stack.table, "rec-typo", dry_run=False).found
    assert not is_deleted(svc.dynamodb, stack.table, "rec-typo")
    assert delete_recording(svc.s3, svc.dynamodb, stack.bucket, stack.table, REC).found  # a dry run finds it...
    assert not is_deleted(svc.dynamodb, stack.table, REC)  # ...writes nothing either


# --- the CLI -------------------------------------------------------------------------------------


def target_args(stack):
    return ["--bucket", stack.bucket, "--table", stack.table]


def test_cli_export_video_writes_one_mp4_per_type(meeting, tmp_path, capsys):
    stack = meeting["settings"]
    out = tmp_path / "out"
    assert main(["export", "--recording", REC, "--participant", "5", "--out", str(out), "--video",
                 *target_args(stack)]) == 0
    assert sorted(p.name for p in (out / "5").iterdir()) == ["contact_sheet.png", "frames.jsonl", "screenshare.mp4",
                                                             "webcam.mp4"]
    webcam = probe(out / "5" / "webcam.mp4")
    assert (webcam.frames, webcam.width, webcam.pts_ms) == (6, 320, WEBCAM_5)
    text = capsys.readouterr().out
    assert "webcam.mp4 (320x240, 6 frames, 22.0 s" in text and "screenshare.mp4 (640x360, 3 frames, 1.0 s" in text


def test_cli_export_video_gap_fill_black(meeting, tmp_path, capsys):
    out = tmp_path / "black"
    assert main(["export", "--recording", REC, "--participant", "5", "--type", "webcam", "--out", str(out), "--video",
                 "--gap-fill", "black", "--gap-seconds", "2", *target_args(meeting["settings"])]) == 0
    info = probe(out / "5" / "webcam.mp4")
    assert info.pts_ms == [0, 500, 1000, 1500, 3500, 21500, 22000]  # black from 1.5 s + 2 s until 21.5 s
    assert "1 black gap frames" in capsys.readouterr().out


def test_cli_recordings_and_recording(meeting, aws, lambda_context, capsys):
    run_export(meeting, lambda_context)
    capsys.readouterr()
    stack = meeting["settings"]
    assert main(["recordings", "--json", "--table", stack.table]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["recording_id"], listed["bot_id"]) == (REC, BOT)
    assert main(["recordings", "--bot", BOT, "--table", stack.table]) == 0
    assert REC in capsys.readouterr().out
    assert main(["recording", REC, "--json", *target_args(stack)]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["frames"] == len(WEBCAM_5) + len(SCREEN_5) + len(WEBCAM_6)
    assert found["duration_ms"] == 22000 and len(found["exports"]) == 3
    assert all(e["url"].startswith("https://") for e in found["exports"])
    assert found["export_job"]["job_status"] == "done"
    assert main(["recording", "nope", *target_args(stack)]) == 1
    assert "recording nope is not in the index" in capsys.readouterr().err


# --- delete --------------------------------------------------------------------------------------


def partition(aws, stack, pk):
    result = aws["dynamodb"].query(TableName=stack.table, KeyConditionExpression="pk = :pk",
                                   ExpressionAttributeValues={":pk": {"S": pk}})
    return [from_item(i) for i in result["Items"]]


def test_delete_counts_by_default_then_removes_everything_of_the_recording(meeting, aws, lambda_context, capsys):
    run_export(meeting, lambda_context)
    stack, svc = meeting["settings"], meeting["svc"]
    other = frame_message(make_png(16, 16, detailed=False), recording_id="rec-other", participant_id=1, relative=0,
                          bot_id=BOT)
    assert svc.ingestor.handle(other).stored
    capsys.readouterr()
    before = len(s3_keys(aws, stack.bucket, f"recordings/{REC}/"))
    assert main(["delete", "--recording", REC, *target_args(stack)]) == 0
    text = capsys.readouterr().out
    assert f"would delete: {before} frames and 6 export files" in text and "dry run: nothing was deleted" in text
    assert len(s3_keys(aws, stack.bucket, f"recordings/{REC}/")) == before

    assert main(["delete", "--recording", REC, "--yes", *target_args(stack)]) == 0
    assert f"deleted: {before} frames and 6 export files" in capsys.readouterr().out
    assert s3_keys(aws, stack.bucket, f"recordings/{REC}/") == []
    assert s3_keys(aws, stack.bucket, f"exports/{REC}/") == []
    assert partition(aws, stack, f"REC#{REC}") == []
    assert [i["sk"] for i in partition(aws, stack, f"BOT#{BOT}") if i["sk"].startswith("REC#")] == ["REC#rec-other"]
    assert REC not in json.dumps(svc.index.recordings())
    # the other recording is untouched
    assert s3_keys(aws, stack.bucket, "recordings/rec-other/") and partition(aws, stack, "REC#rec-other")
    assert main(["delete", "--recording", REC, *target_args(stack)]) == 1
    assert "has nothing stored" in capsys.readouterr().err


def test_delete_route_is_a_dry_run_unless_confirmed(meeting, aws, lambda_context):
    stack = meeting["settings"]
    counted = delete_handler.handler(api_event(f"/recordings/{REC}", method="DELETE"), lambda_context)
    body = json.loads(counted["body"])
    assert counted["statusCode"] == 200 and body["dry_run"] and body["frame_objects"] == 13
    assert len(s3_keys(aws, stack.bucket, f"recordings/{REC}/")) == 13
    bad = delete_handler.handler(api_event(f"/recordings/{REC}", {"confirm": "yes please"}, method="DELETE"),
                                 lambda_context)
    assert bad["statusCode"] == 400 and "confirm" in bad["body"]
    done = delete_handler.handler(api_event(f"/recordings/{REC}", {"confirm": "true"}, method="DELETE"),
                                  lambda_context)
    assert json.loads(done["body"])["complete"] is True
    assert s3_keys(aws, stack.bucket, f"recordings/{REC}/") == [] and partition(aws, stack, f"REC#{REC}") == []
    # Nothing (left) under an id: a 404 that says so, for a dry run and a confirmed delete alike.
    for params in ({}, {"confirm": "true"}):
        again = delete_handler.handler(api_event(f"/recordings/{REC}", params, method="DELETE"), lambda_context)
        assert again["statusCode"] == 404 and "has nothing stored" in again["body"]


def test_exports_and_notes_say_when_recalls_endpoint_failed(meeting, aws, lambda_context, capsys):
    """realtime_endpoint.failed on the recording (as meetings.py records it; its webhook is
    tested in test_meetings): Recall stopped sending, so every export of it ends early; the
    export items, `framesink recording` and the slide notes say so."""
    from framesink_core.shared import schema
    from framesink_core.shared.items import to_item

    svc = meeting["svc"]
    svc.dynamodb.update_item(
        TableName=meeting["settings"].table, Key=to_item({"pk": schema.recording_pk(REC), "sk": schema.META_SK}),
        UpdateExpression="SET endpoint_status = :s, endpoint_status_at = :at",
        ExpressionAttributeValues=to_item({":s": "failed", ":at": "2026-11-23T19:00:22Z"}))
    run_export(meeting, lambda_context)
    found = svc.index.recording(REC)
    assert [e["endpoint_failed_at"] for e in found["exports"]] == ["2026-11-23T19:00:22Z"] * 3
    from framesink_core.read.notes import render

    _, files = render(aws["s3"], meeting["settings"].bucket, svc.index, REC)  # what notes and the job write
    assert "Incomplete:** Recall's realtime endpoint failed at 2026-11-23T19:00:22Z" in files["notes.md"][0].decode()
    assert json.loads(files["notes.json"][0])["endpoint_failed_at"] == "2026-11-23T19:00:22Z"
    capsys.readouterr()
    assert main(["recording", REC, *target_args(meeting["settings"])]) == 0
    assert capsys.readouterr().out.count("ENDS EARLY: Recall's endpoint failed at 2026-11-23T19:00:22Z") == 3
