"""Audio on the same socket: ``audio_separate_raw.data`` (one participant's microphone) and
``audio_mixed_raw.data`` (the meeting's mix), each a base64 chunk of 16 kHz mono S16LE PCM
stamped with ``relative`` seconds on the frames' clock (docs/recall-events.md).

Stored as WAV objects under the recording (docs/storage.md "Audio"), so each object plays on
its own and the export can mux them into the MP4s:

    recordings/<rec>/participants/<pid>/audio/<start_ms>.wav    (a participant's)
    recordings/<rec>/mixed/audio/<start_ms>.wav                  (the mix)

``<start_ms>`` is the object's first sample in relative ms, 10 digits like a frame's. Chunking:
Recall's chunks are a fraction of a second, and one PUT per chunk would cost more than the
frames, so the receiver joins a stream's contiguous chunks into objects of up to
OBJECT_SECONDS (BufferedAudio: 720 PUTs per participant-hour); an object also ends at a gap,
after IDLE_SECONDS without a chunk, and when the receiver stops. A Lambda cannot hold
anything between invocations: it writes each chunk as its own object (DirectAudio).

First write wins, as for frames: every object is a conditional PUT (``If-None-Match: *``). A
redelivered chunk inside what a stream already holds (buffered or written by this process) is
dropped as a duplicate before it reaches S3; an object whose key is taken by other bytes keeps
the first, and only the part past the first object's end is written (at that end's key), so
nothing new is lost and nothing stored is replaced. The export reads the objects in key order
and keeps the first sample written for each instant.

Audio is not spooled (frames are): a chunk whose object S3 refuses after retries is one log
line and metric (AudioStoreFailed). It costs no index item: the objects are found by listing
their prefix, which lists in time order.
"""

from __future__ import annotations

import io
import re
import threading
import time
import wave
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from framesink_core.ingest.events import (
    Rejected,
    _absolute,
    _obj,
    bot_id_of,
    decoded_buffer,
    envelope,
    media_relative,
    participant_of,
    recording_id_of,
)
from framesink_core.ingest.outlet import AUDIO_STORED
from framesink_core.shared import schema
from framesink_core.shared.observability import count, count_with_dimension, logger

SEPARATE_EVENT = "audio_separate_raw.data"
MIXED_EVENT = "audio_mixed_raw.data"
AUDIO_EVENTS = frozenset({SEPARATE_EVENT, MIXED_EVENT})

SAMPLE_RATE = 16_000  # Recall's raw audio: 16 kHz mono signed 16-bit little-endian
SAMPLE_BYTES = 2
SAMPLES_PER_MS = SAMPLE_RATE // 1000
MAX_CHUNK_BYTES = 1024 * 1024  # 32 s of audio in one message: Recall's are a fraction of a second
OBJECT_SECONDS = 5.0  # one object per stream per 5 s: 720 PUTs per participant-hour (bench/cost.py)
IDLE_SECONDS = 2.0  # a stream quiet this long is written out (its audio readable within ~2 s)
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # all streams together: past it, everything is written now
# Chunks meeting within this many samples are one run (Recall's clock has ms resolution: a
# chunk that starts 1 ms off its predecessor's end is the same stream, not a gap).
CONTIGUOUS_SAMPLES = 2 * SAMPLES_PER_MS
CONFLICT_RETRIES = 3
# A stream quiet this long is forgotten (bounded memory over a receiver's life); a redelivery
# after that meets S3's conditional PUT instead.
FORGET_SECONDS = 600
CLOSE_TIMEOUT = 10.0  # the receiver's stop waits this long for the last objects
WAV_HEADER_BYTES = 44


@dataclass(frozen=True)
class AudioChunk:
    recording_id: str
    participant_id: str | None  # None: the mix
    start_sample: int  # on the recording's clock, in samples (relative s x 16,000)
    pcm: bytes
    absolute: str | None
    bot_id: str | None

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_BYTES

    @property
    def stream(self) -> tuple[str, str | None]:
        return self.recording_id, self.participant_id


def audio_key(recording_id: str, participant_id: str | None, start_ms: int) -> str:
    """S3 key of an audio object (docs/storage.md). Ids must already be validated."""
    where = "mixed" if participant_id is None else f"participants/{participant_id}"
    return f"recordings/{recording_id}/{where}/audio/{schema.relative_ms_text(start_ms)}.wav"


AUDIO_KEY_PATTERN = re.compile(
    r"recordings/[A-Za-z0-9_-]{1,128}/(?:mixed|participants/[A-Za-z0-9_-]{1,128})/audio/\d{10}\.wav")


def is_audio_key(key: str) -> bool:
    return AUDIO_KEY_PATTERN.fullmatch(key) is not None


def audio_prefix(recording_id: str, participant_id: str | None) -> str:
    return audio_key(recording_id, participant_id, 0).rsplit("/", 1)[0] + "/"


def parse_audio(message: dict, event: str) -> AudioChunk:
    """One audio message into a chunk. Raises Rejected with the reason (linear in the
    message: one base64 pass, bounded before decoding)."""
    outer, inner = envelope(message)
    context: dict = {"event": event}
    try:
        recording_id = context["recording_id"] = recording_id_of(outer)
        participant_id = None
        if event == SEPARATE_EVENT:
            _, participant_id = participant_of(inner)
            context["participant_id"] = participant_id
        timestamp = _obj(inner.get("timestamp"), "bad_timestamp", "'data.data.timestamp'")
        relative = media_relative(timestamp)
        pcm = decoded_buffer(inner, MAX_CHUNK_BYTES, "audio_too_large", "audio chunk")
        if len(pcm) % SAMPLE_BYTES:
            raise Rejected("bad_audio", f"{len(pcm)} bytes is not a whole number of 16-bit samples")
        if not pcm:
            raise Rejected("bad_audio", "the audio chunk is empty")
        return AudioChunk(recording_id, participant_id, round(relative * SAMPLE_RATE), pcm,
                          _absolute(timestamp.get("absolute")), bot_id_of(outer))
    except Rejected as exc:
        exc.context = {**context, **exc.context}
        raise


def wav_bytes(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_BYTES)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)
    return out.getvalue()


def read_wav(data: bytes) -> bytes:
    """The PCM of a stored object (ValueError if it is not 16 kHz mono 16-bit WAV)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, SAMPLE_BYTES, SAMPLE_RATE):
                raise ValueError("not 16 kHz mono 16-bit audio")
            return wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(str(exc)) from exc


@dataclass
class AudioRun:
    """Contiguous audio of one stream, the next object to write."""
    chunk: AudioChunk  # the first chunk (ids, absolute time, bot)
    start_sample: int
    parts: list[bytes]
    samples: int
    touched: float

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.samples


class AudioObjects:
    """The conditional PUT of one run of audio, first write wins (module docstring)."""

    def __init__(self, s3, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    def write(self, chunk: AudioChunk, start_sample: int, pcm: bytes) -> str:
        """``stored``, ``duplicate`` (the same bytes are there) or ``conflict`` (other
        bytes are: the first stays; what runs past them is written after them). Raises
        botocore errors after botocore's retries."""
        from botocore.exceptions import ClientError

        from framesink_core.shared.objects import error_code

        outcome = "stored"
        for _ in range(CONFLICT_RETRIES + 1):
            if not pcm:
                return outcome
            # The key holds the first sample's millisecond; the exact sample is in the metadata.
            key = audio_key(chunk.recording_id, chunk.participant_id, start_sample // SAMPLES_PER_MS)
            body = wav_bytes(pcm)
            metadata = {"start-sample": str(start_sample), "samples": str(len(pcm) // SAMPLE_BYTES),
                        "sample-rate": str(SAMPLE_RATE)}
            if chunk.absolute:
                metadata["absolute"] = chunk.absolute
            if chunk.bot_id:
                metadata["bot-id"] = chunk.bot_id
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="audio/wav",
                                   IfNoneMatch="*", Metadata=metadata, ChecksumAlgorithm="CRC32")
                return outcome
            except ClientError as exc:
                if error_code(exc) not in ("PreconditionFailed", "412"):
                    raise
            existing = self.s3.get_object(Bucket=self.bucket, Key=key)
            held = existing["Body"].read()
            if held == body:
                return "duplicate" if outcome == "stored" else outcome
            outcome = "conflict"
            held_start, held_samples = object_span(key, existing.get("Metadata") or {}, held)
            # What the first object covers stays its; the rest of ours goes after it.
            drop = min(len(pcm) // SAMPLE_BYTES, max(held_start + held_samples - start_sample, 1))
            pcm, start_sample = pcm[drop * SAMPLE_BYTES:], start_sample + drop
        return outcome


def object_span(key: str, metadata: dict, body: bytes | None = None) -> tuple[int, int]:
    """(first sample, samples) of a stored object: from its metadata, else its key and body."""
    try:
        start = int(metadata["start-sample"])
    except (KeyError, ValueError):
        start = int(key.rsplit("/", 1)[1].split(".", 1)[0]) * SAMPLES_PER_MS
    try:
        samples = int(metadata["samples"])
    except (KeyError, ValueError):
        samples = max(0, (len(body or b"") - WAV_HEADER_BYTES) // SAMPLE_BYTES)
    return start, samples


def audio_event(bucket: str, chunk: AudioChunk, start_sample: int, samples: int) -> dict:
    """The "Audio Stored" event's detail (outlet.py): where the object is and what it covers."""
    return {"bucket": bucket, "key": audio_key(chunk.recording_id, chunk.participant_id, start_sample // SAMPLES_PER_MS),
            "recording_id": chunk.recording_id, "participant_id": chunk.participant_id,
            "start_ms": start_sample // SAMPLES_PER_MS, "duration_ms": samples * 1000 // SAMPLE_RATE,
            "sample_rate": SAMPLE_RATE, "absolute": chunk.absolute, "bot_id": chunk.bot_id}


def _written(outcome: str, objects: AudioObjects, outlet, chunk: AudioChunk, start_sample: int,
             samples: int) -> None:
    """An object's write settled: its metrics and log line, and its event when it is new."""
    _record(outcome, chunk, samples / SAMPLE_RATE)
    if outcome == "stored" and outlet is not None:
        outlet.publish(audio_event(objects.bucket, chunk, start_sample, samples), AUDIO_STORED)


def _record(outcome: str, chunk: AudioChunk, seconds: float) -> None:
    if outcome == "conflict":
        count("AudioConflict")
        logger.warning("audio object conflict: the first write kept", extra={
            "reason": "conflicting_audio", "recording_id": chunk.recording_id, "participant_id": chunk.participant_id})
    elif outcome == "duplicate":
        count("AudioDuplicate")
    count("AudioObjectWritten")
    count("AudioSecondsStored", seconds)


def _failed(exc: BaseException, chunk: AudioChunk) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    reason = "s3_unavailable" if isinstance(exc, (ClientError, BotoCoreError)) else "internal_error"
    logger.error("audio not stored", extra={"reason": reason, "detail": str(exc)[:300],
                                            "recording_id": chunk.recording_id, "participant_id": chunk.participant_id})
    count_with_dimension("AudioStoreFailed", "reason", reason)


class DirectAudio:
    """A Lambda's: each chunk its own object, written before the invocation answers."""

    def __init__(self, s3, bucket: str, outlet=None):
        self.objects = AudioObjects(s3, bucket)
        self.outlet = outlet

    def add(self, chunk: AudioChunk) -> Future:
        future: Future = Future()
        try:
            outcome = self.objects.write(chunk, chunk.start_sample, chunk.pcm)
            _written(outcome, self.objects, self.outlet, chunk, chunk.start_sample, chunk.samples)
            future.set_result(outcome)
        except Exception as exc:  # noqa: BLE001 - reported, never fatal to the connection
            _failed(exc, chunk)
            future.set_exception(exc)
        return future

    def flush_due(self) -> None:
        pass

    def close(self) -> None:
        pass


class BufferedAudio:
    """The receiver's: a stream's contiguous chunks joined into objects of up to
    OBJECT_SECONDS, written by a small pool of its own. ``add`` is called in message order
    (on the receiver's event loop: it only appends); ``flush_due`` from the receiver's timer."""

    def __init__(self, s3, bucket: str, *, object_seconds: float = OBJECT_SECONDS,
                 idle_seconds: float = IDLE_SECONDS, max_buffered_bytes: int = MAX_BUFFERED_BYTES, workers: int = 4,
                 outlet=None):
        self.objects = AudioObjects(s3, bucket)
        self.outlet = outlet
        self.object_samples = int(object_seconds * SAMPLE_RATE)
        self.idle_seconds = idle_seconds
        self.max_buffered_bytes = max_buffered_bytes
        self._runs: dict[tuple[str, str | None], AudioRun] = {}
        # End sample of what was handed to S3 per stream, and when (forgotten after FORGET_SECONDS).
        self._written_to: dict[tuple[str, str | None], tuple[int, float]] = {}
        self._buffered = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framesink-audio")
        self._pending: set[Future] = set()

    def add(self, chunk: AudioChunk) -> Future | None:
        """Buffer one chunk; the future of an object it completed, if it did."""
        with self._lock:
            start, pcm = chunk.start_sample, chunk.pcm
            stream = chunk.stream
            run = self._runs.get(stream)
            floor = max(run.end_sample if run else 0, self._written_to.get(stream, (0, 0.0))[0])
            if start < floor:  # a redelivery (or an overlap): what is held already wins
                cut = (floor - start) * SAMPLE_BYTES
                if cut >= len(pcm):
                    count("AudioDuplicate")
                    return None
                pcm, start = pcm[cut:], floor
            written = None
            if run is not None and start - run.end_sample > CONTIGUOUS_SAMPLES:  # a gap ends the object
                written = self._write(stream)
                run = None
            if run is None:
                run = self._runs[stream] = AudioRun(chunk, start, [], 0, time.monotonic())
            elif start > run.end_sample:  # within the tolerance: joined, the jitter kept as silence
                pad = b"\0" * ((start - run.end_sample) * SAMPLE_BYTES)
                run.parts.append(pad)
                run.samples += len(pad) // SAMPLE_BYTES
                self._buffered += len(pad)
            run.parts.append(pcm)
            run.samples += len(pcm) // SAMPLE_BYTES
            run.touched = time.monotonic()
            self._buffered += len(pcm)
            if run.samples >= self.object_samples:
                written = self._write(stream)
            elif self._buffered > self.max_buffered_bytes:
                for each in list(self._runs):
                    written = self._write(each)
            return written

    def _write(self, stream) -> Future:
        """Hand a stream's run to the pool (under the lock)."""
        run = self._runs.pop(stream)
        pcm = b"".join(run.parts)
        self._buffered -= len(pcm)
        self._written_to[stream] = (run.end_sample, time.monotonic())
        future = self._pool.submit(self.objects.write, run.chunk, run.start_sample, pcm)
        self._pending.add(future)

        def done(f: Future) -> None:
            self._pending.discard(f)
            if f.exception() is not None:
                _failed(f.exception(), run.chunk)
            else:
                _written(f.result(), self.objects, self.outlet, run.chunk, run.start_sample, run.samples)

        future.add_done_callback(done)
        return future

    def flush_due(self) -> None:
        """Write the streams that went quiet (the receiver's timer calls it every few seconds)."""
        now = time.monotonic()
        with self._lock:
            for stream in [s for s, r in self._runs.items() if now - r.touched >= self.idle_seconds]:
                self._write(stream)
            for stream in [s for s, (_, at) in self._written_to.items() if now - at >= FORGET_SECONDS]:
                del self._written_to[stream]

    def flush_all(self) -> list[Future]:
        with self._lock:
            for stream in list(self._runs):
                self._write(stream)
            return list(self._pending)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write everything buffered and wait for it, at most ``timeout`` seconds (the
        receiver's stop runs within its grace; a write S3 keeps refusing is reported, not
        waited on past it)."""
        from concurrent.futures import wait

        _, unfinished = wait(self.flush_all(), timeout)
        if unfinished:
            logger.error("audio not stored at shutdown", extra={"reason": "shutdown_timeout",
                                                                "objects": len(unfinished)})
            count("AudioLeftAtExit", len(unfinished))
        self._pool.shutdown(wait=not unfinished, cancel_futures=True)

    @property
    def buffered_bytes(self) -> int:
        return self._buffered
