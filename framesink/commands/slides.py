"""`framesink slides`: the slide changes the example analyzer found in a recording's
screenshare frames (deploy with -c analyzer=slides; `framesink local` always runs it)."""

from __future__ import annotations

import argparse

from .. import target
from ..cli import CliError
from ..output import clock, json_lines, table


def register(sub) -> None:
    p = sub.add_parser("slides", help="list the slide changes found in a recording's screenshares",
                       description=__doc__)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    index = target.resolve(args, need=("table",)).index()
    found = index.slides(args.recording)
    if not found and not index.has_recording(args.recording):
        raise CliError(f"recording {args.recording} has no indexed frames")
    if args.json:
        json_lines(found)
        return 0
    rows = [(clock(s["relative_ms"]), s["relative_ms"], s["participant_id"],
             "-" if s["distance"] is None else f"{s['distance']:.1f}",
             clock(s["repeat_of_ms"]) if s["repeat_of_ms"] is not None else "new", s["s3_key"]) for s in found]
    if rows:
        table(rows, ["TIME", "REL_MS", "PARTICIPANT", "CHANGE", "REPEAT_OF", "S3_KEY"], right={"TIME", "REL_MS", "CHANGE"})
    distinct = sum(1 for s in found if s["repeat_of_ms"] is None)
    print(f"{len(found)} slide change{'s' if len(found) != 1 else ''}, {distinct} distinct slide{'s' if distinct != 1 else ''}")
    return 0
