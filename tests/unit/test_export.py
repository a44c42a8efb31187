"""`framesink export`: byte-identical files in the documented layout, a bounded contact sheet."""

import json

import pytest
from PIL import Image

from framesink.cli import main
from framesink.synthetic import frame_message, make_png
from framesink_core.read.contact_sheet import GAP, LABEL_HEIGHT, MAX_FRAMES, THUMB, sample_evenly, sheet_size
from framesink_core.service import Service

REC = "rec-x"


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


def store(svc, pid, ms, frame_type="webcam", size=(32, 24), seed=0):
    png = make_png(*size, seed=seed, detailed=False)
    assert svc.ingestor.handle(frame_message(png, recording_id=REC, participant_id=pid, relative=ms / 1000,
                                             frame_type=frame_type, name="Ada “A” Lovelace")).stored


def export(stack, tmp_path, *extra):
    return main(["export", "--recording", REC, "--participant", "5", "--out", str(tmp_path / "out"),
                 "--bucket", stack.bucket, "--table", stack.table, *extra])


def test_export_writes_every_frame_byte_identical_and_a_contact_sheet(svc, stack, aws, tmp_path, capsys):
    for i in range(70):
        store(svc, 5, i * 500, seed=i)
    for i in range(6):
        store(svc, 5, 1000 + i * 500, "screenshare", size=(64, 36), seed=100 + i)
    store(svc, 6, 0)  # another participant: not exported

    assert export(stack, tmp_path) == 0
    root = tmp_path / "out" / "5"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png") if p.name != "contact_sheet.png")
    objects = []
    for page in aws["s3"].get_paginator("list_objects_v2").paginate(
            Bucket=stack.bucket, Prefix=f"recordings/{REC}/participants/5/"):
        objects += [o["Key"] for o in page["Contents"]]
    assert len(files) == len(objects) == 76
    for key in objects:
        local = root / "/".join(key.split("/")[-2:])  # <type>/<relative_ms>.png
        assert local.read_bytes() == aws["s3"].get_object(Bucket=stack.bucket, Key=key)["Body"].read()

    manifest = [json.loads(line) for line in (root / "frames.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(manifest) == 76 and manifest[0]["participant_name"] == "Ada “A” Lovelace"
    assert [m["relative_ms"] for m in manifest] == sorted(m["relative_ms"] for m in manifest)

    with Image.open(root / "contact_sheet.png") as sheet:
        # 76 frames, sampled down to MAX_FRAMES thumbnails, plus the title line
        width, height = sheet_size(MAX_FRAMES)
        assert sheet.size == (width, height + LABEL_HEIGHT + GAP)
    out = capsys.readouterr().out
    assert "exported 76 of 76 frames" in out and f"{MAX_FRAMES} of 76 frames" in out

    # again: nothing to download, same files
    assert export(stack, tmp_path, "--type", "webcam", "--workers", "3") == 0
    assert "70 of 70 frames (0.0 MB downloaded)" in capsys.readouterr().out


def test_small_export_sheet_fits_its_frames(svc, stack, tmp_path, capsys):
    for i in range(3):
        store(svc, 5, i * 500, seed=i)
    assert export(stack, tmp_path) == 0
    with Image.open(tmp_path / "out" / "5" / "contact_sheet.png") as sheet:
        assert sheet.size == (GAP + 3 * (THUMB[0] + GAP), GAP + THUMB[1] + LABEL_HEIGHT + GAP + LABEL_HEIGHT + GAP)


def test_export_of_nothing_is_an_error(svc, stack, tmp_path, capsys):
    store(svc, 6, 0)
    assert export(stack, tmp_path) == 1
    assert "no indexed frames for participant 5" in capsys.readouterr().err
    assert main(["export", "--recording", "nope", "--participant", "5", "--out", str(tmp_path),
                 "--bucket", stack.bucket, "--table", stack.table]) == 1
    assert "no indexed frames for recording nope" in capsys.readouterr().err


@pytest.mark.parametrize("n, k", [(0, 5), (3, 5), (5, 5), (6, 5), (100, 64), (14400, 64), (7, 1), (10, 2)])
def test_sample_evenly(n, k):
    items = list(range(n))
    got = sample_evenly(items, k)
    assert len(got) == min(n, k) and got == sorted(set(got))
    if n > k >= 2:
        assert got[0] == 0 and got[-1] == n - 1
        steps = [b - a for a, b in zip(got, got[1:])]
        assert max(steps) - min(steps) <= 1  # evenly spread
