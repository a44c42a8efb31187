"""`framesink simulate`: a stand-in Recall bot (framesink/simulator.py does the work)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

from .. import target
from ..cli import CliError
from ..simulator import RECALL_MAX_RETRIES, RECALL_RECONNECT_DELAY, SimConfig, SimReport, simulate


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="stream generated participant frames to a websocket, as a Recall bot does",
        description="A stand-in Recall bot: one websocket connection carrying video_separate_png.data "
        "events for N participants at 2 fps each, reconnecting every 3 s (at most 30 tries) after a "
        "drop. Frames due while disconnected are lost, as with Recall.",
    )
    p.add_argument("--url", help="websocket URL with ?token= (default: ws_url from the state file)")
    p.add_argument("--state-file", type=Path, default=None, metavar="F",
                   help="`framesink local`'s state file, read when --url is not given (default: found as "
                   "--local finds it)")
    p.add_argument("--participants", type=_positive_int, default=3, metavar="N",
                   help="participants, each a webcam stream (default 3)")
    p.add_argument("--seconds", type=_positive_float, default=10.0, metavar="S", help="meeting length (default 10)")
    p.add_argument("--fps", type=_positive_float, default=2.0,
                   help="frames per second per stream (default 2, as Recall sends)")
    p.add_argument("--screenshare", action="store_true", help="the first participant also shares a 1280x720 screen")
    p.add_argument("--slides", type=_positive_int, metavar="N",
                   help="the shared screen shows a deck of N slides in order (implies --screenshare)")
    p.add_argument("--speech", action="store_true",
                   help="participants also join and speak in turns: speech on/off and transcript utterances")
    p.add_argument("--audio", action="store_true",
                   help="also each speaker's audio (a synthetic voice, in 0.1 s chunks) and the meeting's mix "
                   "(implies --speech)")
    p.add_argument("--webhooks", action="store_true",
                   help="also send Recall's signed bot status webhooks (joining_call, in_call_recording, then "
                   "call_ended, done) to webhook_url from the state file (or --webhook-url)")
    p.add_argument("--webhook-url", metavar="URL", help="where to POST the status webhooks")
    p.add_argument("--webhook-secret-file", type=Path, metavar="F",
                   help="a file holding the whsec_ secret that signs them (default: the state file's)")
    p.add_argument("--recording-id", metavar="R", help="default: a fresh uuid")
    p.add_argument("--small", action="store_true",
                   help="flat ~2 KB frames that fit API Gateway (default: camera-like 130-270 KB PNGs)")
    p.add_argument("--seed", type=int, default=0, help="seed for the generated frames and timestamps (default 0)")
    p.add_argument("--max-frame-bytes", type=_positive_int, metavar="K",
                   help="split each message into websocket frames of at most K bytes")
    p.add_argument("--reconnect-delay", type=float, default=RECALL_RECONNECT_DELAY, metavar="SECONDS",
                   help=f"wait between reconnect tries (Recall: {RECALL_RECONNECT_DELAY:g})")
    p.add_argument("--max-retries", type=_positive_int, default=RECALL_MAX_RETRIES,
                   help=f"tries per incident before giving up (Recall: {RECALL_MAX_RETRIES})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    url = args.url or target.read_state(args.state_file)["ws_url"]
    if urlsplit(url).scheme not in ("ws", "wss") or not urlsplit(url).hostname:
        raise CliError(f"--url must be a ws:// or wss:// URL, got {url[:80]!r}")
    webhook_url = webhook_secret = None
    if args.webhooks or args.webhook_url:
        state = {} if (args.webhook_url and args.webhook_secret_file) else target.read_state(args.state_file)
        webhook_url = args.webhook_url or state.get("webhook_url")
        if args.webhook_secret_file:
            try:
                webhook_secret = args.webhook_secret_file.read_text().strip()
            except OSError as exc:
                raise CliError(f"--webhook-secret-file {args.webhook_secret_file}: {exc.strerror}") from None
        else:
            webhook_secret = state.get("webhook_secret")
        if not webhook_url or urlsplit(webhook_url).scheme not in ("http", "https"):
            raise CliError("--webhooks needs an http(s) webhook URL: --webhook-url, or `framesink local`'s state file")
        if not (webhook_secret or "").startswith("whsec_"):
            raise CliError("--webhooks needs the whsec_ secret that signs them (--webhook-secret-file, or the state file)")
    config = SimConfig(
        url=url, participants=args.participants, seconds=args.seconds, fps=args.fps,
        screenshare=args.screenshare or bool(args.slides), recording_id=args.recording_id, small=args.small,
        seed=args.seed, max_frame_bytes=args.max_frame_bytes, reconnect_delay=args.reconnect_delay,
        max_retries=args.max_retries, slides=args.slides or 0, speech=args.speech or args.audio, audio=args.audio,
        webhook_url=webhook_url, webhook_secret=webhook_secret,
    )
    report = asyncio.run(simulate(config))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(format_report(report))
    webhook_failed = any(status != 200 for _, status in report.webhooks)
    return 1 if report.gave_up or report.connections == 0 or webhook_failed else 0


def format_report(r: SimReport) -> str:
    lines = [
        f"recording {r.recording_id} (bot {r.bot_id}) -> {r.url}",
        f"  frames     {r.frames_sent} sent, {r.frames_lost} lost of {r.frames_generated} "
        f"({_kb(r.bytes_sent)} sent, largest message {_kb(r.largest_message)})",
        f"  connects   {r.connections} ({r.reconnects} reconnects, {r.failed_connects} failed"
        + (f", refused {_codes(r.refused)}" if r.refused else "") + ")",
        f"  closes     {_codes(r.closes) or 'none'}" + ("   GAVE UP after too many failed tries" if r.gave_up else ""),
    ]
    if r.context_sent:
        lines.append(f"  context    {r.context_sent} participant events and utterances")
    if r.audio_sent or r.audio_lost:
        lines.append(f"  audio      {r.audio_sent} chunks sent, {r.audio_lost} lost")
    if r.webhooks:
        lines.append("  webhooks   " + ", ".join(f"{event} {status}" for event, status in r.webhooks))
    for s in r.streams:
        lines.append(f"  {s['participant_id']:>6} {s['name']:<20} {s['type']:<11} {s['sent']:>5} sent {s['lost']:>5} lost")
    lines += [f"  note       {hint}" for hint in hints(r)]
    return "\n".join(lines)


def hints(r: SimReport) -> list[str]:
    """What happened and what to do, for the outcomes a first run meets."""
    said = []
    if r.closes.get("1009"):
        said.append(f"closed with 1009 (message too big) x{r.closes['1009']}: API Gateway refuses frames over 32 KB, "
                    f"and these messages reach {_kb(r.largest_message)}. Send camera-size frames to the container "
                    "receiver (`framesink local`, its default ingress; a deploy's WebSocketUrl), or add --small "
                    "for frames that fit API Gateway")
    if r.connections == 0 and r.failed_connects:
        error = r.connect_error or "no answer"
        if "401" in error or "403" in error:
            said.append(f"every connect was refused ({error}): the URL's ?token= is missing or wrong "
                        "(the state file's ws_url carries the right one)")
        else:
            said.append(f"could not connect to {r.url} ({error}): is `framesink local` running? "
                        "(or pass the URL of a running stack with --url)")
    return said


def _codes(counts: dict) -> str:
    return ", ".join(f"{code} x{n}" for code, n in counts.items())


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value
