"""A stand-in Recall bot: streams `video_separate_png.data` events over a real websocket.

Like a Recall bot (docs/recall-events.md): one connection per realtime endpoint carrying every
participant's frames at 2 fps each (plus an optional 1280x720 screenshare), and after a drop
or a failed connect it retries every 3 s, at most 30 times per incident, then gives up.
Frames that fall due while it is disconnected are lost, as they are with Recall.

With a webhook URL and secret it also plays Recall's bot status webhooks (docs/recall-events.md),
signed as Svix signs them: ``bot.joining_call`` and ``bot.in_call_recording`` before the first
frame, ``bot.call_ended`` and ``bot.done`` after the last.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from framesink_core.access.auth import sign_headers

from .synthetic import SCREENSHARE_SIZE, WEBCAM_SIZE, frame_message, make_png, make_slide

RECALL_RECONNECT_DELAY = 3.0
RECALL_MAX_RETRIES = 30
NAMES = [
    "Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Edsger Dijkstra",
    "Barbara Liskov", "Claude Shannon", "Margaret Hamilton", "Donald Knuth", "Radia Perlman",
]


@dataclass
class SimConfig:
    url: str
    participants: int = 3
    seconds: float = 10.0
    fps: float = 2.0
    screenshare: bool = False
    recording_id: str | None = None  # default: a fresh uuid, like Recall's
    bot_id: str | None = None
    small: bool = False  # flat 480x360 frames of ~2 KB that fit API Gateway; else camera-like
    seed: int = 0
    max_frame_bytes: int | None = None  # split each message into websocket frames of at most this
    reconnect_delay: float = RECALL_RECONNECT_DELAY
    max_retries: int = RECALL_MAX_RETRIES
    pool_size: int = 4  # distinct PNGs per stream, cycled: generating one per frame is too slow
    headers: dict | None = None  # extra handshake headers
    # Recall's workspace verification secret (whsec_...): every connect attempt is signed
    # afresh, with a new webhook-id, as Recall signs its requests.
    verification_secret: str | None = None
    slides: int = 0  # the screenshare shows a deck of this many slides, in order (0: a static screen)
    # Recall's bot status webhooks: where to POST them and the whsec_ secret that signs them
    webhook_url: str | None = None
    webhook_secret: str | None = None
    after_call_seconds: float = 0.0  # between bot.call_ended and bot.done (Recall: media processing)
    # Participants also join (the first a second before the recording started: a negative
    # time, as Recall sends it) and speak in turns of SPEECH_TURN seconds: speech_on, a final
    # transcript utterance and speech_off per turn, on the same socket as the frames.
    speech: bool = False
    # Each participant's audio (a voice of their own pitch while it is their turn, nothing
    # otherwise) and the meeting's mix (all the time), in AUDIO_CHUNK second chunks: implies
    # the speaking turns.
    audio: bool = False


@dataclass
class Stream:
    participant_id: int
    name: str
    is_host: bool
    frame_type: str
    offset: float  # each stream's clock is a little out of step with the others, as in Recall
    pool: list[bytes]
    deck: list[list[bytes]] | None = None  # slides (each a few noisy variants), shown in order
    sent: int = 0
    lost: int = 0
    bytes_sent: int = 0


@dataclass
class SimReport:
    url: str  # without the query string: it carries the token
    recording_id: str
    bot_id: str
    frames_generated: int = 0
    frames_sent: int = 0
    frames_lost: int = 0
    bytes_sent: int = 0
    largest_message: int = 0
    connections: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    connect_error: str | None = None  # the last failed connect: what happened, in one line
    refused: dict = field(default_factory=dict)  # HTTP status -> handshakes refused
    closes: dict = field(default_factory=dict)  # close code -> connections closed
    gave_up: bool = False
    seconds: float = 0.0
    streams: list = field(default_factory=list)
    webhooks: list = field(default_factory=list)  # [event, HTTP status or error] in the order sent
    context_sent: int = 0  # participant events and transcript utterances (SimConfig.speech)
    utterances: list = field(default_factory=list)  # [participant id, start s, text] of each one sent
    audio_sent: int = 0  # audio chunks (separate and mixed)
    audio_lost: int = 0  # chunks due while disconnected

    def as_dict(self) -> dict:
        return asdict(self)


def build_streams(config: SimConfig) -> list[Stream]:
    """Each participant's webcam (and the host's screenshare) with its pool of frames."""
    rng = random.Random(config.seed)
    streams = []
    for i in range(config.participants):
        pid = 100 * (i + 1)
        name = NAMES[i % len(NAMES)] + (f" {i // len(NAMES) + 1}" if i >= len(NAMES) else "")
        kinds = [("webcam", WEBCAM_SIZE)]
        if (config.screenshare or config.slides) and i == 0:
            kinds.append(("screenshare", SCREENSHARE_SIZE))
        for frame_type, (w, h) in kinds:
            pool = [
                make_png(w, h, seed=config.seed * 100_003 + pid * 101 + k * 7 + len(frame_type),
                         detailed=not config.small, label=f"{name} {frame_type} {k}",
                         face=frame_type == "webcam")
                for k in range(max(1, config.pool_size if frame_type == "webcam" else min(2, config.pool_size)))
            ] if not (frame_type == "screenshare" and config.slides) else []
            deck = None
            if frame_type == "screenshare" and config.slides:
                # two noisy variants per slide: a slide held on screen is never byte-identical
                deck = [[make_slide(n, w, h, noise_seed=v) for v in range(2)] for n in range(config.slides)]
            offset = rng.randrange(0, 200) / 1000  # under one frame interval: keys never collide
            streams.append(Stream(pid, name, i == 0, frame_type, offset, pool, deck))
    return streams


class Bot:
    """One simulated bot: a connection kept up Recall's way, and the frame schedule."""

    def __init__(self, config: SimConfig, streams: list[Stream] | None = None):
        self.config = config
        self.streams = streams if streams is not None else build_streams(config)
        self.recording_id = config.recording_id or str(uuid.uuid4())
        self.bot_id = config.bot_id or str(uuid.uuid4())
        parts = urlsplit(config.url)
        self.report = SimReport(urlunsplit(parts._replace(query="")), self.recording_id, self.bot_id)
        self._ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._first_attempt = asyncio.Event()  # the meeting clock starts once the bot has tried
        self._refused: Counter = Counter()
        self._closes: Counter = Counter()
        self._rng = random.Random(config.seed + 1)

    async def run(self) -> SimReport:
        started = time.perf_counter()
        await self._status("joining_call")
        await self._status("in_call_recording")
        keeper = asyncio.create_task(self._keep_connected())
        try:
            await self._first_attempt.wait()
            await self._stream_frames()
        finally:
            self._stopping.set()
            ws = self._ws
            if ws is not None:
                await ws.close()  # 1000: the meeting ended
            await keeper
        await self._status("call_ended")
        if self.config.after_call_seconds:
            await asyncio.sleep(self.config.after_call_seconds)
        await self._status("done")
        r = self.report
        r.refused = {str(k): v for k, v in sorted(self._refused.items())}
        r.closes = {str(k): v for k, v in sorted(self._closes.items())}
        r.seconds = round(time.perf_counter() - started, 3)
        r.streams = [
            {"participant_id": s.participant_id, "name": s.name, "type": s.frame_type,
             "sent": s.sent, "lost": s.lost, "bytes_sent": s.bytes_sent}
            for s in self.streams
        ]
        return r

    async def _status(self, code: str) -> None:
        """POST one signed bot status webhook (v1.11 shape), if a webhook URL is configured."""
        cfg = self.config
        if not (cfg.webhook_url and cfg.webhook_secret):
            return
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps({"event": f"bot.{code}", "data": {
            "data": {"code": code, "sub_code": None, "updated_at": now},
            "bot": {"id": self.bot_id, "metadata": {}}}}).encode()
        headers = {"content-type": "application/json",
                   **sign_headers(cfg.webhook_secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)}
        self.report.webhooks.append([f"bot.{code}", await asyncio.to_thread(post_webhook, cfg.webhook_url, body, headers)])

    async def _keep_connected(self) -> None:
        try:
            await self._connection_loop()
        finally:
            self._first_attempt.set()  # never leave run() waiting, whatever happened

    async def _connection_loop(self) -> None:
        cfg, r = self.config, self.report
        failures = 0  # connect attempts that failed in the current incident
        while not self._stopping.is_set():
            try:
                headers = dict(cfg.headers or {})
                if cfg.verification_secret:
                    headers.update(sign_headers(cfg.verification_secret, f"msg_{uuid.uuid4().hex}", int(time.time())))
                ws = await connect(cfg.url, additional_headers=headers or None, compression=None,
                                   max_size=None, open_timeout=10, close_timeout=5)
            except (InvalidHandshake, OSError, TimeoutError) as exc:
                r.failed_connects += 1
                if isinstance(exc, InvalidStatus):
                    self._refused[exc.response.status_code] += 1
                r.connect_error = (f"HTTP {exc.response.status_code}" if isinstance(exc, InvalidStatus)
                                   else f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError)
                                   else f"{type(exc).__name__}: {exc}")[:200]
                failures += 1
                self._first_attempt.set()
                if failures >= cfg.max_retries:
                    r.gave_up = True  # Recall marks the endpoint failed: nothing more is sent
                    return
                await self._pause(cfg.reconnect_delay)
                continue
            self._first_attempt.set()
            if self._stopping.is_set():
                await ws.close()
                return
            r.connections += 1
            if r.connections > 1:
                r.reconnects += 1
            failures = 0
            self._ws = ws
            await ws.wait_closed()
            self._ws = None
            self._closes[ws.close_code] += 1
            if self._stopping.is_set():
                return
            await self._pause(cfg.reconnect_delay)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _stream_frames(self) -> None:
        cfg, r = self.config, self.report
        loop = asyncio.get_running_loop()
        interval = 1.0 / cfg.fps
        ticks = max(1, round(cfg.seconds * cfg.fps))
        schedule = self._speech_schedule() if cfg.speech or cfg.audio else []
        start = loop.time()
        for k in range(ticks):
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if r.gave_up:
                r.frames_generated += len(self.streams) * (ticks - k)
                r.frames_lost += len(self.streams) * (ticks - k)
                for s in self.streams:
                    s.lost += ticks - k
                return
            for stream in self.streams:
                await self._send_frame(stream, k, interval)
            if cfg.audio and k:
                await self._send_audio((k - 1) * interval, k * interval)
            while schedule and schedule[0][0] <= k * interval:
                await self._send_context(schedule.pop(0))
        if cfg.audio:  # the last tick's audio
            await self._send_audio((ticks - 1) * interval, ticks * interval)
        for item in schedule:  # the meeting's end: the last turn's utterance and speech_off
            await self._send_context(item)

    def turns(self) -> list[tuple[int, float, float]]:
        """(participant index among the webcams, begin s, end s) of each speaking turn."""
        count = sum(1 for s in self.streams if s.frame_type == "webcam")
        return [(turn % count, turn * SPEECH_TURN + 0.2, (turn + 1) * SPEECH_TURN - 0.2)
                for turn in range(int(self.config.seconds // SPEECH_TURN))]

    async def _send_audio(self, begin: float, end: float) -> None:
        """The audio of [begin, end) s in AUDIO_CHUNK pieces: each speaker's own while it is
        their turn, and the mix (the sum of the voices) throughout."""
        from .synthetic import AUDIO_SAMPLE_RATE, audio_message, voice

        people = [s for s in self.streams if s.frame_type == "webcam"]
        turns = self.turns()
        step = round(AUDIO_CHUNK * AUDIO_SAMPLE_RATE)
        first, last = round(begin * AUDIO_SAMPLE_RATE), round(end * AUDIO_SAMPLE_RATE)
        for start in range(first, last, step):
            n = min(step, last - start)
            mixed = [0] * n
            for index, begin_s, end_s in turns:
                lo, hi = max(start, round(begin_s * AUDIO_SAMPLE_RATE)), min(start + n, round(end_s * AUDIO_SAMPLE_RATE))
                if lo >= hi:
                    continue
                pcm = voice(index, lo, hi - lo)
                person = people[index]
                await self._send_audio_chunk(audio_message(
                    pcm, recording_id=self.recording_id, relative=lo / AUDIO_SAMPLE_RATE,
                    participant_id=person.participant_id, name=person.name, bot_id=self.bot_id))
                for i in range(hi - lo):
                    mixed[lo - start + i] += int.from_bytes(pcm[2 * i:2 * i + 2], "little", signed=True)
            pcm = b"".join(max(-32768, min(32767, v)).to_bytes(2, "little", signed=True) for v in mixed)
            await self._send_audio_chunk(audio_message(pcm, recording_id=self.recording_id,
                                                       relative=start / AUDIO_SAMPLE_RATE, bot_id=self.bot_id))

    async def _send_audio_chunk(self, message: str) -> None:
        ws = self._ws
        if ws is None or ws.state is not State.OPEN:
            self.report.audio_lost += 1
            return
        try:
            await ws.send(message)
        except ConnectionClosed:
            self.report.audio_lost += 1
            return
        self.report.audio_sent += 1

    def _speech_schedule(self) -> list[tuple]:
        """(relative s, message, utterance or None) of every join and speaking turn, in time order."""
        from .synthetic import participant_event_message, spoken, transcript_message

        people = [s for s in self.streams if s.frame_type == "webcam"]
        out = []
        for n, person in enumerate(people):
            out.append((-1.0 if n == 0 else 0.0, participant_event_message(
                "join", recording_id=self.recording_id, participant_id=person.participant_id,
                relative=-1.0 if n == 0 else 0.0, name=person.name, bot_id=self.bot_id), None))
        for turn, (index, begin, end) in enumerate(self.turns()):
            person = people[index]
            text = SENTENCES[turn % len(SENTENCES)]
            words = spoken(text, begin, (end - begin) / max(1, len(text.split())))
            ids = {"recording_id": self.recording_id, "participant_id": person.participant_id, "name": person.name,
                   "bot_id": self.bot_id}
            out.append((begin, participant_event_message("speech_on", relative=begin, **ids), None))
            out.append((end, transcript_message(words, **ids), (person.participant_id, begin, text)))
            out.append((end, participant_event_message("speech_off", relative=end, **ids), None))
        return sorted(out, key=lambda item: item[0])

    async def _send_context(self, item: tuple) -> None:
        _, message, utterance = item
        ws = self._ws
        if ws is None or ws.state is not State.OPEN:
            return
        try:
            await ws.send(message)
        except ConnectionClosed:
            return
        self.report.context_sent += 1
        if utterance is not None:
            self.report.utterances.append(list(utterance))

    async def _send_frame(self, stream: Stream, k: int, interval: float) -> None:
        r = self.report
        r.frames_generated += 1
        ws = self._ws
        if ws is None or ws.state is not State.OPEN:
            stream.lost += 1
            r.frames_lost += 1
            return
        relative = round(k * interval + stream.offset + self._rng.random() * 0.02, 3)
        if stream.deck:
            ticks = max(1, round(self.config.seconds * self.config.fps))
            png = stream.deck[min(len(stream.deck) - 1, k * len(stream.deck) // ticks)][k % 2]
        else:
            png = stream.pool[k % len(stream.pool)]
        message = frame_message(
            png,
            recording_id=self.recording_id, participant_id=stream.participant_id, relative=relative,
            frame_type=stream.frame_type, name=stream.name, is_host=stream.is_host, bot_id=self.bot_id,
        )
        size = self.config.max_frame_bytes
        payload = [message[i:i + size] for i in range(0, len(message), size)] if size else message
        try:
            await ws.send(payload)  # a list is sent as one fragmented message
        except ConnectionClosed:
            stream.lost += 1
            r.frames_lost += 1
            return
        stream.sent += 1
        stream.bytes_sent += len(message)
        r.frames_sent += 1
        r.bytes_sent += len(message)
        r.largest_message = max(r.largest_message, len(message))


SPEECH_TURN = 2.0  # seconds each participant speaks in turn (SimConfig.speech)
AUDIO_CHUNK = 0.1  # seconds of audio per message (SimConfig.audio)
SENTENCES = ("welcome everyone to the quarterly review", "revenue grew twelve percent this quarter",
             "the chart shows where the growth came from", "next we look at the hiring plan",
             "any questions before we move on", "thanks that is all for today")


def post_webhook(url: str, body: bytes, headers: dict) -> int | str:
    """The HTTP status of one delivery (or why it failed), as Svix would see it."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # Svix: 15 s per delivery
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"failed: {getattr(exc, 'reason', exc)}"


async def simulate(config: SimConfig) -> SimReport:
    return await Bot(config).run()
