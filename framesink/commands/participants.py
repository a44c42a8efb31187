"""`framesink participants`: who is in a recording, with frame counts and first/last times."""

from __future__ import annotations

import argparse

from .. import target
from ..cli import CliError
from ..output import clock, json_lines, quiet_broken_pipe, table


def register(sub) -> None:
    p = sub.add_parser("participants", help="list a recording's participants",
                       description="List a recording's participants from the index: name, host, "
                       "platform, frame count, bytes, first and last frame time (relative ms).")
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    index = target.resolve(args, need=("table",)).index()
    found = index.participants(args.recording)
    if not found:
        raise CliError(f"recording {args.recording} has no indexed participants")
    try:
        if args.json:
            json_lines(found)
        else:
            rows = [(p["participant_id"], p["participant_name"], p["is_host"], p["platform"], p["frame_count"],
                     p["bytes"], clock(p["first_ms"]), clock(p["last_ms"])) for p in found]
            table(rows, ["PARTICIPANT", "NAME", "HOST", "PLATFORM", "FRAMES", "BYTES", "FIRST", "LAST"],
                  right={"FRAMES", "BYTES", "FIRST", "LAST"})
    except BrokenPipeError:
        quiet_broken_pipe()
    return 0
