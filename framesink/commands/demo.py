"""`framesink demo`: the local stack, a simulated meeting, and what was stored, read back;
then what the outlet gives: the live feed (a slide deck shared on screen, the slides the
analyzer found, `framesink watch`'s lag) and the meeting's end (Recall's status webhooks,
the recording's status, an MP4 per participant read back with PyAV).

Everything runs in this process on 127.0.0.1 (random free ports, a temporary state file) and
is stopped before it returns, except `framesink watch`, which runs as its own process against
the local stack, as a user would run it. Stored frames are read back from moto's S3 (a
listing) and the DynamoDB index (Queries), never from the simulator's own counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item

from ..local import APIGW_MAX_FRAME_BYTES, APIGW_MAX_MESSAGE_BYTES, LocalConfig, LocalStack
from ..simulator import Bot, SimConfig, build_streams, simulate


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the local stack, simulate a short meeting, and show what was stored",
        description="Start the local stack in-process, stream a short simulated meeting through the "
        "API Gateway emulator, print per participant what landed in S3 and the DynamoDB index, then "
        "show what API Gateway's limits do to real-size frames. Leaves nothing running.",
    )
    p.add_argument("--participants", type=int, default=3, metavar="N", help="participants in part 1's meeting (default 3)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the simulated meeting (default 10)")
    p.add_argument("--burst-seconds", type=float, default=4.0,
                   help="length of the real-size frame burst (0 to skip)")
    p.add_argument("--slides", type=int, default=4, help="slides in the shared-screen part (0 to skip)")
    p.add_argument("--verbose", "-v", action="store_true", help="show the handlers' logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import need_extra

    need_extra("all", "moto", "obstore", "av", what="framesink demo")
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = _Printer()
    with tempfile.TemporaryDirectory(prefix="framesink-demo-") as tmp:
        # export_quiet_seconds: bot.call_ended's fallback export check comes after 2 s, not 10
        # minutes (bot.done starts the export anyway), so the demo's queues drain at once.
        config = LocalConfig(port=0, state_file=Path(tmp) / "local.json", reset_on_stop=True,
                             handler_log_level="INFO" if args.verbose else "ERROR", export_quiet_seconds=2,
                             frame_queue=True)  # part 3 watches through it
        out.line("framesink demo: the whole pipeline on this machine, no AWS account")
        out.line("  simulated Recall bot -> API Gateway WebSocket emulator -> the real Lambda handlers")
        out.line("  -> S3 + DynamoDB (moto, created from the same table definition as the CDK stack)")
        async with LocalStack(config) as stack:
            out.line(f"  local stack up in {time.perf_counter() - started:.1f} s: {stack.emulator.url}")
            out.blank()

            # The bot also sends Recall's signed status webhooks: part 4 shows what they started.
            meeting = SimConfig(url=stack.state["ws_url"], participants=args.participants, seconds=args.seconds,
                                small=True, recording_id=f"demo-{secrets.token_hex(4)}", seed=1,
                                webhook_url=stack.state["webhook_url"], webhook_secret=stack.state["webhook_secret"],
                                after_call_seconds=1.0, speech=True, audio=True)
            out.line(f"1. A {args.seconds:g} s meeting: {args.participants} participants, 2 fps each, "
                     "small 480x360 PNG frames that fit API Gateway...")
            report = await simulate(meeting)
            await stack.wait_idle()  # every message the emulator received is handled
            rows = read_back(stack.client("s3"), stack.client("dynamodb"), stack.config.bucket,
                             stack.config.table, meeting.recording_id)
            sent = {s["participant_id"]: s["sent"] for s in report.streams if s["type"] == "webcam"}
            out.blank()
            out.line(f"   Stored under s3://{stack.config.bucket}/{schema.recording_prefix(meeting.recording_id)}")
            out.line("   (read back from the S3 listing and the DynamoDB index, not from the simulator):")
            out.blank()
            out.table(
                ["id", "participant", "sent", "stored", "bytes", "index", "first -> last frame (relative ms)"],
                [[r["participant_id"], r["name"], sent.get(int(r["participant_id"]), 0), r["frames"],
                  _kb(r["bytes"]), r["index_items"], f"{r['first_ms']:,} -> {r['last_ms']:,}"] for r in rows],
                align="<<>>>><",
            )
            out.blank()
            for r in rows:
                out.line(f"   {r['participant_id']:>4} first  {r['first_key']}")
                out.line(f"   {'':>4} last   {r['last_key']}")
            total_stored = sum(r["frames"] for r in rows)
            ok = total_stored == report.frames_sent and all(r["frames"] == r["index_items"] for r in rows)
            out.blank()
            out.line(f"   {report.frames_sent} frames sent, {total_stored} stored in S3, "
                     f"{sum(r['index_items'] for r in rows)} indexed: "
                     + ("every frame sent was stored exactly once." if ok else "MISMATCH, see above."))
            ok = _context(out, stack, meeting.recording_id, report) and ok

            if args.burst_seconds > 0:
                out.blank()
                await _burst(out, stack, args.burst_seconds)
            if args.slides > 0:
                out.blank()
                ok = await _live_feed(out, stack, args.slides, Path(tmp)) and ok
            out.blank()
            ok = await _meeting_end(out, stack, meeting.recording_id, report, Path(tmp)) and ok
            out.blank()
            ok = await _analyzer(out, stack, meeting.recording_id) and ok
        out.blank()
        out.line(f"Stack stopped, nothing left running. Demo took {time.perf_counter() - started:.0f} s.")
    return 0 if ok else 1


def _context(out: "_Printer", stack: LocalStack, recording_id: str, report) -> bool:
    """The participant events and utterances the bot sent on the same socket, read back."""
    index = stack.index()
    segments, said = index.speaker_timeline(recording_id), index.transcript(recording_id)
    talk = index.talk_time(recording_id, segments)
    out.blank()
    out.line(f"   The bot also sent {report.context_sent} participant events and transcript utterances (joins, one a")
    out.line(f"   second before the recording started, and speakers in turns) and {report.audio_sent} audio chunks (each")
    out.line("   speaker's voice and the meeting's mix: they become the MP4s' sound in part 4). Who spoke when:")
    for s in segments:
        words = next((u["text"] for u in said if u["participant_id"] == s["participant_id"]
                      and s["start_ms"] <= u["start_ms"] < (s["end_ms"] or u["start_ms"] + 1)), "")
        out.line(f"   {s['start_ms'] / 1000:>5.1f}-{(s['end_ms'] or 0) / 1000:>4.1f} s  {s['participant_name']:<14} \"{words}\"")
    out.line("   talk time: " + ", ".join(f"{pid} {ms / 1000:.1f} s" for pid, ms in sorted(talk.items())))
    out.line(f"   (framesink timeline --local --recording {recording_id}; framesink transcript ...)")
    return len(said) == len(report.utterances) and len(segments) == len(report.utterances)


async def _burst(out: "_Printer", stack: LocalStack, seconds: float) -> None:
    out.line(f"2. Now {seconds:g} s of real-size frames: camera-like 480x360 PNGs as big as real webcam")
    out.line("   frames, sent as Recall sends them (one message each), reconnecting every 3 s after a drop,")
    out.line("   through each ingress:")
    direct_url = await stack.start_direct()
    rows = []
    for label, url in (("API Gateway (emulated)", stack.state["ws_url"]), ("container receiver", direct_url)):
        burst = SimConfig(url=url, participants=1, seconds=seconds, small=False,
                          recording_id=f"demo-real-{secrets.token_hex(4)}", seed=2)
        report = await simulate(burst)
        await stack.wait_idle()
        stored = read_back(stack.client("s3"), stack.client("dynamodb"), stack.config.bucket, stack.config.table,
                           burst.recording_id)
        rows.append([label, report.frames_generated, report.frames_sent, report.closes.get("1009", 0),
                     report.frames_lost, sum(r["frames"] for r in stored), _kb(report.largest_message)])
    out.blank()
    out.table(["ingress", "frames due", "sent", "closed with 1009", "lost while reconnecting", "stored",
               "largest message"], rows, align="<>>>>>>")
    out.blank()
    out.line(f"   API Gateway allows {APIGW_MAX_FRAME_BYTES // 1024} KB per websocket frame and "
             f"{APIGW_MAX_MESSAGE_BYTES // 1024} KB per message, so each real")
    out.line("   frame closes the connection (1009) and the frames due during Recall's 3 s reconnect wait")
    out.line("   are lost. The container receiver (`framesink local --ingress direct`, ECS Fargate in AWS)")
    out.line("   runs the same core without those limits (docs/ingest.md: \"API Gateway limits\"): it is the URL the")
    out.line("   default deploy hands Recall.")


async def _live_feed(out: "_Printer", stack: LocalStack, slides: int, tmp: Path) -> bool:
    """A deck shared on screen through the container receiver, followed by `framesink watch`
    (its own process, on the frame queue) while the slide analyzer runs on the same events."""
    seconds = 2.0 * slides
    recording_id = f"demo-slides-{secrets.token_hex(4)}"
    out.line(f"3. The live feed: a participant shares a deck of {slides} slides (1280x720, {seconds:g} s) through")
    out.line("   the container receiver. Every stored frame is a frame event on EventBridge -> the frame queue;")
    out.line("   `framesink watch` follows it in another process while the example slide analyzer runs on")
    out.line("   the same events and writes a slide item beside the frames for each change it sees...")
    direct_url = stack.receiver_url or await stack.start_direct()
    # The deck's frames first (a few seconds of PNG work): `watch --idle-exit` counts from its
    # own start, so a watch started before them could give up before the first frame.
    config = SimConfig(url=direct_url, participants=1, seconds=seconds, small=True, slides=slides,
                       recording_id=recording_id, seed=3, speech=True)
    bot = Bot(config, await asyncio.to_thread(build_streams, config))
    watch = subprocess.Popen(
        [sys.executable, "-m", "framesink", "watch", "--local", "--state-file", str(stack.config.state_file),
         "--recording", recording_id, "--json", "--idle-exit", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    await asyncio.sleep(1.0)  # let it start polling: the lag is measured from when a frame is stored
    report = await bot.run()
    await stack.wait_idle(analyzer=True)
    lines, _ = await asyncio.get_running_loop().run_in_executor(None, watch.communicate)
    seen = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    lags = sorted(f["lag_ms"] for f in seen if f.get("lag_ms") is not None)
    found = stack.index().slides(recording_id)
    out.blank()
    shared = sum(s["sent"] for s in report.streams if s["type"] == "screenshare")
    out.line(f"   {report.frames_sent} frames sent ({shared} of the shared screen, the rest the presenter's webcam);")
    out.line(f"   `framesink watch` saw {len(seen)}, lag stored -> seen "
             + (f"p50 {statistics.median(lags) / 1000:.2f} s, max {lags[-1] / 1000:.2f} s" if lags else "n/a"))
    out.line(f"   slides shown: {slides}; slide changes the analyzer found: {len(found)}"
             + (" at " + ", ".join(f"{s['relative_ms'] / 1000:.1f} s" for s in found) if found else ""))
    out.line(f"   (framesink slides --local --recording {recording_id}; export --slides writes them as PNGs)")
    shared_novel = list(stack.index().iter_frames(recording_id, frame_type="screenshare", novel=True))
    out.line(f"   novelty: {len(shared_novel)} of {shared} shared-screen frames novel (a stream's first, a change, or one")
    out.line(f"   per 10 s heartbeat): framesink frames --local --novel --recording {recording_id}")
    from framesink_core.read.notes import build_notes

    notes = build_notes(stack.index(), recording_id)
    out.line("   slide notes (framesink notes --local --recording ... --out DIR writes them as Markdown + PNGs):")
    for note in notes:
        said = "; ".join(f"\"{u['text']}\"" for u in note.said) or "(nothing said)"
        out.line(f"     slide {note.number} at {note.start_ms / 1000:.1f} s: {said}")
    ok = all(note.said for note in notes) and len(notes) == slides
    seen_events = [f for f in seen]
    return (len(found) == slides and len(seen_events) == report.frames_sent and len(shared_novel) == slides and ok)


async def _meeting_end(out: "_Printer", stack: LocalStack, recording_id: str, report, tmp: Path) -> bool:
    """Part 1's bot also sent Recall's signed status webhooks: the status, the timeline, and the
    MP4s the export job wrote when ``bot.done`` came, read back with PyAV."""
    from framesink_core.read.video import probe

    from ..simulator import post_webhook

    out.line("4. The meeting's end. Part 1's bot also sent Recall's signed bot status webhooks to the local")
    out.line("   POST /recall/events route; bot.done started the export job (one MP4 per participant)...")
    await stack.wait_idle(exports=True)
    found = stack.index().recording(recording_id) or {}
    meta = found.get("meta") or {}
    bot = stack.index().bot_status(meta["bot_id"]) if meta.get("bot_id") else None
    out.blank()
    out.line(f"   webhooks sent: {', '.join(f'{e} -> {status}' for e, status in report.webhooks)}")
    out.line(f"   recording status: {meta.get('status') or '-'}; timeline: "
             + " -> ".join(e["status"] for e in (bot or {}).get("timeline", [])))
    forged = await asyncio.to_thread(post_webhook, stack.state["webhook_url"], b'{"event": "bot.done"}',
                                     {"webhook-id": "msg_forged", "webhook-timestamp": str(int(time.time())),
                                      "webhook-signature": "v1,Zm9yZ2Vk"})
    out.line(f"   (a delivery with a forged signature is answered {forged} and changes nothing)")
    rows, ok, sounded = [], bool(found.get("exports")), False
    s3 = stack.client("s3")
    for export in sorted(found.get("exports", []), key=lambda e: (len(e["participant_id"]), e["participant_id"])):
        local = tmp / f"{export['participant_id']}-{export['type']}.mp4"
        s3.download_file(stack.config.bucket, export["s3_key"], str(local))
        info = probe(local)  # read back: what a player will see
        ok = ok and info.frames == export["frames"]
        # the sound: the participant's own in a webcam MP4, the meeting's mix in a screenshare's
        sound = f"{info.audio_codec} {info.audio_ms / 1000:.1f} s" if info.audio_codec else "none"
        # (a participant who never spoke has no audio: video only)
        ok = ok and (info.audio_codec is None or abs(info.audio_ms - info.duration_ms) <= 64)
        sounded = sounded or info.audio_codec == "aac"
        rows.append([export["s3_key"], f"{info.width}x{info.height}", info.codec, info.frames,
                     f"{info.duration_ms / 1000:.1f} s", sound, _kb(local.stat().st_size)])
    out.blank()
    if rows:
        out.table(["MP4 (read back with PyAV)", "size", "codec", "frames", "duration", "sound", "bytes"], rows,
                  align="<<<>>><>")
    else:
        out.line("   no export was written: MISMATCH")
    out.blank()
    out.line(f"   (framesink recording --local {recording_id}; framesink export --video writes the same locally)")
    return ok and sounded and meta.get("status") == "done" and forged == 401


FACES_DIR = Path(__file__).resolve().parents[2] / "analyzers" / "faces"


async def _analyzer(out: "_Printer", stack: LocalStack, recording_id: str) -> bool:
    """The reference face counter (analyzers/faces, OpenCV), run by `framesink analyze` in its
    own process on part 1's recording (--replay), its results read back with `framesink results`."""
    import importlib.util

    out.line("5. Your analyzer: analyzers/faces/faces.py (13 lines, OpenCV's face cascade) on part 1's meeting,")
    out.line("   run by `framesink analyze faces:analyze --replay` in its own process (live, it subscribes instead)...")
    if not (FACES_DIR / "faces.py").is_file() or importlib.util.find_spec("cv2") is None:
        out.line("   skipped: needs the project's analyzers/faces and opencv-python-headless (make demo installs both)")
        return True
    base = [sys.executable, "-m", "framesink"]
    where = ["--local", "--state-file", str(stack.config.state_file)]
    run = await asyncio.to_thread(subprocess.run, [*base, "analyze", "faces:analyze", "--replay", recording_id,
                                                   "--quiet", "--workers", "2", *where],
                                  cwd=FACES_DIR, capture_output=True, text=True, timeout=300)
    listed = await asyncio.to_thread(subprocess.run, [*base, "results", "--recording", recording_id, "--analyzer",
                                                      "faces", "--json", *where], capture_output=True, text=True,
                                     timeout=120)
    results = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
    one = sum(1 for r in results if r["result"]["faces"] == 1)
    out.blank()
    out.line(f"   {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else 'no summary'}")
    out.line(f"   framesink results: {len(results)} results; exactly one face in {one} of them "
             "(the simulator draws one face per webcam frame)")
    out.line(f"   (framesink results --local --recording {recording_id} --analyzer faces; docs/analyzers.md)")
    return run.returncode == 0 and listed.returncode == 0 and len(results) > 0 and one >= len(results) * 0.8


def read_back(s3, dynamodb, bucket: str, table: str, recording_id: str) -> list[dict]:
    """Per participant: frames, bytes, first/last key from an S3 listing; index items from a Query."""
    stored: dict[str, dict] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=schema.recording_prefix(recording_id)):
        for obj in page.get("Contents", []):
            match = schema.FRAME_KEY_PATTERN.fullmatch(obj["Key"])
            if not match:
                continue
            row = stored.setdefault(match["participant_id"], {"frames": 0, "bytes": 0, "keys": []})
            row["frames"] += 1
            row["bytes"] += obj["Size"]
            row["keys"].append((int(match["relative_ms"]), obj["Key"]))
    participants = {
        item["participant_id"]: item
        for item in _query(dynamodb, TableName=table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                           ExpressionAttributeValues=to_item({":pk": schema.recording_pk(recording_id), ":p": "PART#"}))
    }
    rows = []
    for pid in sorted(stored, key=lambda p: (len(p), p)):
        keys = sorted(stored[pid]["keys"])
        index_items = sum(1 for _ in _query(
            dynamodb, TableName=table, IndexName=schema.GSI_PARTICIPANT, KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues=to_item({":pk": schema.participant_gsi_pk(recording_id, pid)}),
            ProjectionExpression="sk"))
        rows.append({
            "participant_id": pid,
            "name": participants.get(pid, {}).get("participant_name") or "",
            "frames": stored[pid]["frames"],
            "bytes": stored[pid]["bytes"],
            "index_items": index_items,
            "first_ms": keys[0][0], "last_ms": keys[-1][0],
            "first_key": keys[0][1], "last_key": keys[-1][1],
        })
    return rows


def _query(dynamodb, **kwargs):
    for page in dynamodb.get_paginator("query").paginate(**kwargs):
        for item in page.get("Items", []):
            yield from_item(item)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB"


class _Printer:
    def line(self, text: str) -> None:
        print(text, flush=True)

    def blank(self) -> None:
        print(flush=True)

    def table(self, header: list, rows: list[list], align: str) -> None:
        cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for n, row in enumerate(cells):
            text = "  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths))
            print("   " + text.rstrip(), flush=True)
            if n == 0:
                print("   " + "  ".join("-" * w for w in widths), flush=True)

