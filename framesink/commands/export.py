"""`framesink export`: download a participant's frames, byte for byte, plus a contact sheet;
or, with --video, one MP4 per type.

Layout: DIR/<participant>/<type>/<relative_ms, 10 digits>.png (the S3 key's last parts,
so files sort in time order), DIR/<participant>/frames.jsonl (the index records) and
DIR/<participant>/contact_sheet.png. Re-running skips files already there at full size.

With --video: DIR/<participant>/<type>.mp4 instead of the PNGs: H.264, yuv420p,
+faststart, variable frame rate (each frame shown from its relative time until the next, so a
gap holds the last frame; --gap-fill black blacks out gaps over --gap-seconds), with sound
when audio was stored: AAC of the participant's own audio in the webcam MP4, of the meeting's
mix in the screenshare MP4, aligned on the frames' clock, silence where none was stored
(--no-audio leaves it out). Frames are
streamed through the encoder (memory stays flat however long the meeting); the contact
sheet is drawn from frames sampled on the way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from framesink_core.read.contact_sheet import SheetEntry, make_contact_sheet
from framesink_core.shared import schema

from .. import target
from ..cli import CliError

DEFAULT_WORKERS = 16


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="download a participant's frames (and a contact sheet)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--participant", metavar="P", help="participant id")
    who.add_argument("--all", action="store_true", help="every participant of the recording (one folder each)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write into")
    p.add_argument("--type", choices=["webcam", "screenshare"], help="only this type (default both)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help=f"parallel downloads (default {DEFAULT_WORKERS})")
    p.add_argument("--no-contact-sheet", dest="contact_sheet", action="store_false",
                   help="skip the contact sheet")
    p.add_argument("--video", action="store_true",
                   help="write DIR/<participant>/<type>.mp4 (H.264, variable frame rate) instead of the PNGs")
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="--video: leave the sound out (by default a webcam MP4 carries the participant's audio "
                        "and a screenshare MP4 the meeting's mix, when stored)")
    p.add_argument("--gap-fill", choices=["hold", "black"], default="hold",
                   help="--video: a gap in the stream holds the last frame (default) or, past --gap-seconds, is black")
    p.add_argument("--gap-seconds", type=float, default=5.0, metavar="S",
                   help="--video --gap-fill black: gaps longer than this go black (default 5)")
    p.add_argument("--from-job", action="store_true",
                   help="download what the stack's export job wrote instead (its MP4s and contact sheets, "
                   "DIR/<participant>/<type>.mp4; `framesink export-job` starts it)")
    p.add_argument("--slides", action="store_true",
                   help="also write each distinct slide the analyzer found (DIR/<participant>/slides/<relms>.png)")
    target.add_arguments(p)
    p.set_defaults(func=run)


def frame_path(root: Path, frame: dict) -> Path:
    return root / frame["participant_id"] / frame["type"] / f"{schema.relative_ms_text(frame['relative_ms'])}.png"


def download(s3, bucket: str, frame: dict, path: Path) -> int:
    """One frame to ``path``; returns bytes written (0 if already there). Written to a
    temporary name and renamed, so an interrupted export never leaves a partial PNG."""
    if path.exists() and path.stat().st_size == frame["bytes"]:
        return 0
    body = s3.get_object(Bucket=bucket, Key=frame["s3_key"])["Body"].read()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(body)
    os.replace(tmp, path)
    return len(body)


def write_manifest(folder: Path, frames: list[dict]) -> None:
    """``frames.jsonl``: the index records of what was exported, one per line."""
    with open(folder / "frames.jsonl", "w", encoding="utf-8") as manifest:
        for frame in frames:
            manifest.write(json.dumps(frame, ensure_ascii=False) + "\n")


def writable_dir(path: Path) -> None:
    """Make ``path`` (and its parents) or say in one line why it cannot be written."""
    if path.exists() and not path.is_dir():
        raise CliError(f"--out {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--out {path}: cannot create it ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CliError(f"--out {path}: not writable")


def run(args: argparse.Namespace) -> int:
    if args.video:
        from ..cli import need_extra

        need_extra("video", "av", what="framesink export --video")
    writable_dir(args.out)
    t = target.resolve(args)
    if args.from_job:
        return download_job_exports(t, args.recording, args.participant, args.out)
    started = time.monotonic()
    index = t.index()
    frames = list(index.iter_frames(args.recording, participant_id=args.participant, frame_type=args.type))
    if not frames:
        what = "recording" if args.all or not index.has_recording(args.recording) else "participant"
        raise CliError(f"no indexed frames for {what} {args.recording if what == 'recording' else args.participant}")
    root = args.out
    s3 = t.client("s3")
    by_participant: dict[str, list[dict]] = {}
    for frame in frames:
        by_participant.setdefault(frame["participant_id"], []).append(frame)
    if args.video:
        status = 0
        for participant, theirs in by_participant.items():
            status |= export_video(argparse.Namespace(**{**vars(args), "participant": participant}), t, s3, theirs,
                                   root / participant)
        return status
    failures: list[tuple[dict, str]] = []
    written = 0
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool, \
            tqdm(total=len(frames), unit="frame", file=sys.stderr, disable=None, desc="export") as bar:
        futures = {pool.submit(download, s3, t.bucket, f, frame_path(root, f)): f for f in frames}
        for future in as_completed(futures):
            try:
                written += future.result()
            except (ClientError, BotoCoreError, OSError) as exc:
                failures.append((futures[future], str(exc)))
            bar.update(1)
    for frame, error in failures:
        print(f"framesink: could not download {frame['s3_key']}: {error}", file=sys.stderr)
    failed = {f["s3_key"] for f, _ in failures}
    for participant, theirs in by_participant.items():
        folder = root / participant
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(folder, theirs)
        ok = [f for f in theirs if f["s3_key"] not in failed]
        print(f"exported {len(ok)} of {len(theirs)} frames of participant {participant} to {folder}")
        if args.contact_sheet and ok:
            name = ok[-1].get("participant_name") or participant
            sheet = make_contact_sheet(
                [SheetEntry(frame_path(root, f), f["relative_ms"], f["type"]) for f in ok],
                folder / "contact_sheet.png",
                title=f"{name} - recording {args.recording}",
            )
            for path, why in sheet.skipped:
                print(f"framesink: warning: {path} cannot be decoded, left out of the contact sheet ({why})",
                      file=sys.stderr)
            print(f"contact sheet: {sheet.path} ({sheet.size[0]}x{sheet.size[1]}, "
                  f"{sheet.thumbnails} of {sheet.of_frames} frames)")
        if args.slides:
            export_slides(t, args.recording, participant, folder / "slides")
    print(f"{len(frames) - len(failed)} of {len(frames)} frames ({written / 1e6:.1f} MB downloaded) in "
          f"{time.monotonic() - started:.1f} s")
    return 1 if failures else 0


def download_job_exports(t: target.Target, recording_id: str, participant: str | None, out: Path) -> int:
    """The export job's files (exports/<rec>/<pid>/...) to ``out/<pid>/...``, skipping what is there."""
    s3 = t.client("s3")
    prefix = schema.export_prefix(recording_id)
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=t.bucket, Prefix=prefix)
               for o in page.get("Contents", [])
               if participant is None or o["Key"][len(prefix):].split("/", 1)[0] == participant]
    if not objects:
        raise CliError(f"the export job has written nothing for recording {recording_id}"
                       + (f" participant {participant}" if participant else "")
                       + ": `framesink export-job --recording R` starts it (or it is still running)")
    written = 0
    for obj in objects:
        relative = obj["Key"][len(prefix):]
        if ".." in relative.split("/"):
            continue  # never outside --out
        written += download(s3, t.bucket, {"s3_key": obj["Key"], "bytes": obj["Size"]}, out / relative)
    print(f"downloaded {len(objects)} export files ({written / 1e6:.1f} MB) to {out}")
    return 0


def export_video(args: argparse.Namespace, t: target.Target, s3, frames: list[dict], folder: Path) -> int:
    """One MP4 per type of the participant's frames (and the contact sheet)."""
    from framesink_core.ingest.audio import SAMPLE_RATE
    from framesink_core.read.export import audio_for, encode_stream
    from framesink_core.read.video import DEFAULT_GAP_MS

    if not 0 < args.gap_seconds <= 86400:
        raise CliError("--gap-seconds must be between 0 and 86400")
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, frames)
    fetch = lambda f: s3.get_object(Bucket=t.bucket, Key=f["s3_key"])["Body"].read()  # noqa: E731
    gap_ms = int(args.gap_seconds * 1000) if args.gap_fill == "black" else DEFAULT_GAP_MS
    entries, failed = [], 0
    for frame_type in ("webcam", "screenshare"):
        stream = [f for f in frames if f["type"] == frame_type]
        if not stream:
            continue
        path = folder / f"{frame_type}.mp4"
        with tqdm(total=len(stream), unit="frame", file=sys.stderr, disable=None, desc=f"{frame_type}.mp4") as bar:
            audio = audio_for(s3, t.bucket, args.recording, args.participant, frame_type) if args.audio else None
            stats, sampled = encode_stream(stream, fetch, path, gap_fill=None if args.gap_fill == "hold" else "black",
                                           gap_threshold_ms=gap_ms, ahead=max(1, args.workers), progress=bar.update,
                                           audio=audio)
        if stats is None:
            print(f"framesink: warning: no {frame_type} frame of participant {args.participant} could be decoded",
                  file=sys.stderr)
            failed += 1
            continue
        entries += sampled
        extra = "".join([f", {stats.skipped} skipped (undecodable or unreadable)" if stats.skipped else "",
                         f", {stats.filled} black gap frames" if stats.filled else "",
                         f", sound {stats.audio_samples / SAMPLE_RATE:.1f} s ({stats.audio_silent_samples / SAMPLE_RATE:.1f} s "
                         "with nothing stored)" if stats.audio_samples else ", no sound stored"])
        print(f"video: {path} ({stats.width}x{stats.height}, {stats.frames} frames, "
              f"{stats.duration_ms / 1000:.1f} s, {path.stat().st_size / 1e6:.1f} MB{extra})")
    if args.contact_sheet and entries:
        entries.sort(key=lambda e: e.relative_ms)
        name = frames[-1].get("participant_name") or args.participant
        sheet = make_contact_sheet(entries, folder / "contact_sheet.png", title=f"{name} - recording {args.recording}")
        print(f"contact sheet: {sheet.path} ({sheet.size[0]}x{sheet.size[1]}, "
              f"{sheet.thumbnails} of {len(frames)} frames)")
    if args.slides:
        export_slides(t, args.recording, args.participant, folder / "slides")
    return 1 if failed else 0


def export_slides(t: target.Target, recording_id: str, participant_id: str, folder: Path) -> int:
    """Each distinct slide once (a slide the presenter came back to is a repeat, skipped),
    copied from its first frame. Returns how many were written."""
    s3 = t.client("s3")
    slides = [s for s in t.index().slides(recording_id)
              if s["participant_id"] == participant_id and s["repeat_of_ms"] is None]
    for slide in slides:
        download(s3, t.bucket, {"s3_key": slide["s3_key"], "bytes": -1},
                 folder / f"{schema.relative_ms_text(slide['relative_ms'])}.png")
    print(f"slides: {len(slides)} distinct to {folder}" + ("" if slides else
          " (none found: is the analyzer deployed (-c analyzer=slides), and did the participant share a screen?)"))
    return len(slides)
