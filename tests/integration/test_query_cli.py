"""Query side end to end over real sockets: frames sent by websocket to the local stack
(API Gateway emulator + moto server), then `framesink frames/participants/export --local`
and the query Lambda, whose presigned URLs are downloaded over real HTTP."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from conftest import api_event as http_event
from websockets.asyncio.client import connect

from framesink.cli import main
from framesink.local import LocalConfig, background_stack
from framesink.synthetic import frame_message, make_png
from framesink_core.shared import schema

GUARD = 30  # seconds: a hang guard, never an assertion about speed
REC = "rec-cli"
NAMES = {1: 'Ada "the first" Lovelace', 2: "Grace Hopper ✓"}
CONTRACT_FIELDS = {"recording_id", "participant_id", "participant_name", "type", "relative_ms", "absolute",
                   "s3_key", "bytes", "width", "height"}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    suffix = uuid.uuid4().hex[:8]
    state_file = tmp_path_factory.mktemp("local") / "local.json"
    messages = []
    sent = {}
    for i, ms in enumerate(range(0, 3000, 500)):
        for pid in (1, 2):
            png = make_png(40, 30, seed=i * 10 + pid, detailed=False)
            sent[(str(pid), "webcam", ms)] = png
            messages.append(frame_message(png, recording_id=REC, participant_id=pid, relative=ms / 1000,
                                          name=NAMES[pid], is_host=pid == 1, bot_id="bot-cli"))
    config = LocalConfig(port=0, state_file=state_file, bucket=f"q-{suffix}", table=f"q-{suffix}",
                         token_secret_name=f"q/{suffix}")
    with background_stack(config, timeout=GUARD) as stack:
        stack.state_file, stack.sent = state_file, sent

        async def send():
            async with connect(stack.state["ws_url"], compression=None) as ws:
                for message in messages:
                    await ws.send(message)

        stack.run(send(), GUARD)
        stack.run(stack.wait_idle(), GUARD)
        yield stack


def cli(local, capsys, *args):
    code = main([*args, "--local", "--state-file", str(local.state_file)])
    out, err = capsys.readouterr()
    return code, out, err


def test_frames_json_lines_carry_the_contract_fields(local, capsys):
    code, out, _ = cli(local, capsys, "frames", "--recording", REC, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == len(local.sent)
    for row in rows:
        assert CONTRACT_FIELDS <= set(row)
        assert row["participant_name"] == NAMES[int(row["participant_id"])]
        assert row["bytes"] == len(local.sent[(row["participant_id"], row["type"], row["relative_ms"])])
        assert (row["width"], row["height"]) == (40, 30)
        assert row["s3_key"] == schema.frame_key(REC, row["participant_id"], row["type"], row["relative_ms"])
    assert [r["relative_ms"] for r in rows] == sorted(r["relative_ms"] for r in rows)


def test_frames_filters(local, capsys):
    code, out, _ = cli(local, capsys, "frames", "--recording", REC, "--participant", "2", "--type", "webcam",
                       "--since", "500", "--until", "1500", "--json")
    assert code == 0 and [json.loads(x)["relative_ms"] for x in out.splitlines()] == [500, 1000]


def test_frames_table_is_aligned(local, capsys):
    code, out, _ = cli(local, capsys, "frames", "--recording", REC, "--until", "1000")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == "4 frames" and lines[0].split()[:3] == ["TIME", "REL_MS", "PARTICIPANT"]
    starts = {line.index("recordings/") for line in lines[1:-1]}
    assert len(starts) == 1 and lines[0].index("S3_KEY") == starts.pop()


def test_participants(local, capsys):
    code, out, _ = cli(local, capsys, "participants", "--recording", REC, "--json")
    parts = {p["participant_id"]: p for p in map(json.loads, out.splitlines())}
    assert code == 0 and set(parts) == {"1", "2"}
    assert parts["1"]["is_host"] is True and parts["1"]["frame_count"] == 6 and parts["1"]["last_ms"] == 2500
    code, out, _ = cli(local, capsys, "participants", "--recording", REC)
    assert code == 0 and "Grace Hopper ✓" in out and out.splitlines()[0].startswith("PARTICIPANT")


def test_unknown_recording_and_bad_arguments_are_clear_errors(local, capsys):
    code, _, err = cli(local, capsys, "frames", "--recording", "nope")
    assert code == 1 and "recording nope has no indexed frames" in err
    code, _, err = cli(local, capsys, "participants", "--recording", "nope")
    assert code == 1 and "no indexed participants" in err
    code, _, err = cli(local, capsys, "frames", "--recording", REC, "--until", "soon")
    assert code == 1 and "framesink: error: --until: must be" in err
    # The core's id check, through every command that queries (cli.main names the option).
    for command in (["participants"], ["export", "--participant", "1", "--out", "unused"], ["reindex"]):
        code, _, err = cli(local, capsys, *command, "--recording", "../etc")
        assert code == 1 and "framesink: error: --recording: must match" in err, (command, err)
    code = main(["frames", "--recording", REC, "--local", "--state-file", str(local.state_file) + ".missing"])
    assert code == 1 and "framesink local" in capsys.readouterr().err


def test_export_local(local, capsys, tmp_path):
    code, out, _ = cli(local, capsys, "export", "--recording", REC, "--participant", "1", "--out", str(tmp_path))
    assert code == 0 and "exported 6 of 6 frames" in out
    for (pid, frame_type, ms), png in local.sent.items():
        path = tmp_path / pid / frame_type / f"{schema.relative_ms_text(ms)}.png"
        assert path.exists() == (pid == "1")
        if pid == "1":
            assert path.read_bytes() == png
    assert (tmp_path / "1" / "contact_sheet.png").stat().st_size > 0


def test_export_all_writes_every_participant_in_one_run(local, capsys, tmp_path):
    code, out, _ = cli(local, capsys, "export", "--recording", REC, "--all", "--out", str(tmp_path))
    assert code == 0 and "exported 6 of 6 frames of participant 1" in out and "of participant 2" in out
    assert "12 of 12 frames" in out
    for (pid, frame_type, ms), png in local.sent.items():
        assert (tmp_path / pid / frame_type / f"{schema.relative_ms_text(ms)}.png").read_bytes() == png
    for pid in ("1", "2"):
        assert (tmp_path / pid / "contact_sheet.png").stat().st_size > 0
        assert len((tmp_path / pid / "frames.jsonl").read_text().splitlines()) == 6
    with pytest.raises(SystemExit) as usage:  # argparse: one of the two, or a usage error
        cli(local, capsys, "export", "--recording", REC, "--out", str(tmp_path))
    assert usage.value.code == 2 and "one of the arguments --participant --all is required" in capsys.readouterr().err


def test_query_lambda_urls_download_over_http(local, lambda_context):
    # LocalStack has put the Lambda environment (AWS_ENDPOINT_URL, bucket, table) in place.
    from framesink_handlers import _runtime
    from framesink_handlers.query import handler

    _runtime.service.cache_clear()
    response = handler(http_event(f"/recordings/{REC}/frames", {"participant": "2", "limit": "3"}), lambda_context)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200 and len(body["frames"]) == 3 and body["cursor"]
    for frame in body["frames"]:
        assert frame["url"].startswith(local.state["endpoint_url"])
        with urllib.request.urlopen(frame["url"], timeout=GUARD) as got:
            assert got.read() == local.sent[("2", "webcam", frame["relative_ms"])]


def test_watch_without_a_frame_queue_polls_the_index_and_says_how_to_get_one(local, capsys):
    # `framesink local` has no frame queue unless started with --frame-queue (as a deploy
    # without -c frameQueue=true): watch follows the index, and asking for the queue is a clear error.
    assert local.state["frame_queue_url"] is None
    code, _, err = cli(local, capsys, "watch", "--recording", REC, "--source", "queue")
    assert code == 1 and "no frame queue: start `framesink local --frame-queue`, or use --source index" in err
    code, _, err = cli(local, capsys, "watch", "--recording", REC, "--json", "--idle-exit", "1")
    assert code == 0 and "through the index (one Query a second)" in err
