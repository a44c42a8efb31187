"""`framesink recordings` and `framesink recording R`: recordings with their status (from
Recall's bot status webhooks), a recording's timeline, participants, frames and exports."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from framesink_core.read.query import check_id, recording_view

from .. import target
from ..cli import CliError
from ..output import clock, json_lines, printable, table


def register(sub) -> None:
    p = sub.add_parser("recordings", help="list recordings with their status (newest first)",
                       description="List recordings from the index, newest first, with the status Recall's bot "
                       "status webhooks reported (joining_call ... in_call_recording, call_ended, done, fatal).")
    p.add_argument("--bot", metavar="B", help="only this bot's recordings")
    p.add_argument("--status", metavar="S", help="only recordings in this status (e.g. done)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    target.add_arguments(p)
    p.set_defaults(func=run_list)

    p = sub.add_parser("recording", help="one recording: status and timeline, participants, frames, exports",
                       description="One recording: its status and the bot's timeline of status events, its "
                       "participants, frames and duration, slide changes, and its exports with presigned URLs.")
    p.add_argument("recording", metavar="R", help="recording id")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--url-expires", type=int, default=900, metavar="SECONDS",
                   help="lifetime of the exports' presigned URLs (default 900)")
    target.add_arguments(p)
    p.set_defaults(func=run_one)


def _when(ms) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def run_list(args: argparse.Namespace) -> int:
    index = target.resolve(args, need=("table",)).index()
    found = index.recordings(args.bot, args.status)
    if args.json:
        json_lines(found)
        return 0
    if found:
        table([(r["recording_id"], r["bot_id"] or "-", r.get("status") or "-", printable(r.get("status_at") or "-"),
                _when(r.get("first_seen"))) for r in found],
              ["RECORDING", "BOT", "STATUS", "STATUS_AT", "FIRST_SEEN"])
    print(f"{len(found)} recording{'s' if len(found) != 1 else ''}")
    return 0


def describe(where: target.Target, recording_id: str, url_expires: int = 900) -> dict:
    """Everything `framesink recording` shows, as one dict."""
    presigner = where.client("s3", signature_version="s3v4")  # SigV4: see query.presign_client
    found = recording_view(where.index(), check_id(recording_id, "recording"), presigner, where.bucket, url_expires)
    if found is None:
        raise CliError(f"recording {recording_id} is not in the index")
    parts = found["participants"]
    found["frames"] = sum(p.get("frame_count") or 0 for p in parts)
    firsts = [p["first_ms"] for p in parts if p.get("first_ms") is not None]
    lasts = [p["last_ms"] for p in parts if p.get("last_ms") is not None]
    found["duration_ms"] = max(lasts) - min(firsts) if firsts and lasts else 0
    found["talk_ms"] = where.index().talk_time(recording_id)  # speech on/off (or the transcript)
    return found


def run_one(args: argparse.Namespace) -> int:
    found = describe(target.resolve(args), args.recording, args.url_expires)
    if args.json:
        print(json.dumps(found, ensure_ascii=False, default=str))
        return 0
    meta = found["meta"] or {}
    print(f"recording {found['recording_id']}  bot {meta.get('bot_id') or '-'}  status {meta.get('status') or '-'}"
          f"  first seen {_when(meta.get('first_seen'))}")
    print(f"  {len(found['participants'])} participants, {found['frames']} frames, {clock(found['duration_ms'])} long")
    if meta.get("endpoint_status"):
        print(f"  realtime endpoint: {meta['endpoint_status']} at {printable(str(meta.get('endpoint_status_at')))}"
              + (" (Recall stopped sending: frames after this are missing)" if meta["endpoint_status"] == "failed"
                 else ""))
    for event in (found["bot"] or {}).get("timeline", []):
        # text from the webhook body (signed by Recall, still escaped like every free text)
        print(f"  {printable(event.get('at') or _when(event.get('received_at')))}  {event['status']}"
              + (f" ({printable(event['sub_code'])})" if event.get("sub_code") else ""))
    if found["participants"]:
        print()
        talk = found["talk_ms"]
        table([(p["participant_id"], printable(p.get("participant_name") or "-"), ",".join(p.get("types") or []),
                p["frame_count"], clock(p["first_ms"]), clock(p["last_ms"]),
                f"{talk[p['participant_id']] / 1000:.1f} s" if p["participant_id"] in talk else "-")
               for p in found["participants"]],
              ["PARTICIPANT", "NAME", "TYPES", "FRAMES", "FIRST", "LAST", "TALK"], right={"FRAMES", "FIRST", "LAST", "TALK"})
        if talk:
            print(f"  speakers by talk time: " + ", ".join(f"{pid} {ms / 1000:.1f} s" for pid, ms in
                                                           sorted(talk.items(), key=lambda kv: -kv[1]))
                  + f" (framesink timeline --recording {found['recording_id']}{target.same_stack(args)})")
    if found["slides"]:
        print(f"\n  {len(found['slides'])} slide changes (framesink slides --recording {found['recording_id']}"
              f"{target.same_stack(args)})")
    job = found.get("export_job")
    if job:
        print(f"\n  export: {job.get('job_status')} (trigger {job.get('trigger')}, attempts {job.get('attempts')})")
    for export in found["exports"]:
        sound = f"  sound {clock(export['audio_ms'])}" if export.get("audio_ms") else "  no sound"
        gap = (f"  ENDS EARLY: Recall's endpoint failed at {printable(str(export['endpoint_failed_at']))}"
               if export.get("endpoint_failed_at") else "")
        print(f"  {export['participant_id']:>6} {export['type']:<11} {export['frames']:>6} frames "
              f"{clock(export['duration_ms'])}{sound}  {export['bytes'] / 1e6:.1f} MB  {export['s3_key']}{gap}\n"
              f"         {export['url']}")
    return 0
