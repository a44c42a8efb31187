"""`framesink notes --recording R --out DIR`: slide notes. Each slide shown (the slide analyzer's,
or the novelty function's changes), when it was on screen, who spoke and what was said while it
was: DIR/notes.md with the slides as DIR/slide-NN.png beside it, and DIR/notes.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from framesink_core.read.notes import render

from .. import target
from ..cli import CliError


def register(sub) -> None:
    p = sub.add_parser("notes", help="slide notes: each slide with who spoke and what was said over it",
                       description=__doc__)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where notes.md, notes.json and the "
                   "slide PNGs go (created)")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    where = target.resolve(args)
    index = where.index()
    notes, files = render(where.client("s3"), where.bucket, index, args.recording)
    if not notes and not index.has_recording(args.recording):
        raise CliError(f"recording {args.recording} has nothing stored")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (body, _) in files.items():
        (args.out / name).write_bytes(body)
    said = sum(len(n.said) for n in notes)
    print(f"{len(notes)} slide{'s' if len(notes) != 1 else ''}, {said} utterance{'s' if said != 1 else ''} over them: "
          f"{args.out / 'notes.md'}")
    return 0
