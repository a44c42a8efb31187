"""`framesink delete --recording R [--yes]`: remove a recording's frames, exports and index
items (a privacy request). Without --yes it counts what would go and deletes nothing."""

from __future__ import annotations

import argparse

from framesink_core.read.delete import delete_recording

from .. import target
from ..cli import CliError


def register(sub) -> None:
    p = sub.add_parser("delete", help="delete a recording's frames, exports and index items (dry run without --yes)",
                       description=__doc__)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--yes", action="store_true", help="delete for real (default: count only)")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    where = target.resolve(args)
    result = delete_recording(where.client("s3"), where.client("dynamodb"), where.bucket, where.table,
                              args.recording, dry_run=not args.yes)
    if not result.found:
        raise CliError(f"recording {args.recording} has nothing stored (no objects, no index items)")
    verb = "deleted" if args.yes else "would delete"
    print(f"{verb}: {result.objects} frames and {result.exports} export files ({result.object_bytes / 1e6:.1f} MB) "
          f"under s3://{where.bucket}/, {result.items} index items"
          + (f" (bots {', '.join(result.bots)})" if result.bots else ""))
    if result.late_objects or result.late_items:
        print(f"  of which stored while the delete ran (a live stream; swept again after 5 s): "
              f"{result.late_objects} frames, {result.late_items} index items")
    if args.yes:
        print("  later frames of this recording are refused (recording_deleted) for 30 days")
    if not args.yes:
        print("dry run: nothing was deleted; add --yes to delete")
    return 0
