"""`framesink timeline` and `framesink transcript`: what was said and who spoke when, from the
participant events and final transcript utterances Recall sends on the same socket as the
frames (docs/storage.md, "Context items"). Times are the frames' clock: seconds from the
recording's start, negative before it."""

from __future__ import annotations

import argparse

from .. import target
from ..cli import CliError
from ..output import json_lines, printable, table


def register(sub) -> None:
    p = sub.add_parser("timeline", help="who spoke when in a recording (and its participant events)",
                       description=__doc__)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--events", action="store_true", help="every participant event (join, leave, chat, ...) "
                   "instead of the speaker segments")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    target.add_arguments(p)
    p.set_defaults(func=timeline)

    p = sub.add_parser("transcript", help="what was said in a recording, in time order", description=__doc__)
    p.add_argument("--recording", required=True, metavar="R", help="recording id")
    p.add_argument("--since", type=int, metavar="MS", help="utterances starting at or after this relative ms")
    p.add_argument("--until", type=int, metavar="MS", help="utterances starting before this relative ms")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    target.add_arguments(p)
    p.set_defaults(func=transcript)


def _seconds(ms: int | None) -> str:
    return "..." if ms is None else f"{ms / 1000:.1f} s"


def _known(index, recording_id: str, found: list) -> None:
    if not found and not index.has_recording(recording_id):
        raise CliError(f"recording {recording_id} has nothing stored")


def timeline(args: argparse.Namespace) -> int:
    index = target.resolve(args, need=("table",)).index()
    if args.events:
        found = index.participant_events(args.recording)
        _known(index, args.recording, found)
        if args.json:
            json_lines(found)
            return 0
        table([(_seconds(e["relative_ms"]), e["participant_id"], printable(e.get("participant_name") or ""),
                e["event"], printable(e.get("text") or "")[:80]) for e in found],
              ["TIME", "PARTICIPANT", "NAME", "EVENT", "TEXT"], right={"TIME"})
        print(f"{len(found)} participant event{'s' if len(found) != 1 else ''}")
        return 0
    found = index.speaker_timeline(args.recording)
    _known(index, args.recording, found)
    if args.json:
        json_lines(found)
        return 0
    table([(_seconds(s["start_ms"]), _seconds(s["end_ms"]), s["participant_id"],
            printable(s.get("participant_name") or ""), s["source"]) for s in found],
          ["FROM", "TO", "PARTICIPANT", "NAME", "FROM_EVENTS"], right={"FROM", "TO"})
    talk = index.talk_time(args.recording, found)
    print(f"{len(found)} speaking segment{'s' if len(found) != 1 else ''}; talk time: "
          + (", ".join(f"{pid} {ms / 1000:.1f} s" for pid, ms in sorted(talk.items(), key=lambda kv: -kv[1])) or "-"))
    return 0


def transcript(args: argparse.Namespace) -> int:
    index = target.resolve(args, need=("table",)).index()
    found = index.transcript(args.recording, since=args.since, until=args.until)
    _known(index, args.recording, found)
    if args.json:
        json_lines(found)
        return 0
    for u in found:
        name = printable(u.get("participant_name") or u["participant_id"])
        print(f"[{_seconds(u['start_ms']):>9}] {name}: {printable(u['text'])}")
    print(f"{len(found)} utterance{'s' if len(found) != 1 else ''}")
    return 0
