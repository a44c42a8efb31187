"""`framesink export-job --recording R`: (re)start the stack's end-of-meeting export job.

The job (framesink_core/read/export.py) writes one MP4 and a contact sheet per participant and
type under exports/<R>/. It starts by itself on bot.done; this command starts it for a
recording whose job failed, was stranded running for over 2 hours, never started (no
webhook), or, with --again, finished (after a `reindex`, say). It marks the job queued
(one conditional write, so a job running now is never started twice) and sends the job's
queue its message; `framesink recording R` shows the job and its files.
"""

from __future__ import annotations

import argparse
import json
import time

from framesink_core.meeting.meetings import MANUAL_TRIGGER, RERUN_TRIGGER, claim_export
from framesink_core.read.query import check_id

from .. import target
from ..cli import CliError

OUTPUT_EXPORT_QUEUE = "ExportQueueUrl"  # infra/stack.py; `framesink local` states export_queue_url


def register(sub) -> None:
    p = sub.add_parser("export-job", help="(re)start the stack's end-of-meeting export of a recording (MP4s)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--again", action="store_true", help="also re-run a job that finished (done)")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recording = check_id(args.recording, "recording")
    where = target.resolve(args, need=("table",))
    queue_url = where.state.get("export_queue_url") if where.local else where.output(OUTPUT_EXPORT_QUEUE)
    if not queue_url:
        raise CliError("this stack has no export job (deploy with -c exports=true)")
    if not where.index().has_recording(recording):
        raise CliError(f"recording {recording} is not in the index")
    trigger = RERUN_TRIGGER if args.again else MANUAL_TRIGGER
    status = claim_export(where.client("dynamodb"), where.table, recording, trigger, time.time())
    if status != "queued":
        hint = " (add --again to re-run it)" if status == "done" else (
            " (it is being exported now; a job stranded running for 2 hours can be restarted)"
            if status == "running" else "")
        raise CliError(f"export job of {recording} is {status or 'missing'}: not restarted{hint}")
    where.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(
        {"kind": "recording", "recording_id": recording, "trigger": trigger}))
    print(f"export job of {recording} queued; `framesink recording {recording}{target.same_stack(args)}` "
          "shows it and its MP4s once done")
    return 0
