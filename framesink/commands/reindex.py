"""`framesink reindex`: rebuild a recording's index from its S3 objects (framesink_core.read.reindex)."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from framesink_core.read.reindex import reindex_recording

from .. import target
from ..cli import CliError


def register(sub) -> None:
    p = sub.add_parser(
        "reindex",
        help="rebuild a recording's index from its S3 objects (repairs lost index writes)",
        description="List recordings/<R>/ in the bucket, read each frame's object metadata and "
        "write its index item, then recompute each participant's totals. Safe to repeat: a "
        "second run changes nothing. Run it when the recording is not being ingested.",
    )
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--workers", type=int, default=16, metavar="N", help="parallel HeadObject calls (default 16)")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = target.resolve(args).store()
    with tqdm(unit="object", file=sys.stderr, disable=None, desc="reindex") as bar:
        result = reindex_recording(store, args.recording, workers=args.workers, progress=bar.update)
    if result.objects == 0:
        raise CliError(f"no objects under s3://{store.bucket}/recordings/{args.recording}/")
    for key, reason in result.skipped:
        print(f"framesink: skipped {key}: {reason}", file=sys.stderr)
    print(f"reindexed recording {result.recording_id}: {result.indexed} frames of {result.objects} objects, "
          f"{result.participants} participants, {result.bots} bot recording items, "
          f"{len(result.skipped)} skipped, in {result.seconds:.1f} s")
    return 1 if result.skipped else 0
