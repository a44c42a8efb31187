"""`framesink results`: what analyzers of the kit returned for a recording's frames
(`framesink analyze`, or one the analyzers setting deploys; docs/analyzers.md)."""

from __future__ import annotations

import argparse
import json

from .. import target
from ..cli import CliError
from ..output import clock, json_lines, printable, table


def register(sub) -> None:
    p = sub.add_parser("results", help="list what analyzers returned for a recording's frames", description=__doc__)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--analyzer", metavar="NAME", help="only this analyzer's results")
    p.add_argument("--limit", type=int, metavar="N", help="at most N results")
    p.add_argument("--json", action="store_true", help="one JSON object per line, the result in full")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    index = target.resolve(args, need=("table",)).index()
    found = index.results(args.recording, analyzer=args.analyzer, limit=args.limit)
    if not found and not index.has_recording(args.recording):
        raise CliError(f"recording {args.recording} has no indexed frames")
    if args.json:
        json_lines(found)
        return 0
    rows = [(r["analyzer"], clock(r["relative_ms"]), r["relative_ms"], r["participant_id"], r["type"],
             printable(json.dumps(r["result"], ensure_ascii=False))[:100]) for r in found]
    if rows:
        table(rows, ["ANALYZER", "TIME", "REL_MS", "PARTICIPANT", "TYPE", "RESULT"], right={"TIME", "REL_MS"})
    print(f"{len(found)} result{'s' if len(found) != 1 else ''}"
          + (f" of {args.analyzer}" if args.analyzer else ""))
    return 0
