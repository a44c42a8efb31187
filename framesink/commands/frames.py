"""`framesink frames`: list a recording's indexed frames, in time order."""

from __future__ import annotations

import argparse

from .. import target
from ..cli import CliError
from ..output import clock, json_lines, quiet_broken_pipe, table

JSON_FIELDS = ("recording_id", "participant_id", "participant_name", "type", "relative_ms", "absolute",
               "s3_key", "bytes", "width", "height", "bot_id", "stored_at")


def register(sub) -> None:
    p = sub.add_parser(
        "frames",
        help="list indexed frames (time order; filter by participant, type, time range)",
        description="List a recording's frames from the DynamoDB index, in time order. The time "
        "range is in milliseconds since the recording started: --since is inclusive, --until "
        "exclusive (since <= relative_ms < until).",
    )
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--participant", metavar="P", help="only this participant's frames")
    p.add_argument("--type", choices=["webcam", "screenshare"], help="only this type")
    p.add_argument("--since", metavar="MS", help="from this relative millisecond (inclusive)")
    p.add_argument("--until", metavar="MS", help="up to this relative millisecond (exclusive)")
    p.add_argument("--novel", action="store_true",
                   help="only frames the novelty function flagged novel (a stream's first, a change, or one per "
                   "heartbeat on a static stream); frames not scored yet are left out")
    p.add_argument("--speaking", action="store_true",
                   help="with --participant: only the frames taken while that participant was speaking "
                   "(speech on/off, or the transcript; framesink timeline)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (novel and change_score are "
                   "null until the frame is scored)")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from framesink_core.read.query import NOVELTY_FIELDS

    if args.speaking and (not args.participant or args.novel or args.since or args.until):
        raise CliError("--speaking takes --participant (and --type), not --novel, --since or --until")
    index = target.resolve(args, need=("table",)).index()
    try:
        frames = (index.frames_while_speaking(args.recording, args.participant, frame_type=args.type)
                  if args.speaking else
                  index.iter_frames(args.recording, participant_id=args.participant, frame_type=args.type,
                                    since=args.since, until=args.until, novel=args.novel))
        if args.json:
            count = json_lines({k: f[k] for k in JSON_FIELDS + NOVELTY_FIELDS} for f in frames)
        else:
            rows = [
                (clock(f["relative_ms"]), f["relative_ms"], f["participant_id"], f["participant_name"], f["type"],
                 f"{f['width']}x{f['height']}", f["bytes"], f["absolute"], f["s3_key"])
                for f in frames
            ]
            count = len(rows)
            if rows:
                table(rows, ["TIME", "REL_MS", "PARTICIPANT", "NAME", "TYPE", "SIZE", "BYTES", "ABSOLUTE", "S3_KEY"],
                      right={"TIME", "REL_MS", "BYTES", "SIZE"})
    except BrokenPipeError:
        quiet_broken_pipe()
        return 0
    if count == 0 and not (args.novel or args.speaking) and not index.has_recording(args.recording):
        raise CliError(f"recording {args.recording} has no indexed frames (reindex it if its objects are in S3)")
    if not args.json:
        print(f"{count}{' novel' if args.novel else ''} frame{'s' if count != 1 else ''}"
              + (" while speaking" if args.speaking else ""))
    return 0
