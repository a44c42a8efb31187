"""An MP4 per participant and type from its frames: H.264 (PyAV's bundled FFmpeg, libx264),
yuv420p, ``+faststart`` (playable while downloading), variable frame rate.

With an audio timeline (audio_track.py) the MP4 also carries AAC, 16 kHz mono: the audio of
the frames' own span, sample for sample on the same clock (the first frame's time is 0 for
both tracks), silence where nothing was stored, up to the end of the last frame's display.
Audio is encoded as the video goes, so the muxer interleaves without holding either track.

Each frame is shown from its own relative time until the next frame's: a timestamp in
milliseconds, not a fixed rate, so a gap in the stream (a participant's camera off, a
reconnect) holds the last frame. With ``gap_fill="black"`` a gap longer than
``gap_threshold_ms`` holds the last frame for that long, then goes black until the next one.
The stream keeps the size of its first frame (rounded down to even: yuv420p needs it); a
frame of another size is scaled to it. Memory is bounded: frames go in one at a time and
nothing but the encoder's few frames of lookahead is kept.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# An MP4 track holds its times in 32-bit ticks of its timescale. FFmpeg's muxer raises a
# millisecond time base to 16,000 ticks a second unless told otherwise, which overflows past
# 2^27 ms (37.3 hours: every later frame then read back at that moment). The writer sets the
# track's timescale to its time base (``video_track_timescale``) and picks the finest base
# whose ticks hold the stream's whole span: milliseconds up to 24.8 days, then 10 ms (248
# days, past the ~115 days a frame key can hold).
MAX_TICKS = 2**31 - 1
TIME_BASES = (Fraction(1, 1000), Fraction(1, 100), Fraction(1, 10), Fraction(1, 1))  # milliseconds first


def time_base_for(span_ms: int) -> Fraction:
    """The finest time base whose ticks hold ``span_ms``."""
    for base in TIME_BASES:
        if span_ms / (base * 1000) <= MAX_TICKS:
            return base
    raise ValueError(f"a stream spanning {span_ms} ms is longer than an MP4 can hold ({MAX_TICKS} s)")
DEFAULT_GAP_MS = 5000
FRAME_RATE = 2  # Recall's, also the nominal rate x264 is given: the last frame shows this long
AUDIO_BLOCK = 4000  # samples per encode call (250 ms): the encoder re-frames them to AAC's 1024
PRESET = "veryfast"  # ~3x the speed of x264's medium at these sizes, for a few % more bytes
CRF = "23"


@dataclass
class VideoStats:
    path: Path
    width: int
    height: int
    frames: int = 0  # frames of the stream written (gap-fill frames not counted)
    filled: int = 0  # black frames inserted for long gaps
    skipped: int = 0  # frames that could not be decoded (left out, the previous one holds)
    first_ms: int | None = None
    last_ms: int | None = None
    audio_samples: int = 0  # of the audio track (0: no audio track)
    audio_silent_samples: int = 0  # of those, where nothing was stored

    @property
    def duration_ms(self) -> int:
        return 0 if self.first_ms is None else self.last_ms - self.first_ms


class VideoWriter:
    """``add(relative_ms, png_bytes)`` frames in time order, then ``close()``."""

    def __init__(self, path: Path, *, gap_fill: str | None = None, gap_threshold_ms: int = DEFAULT_GAP_MS,
                 threads: int = 0, span_ms: int = 0, audio=None):
        import av  # PyAV: only the export job and the CLI's --video load it

        self._av = av
        self.path = Path(path)
        self.gap_fill = gap_fill
        self.gap_threshold_ms = gap_threshold_ms
        self.threads = threads
        self._container = None
        self._stream = None
        self.stats: VideoStats | None = None
        self._last_pts: int | None = None
        self._skipped_before_first = 0  # undecodable frames before the stream's size is known
        # ``span_ms``: last minus first frame time, when the caller knows it (the export does).
        self.time_base = time_base_for(span_ms)
        self._ms_per_tick = self.time_base * 1000
        self._last_tick: int | None = None
        self.audio = audio  # a PcmTimeline (audio_track.py), or None: video only
        self._audio_stream = None
        self._audio_pos = 0  # samples encoded, from the first frame's time

    def _open(self, width: int, height: int) -> None:
        width, height = max(2, width - width % 2), max(2, height - height % 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = self._av.open(str(self.path), mode="w", format="mp4", options={
            "movflags": "+faststart", "video_track_timescale": str(self.time_base.denominator)})
        stream = self._container.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        # No B-frames: with them x264 derives decode times from the nominal rate, not from the
        # timestamps, and a gap in the stream ends up shortening the whole file.
        stream.options = {"preset": PRESET, "crf": CRF, "bf": "0"}
        stream.thread_count = self.threads
        self._stream = stream
        self.stats = VideoStats(self.path, width, height)
        if self.audio is not None:
            from framesink_core.ingest.audio import SAMPLE_RATE

            audio = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            audio.time_base = Fraction(1, SAMPLE_RATE)
            self._audio_stream = audio

    def _encode_audio_to(self, relative_ms: int) -> None:
        """The audio track up to ``relative_ms`` (the recording's clock)."""
        from framesink_core.ingest.audio import SAMPLE_RATE, SAMPLES_PER_MS

        if self._audio_stream is None:
            return
        target = (relative_ms - self.stats.first_ms) * SAMPLES_PER_MS
        origin = self.stats.first_ms * SAMPLES_PER_MS
        while self._audio_pos < target:
            n = min(AUDIO_BLOCK, target - self._audio_pos)
            pcm, silent = self.audio.read(origin + self._audio_pos, origin + self._audio_pos + n)
            frame = self._av.AudioFrame(format="s16", layout="mono", samples=n)
            frame.planes[0].update(pcm)
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self._audio_pos, Fraction(1, SAMPLE_RATE)
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
            self._audio_pos += n
            self.stats.audio_samples += n
            self.stats.audio_silent_samples += silent

    def add(self, relative_ms: int, png: bytes) -> bool:
        """Encode one frame; False (and counted skipped) if it cannot be decoded."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(png)) as img:
                img.load()
                rgb = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            self.skip()
            return False
        if self._stream is None:
            self._open(*rgb.size)
            self.stats.skipped += self._skipped_before_first
            self.stats.first_ms = relative_ms
        if self._last_pts is not None and relative_ms <= self._last_pts:
            self.stats.skipped += 1  # out of order or a repeat: a pts must grow
            return False
        if (self.gap_fill == "black" and self._last_pts is not None
                and relative_ms - self._last_pts > self.gap_threshold_ms):
            self._encode(Image.new("RGB", (self.stats.width, self.stats.height)), self._last_pts + self.gap_threshold_ms)
            self.stats.filled += 1
        if rgb.size != (self.stats.width, self.stats.height):
            rgb = rgb.resize((self.stats.width, self.stats.height), Image.Resampling.BILINEAR)
        self._encode(rgb, relative_ms)
        self.stats.frames += 1
        self.stats.last_ms = relative_ms
        return True

    def skip(self) -> None:
        """Count a frame left out (undecodable, or it could not be read): the previous one holds."""
        if self.stats is not None:
            self.stats.skipped += 1
        else:
            self._skipped_before_first += 1

    def _encode(self, image, pts_ms: int) -> None:
        tick = int((pts_ms - self.stats.first_ms) / self._ms_per_tick)
        if tick > MAX_TICKS:
            raise ValueError(f"frame at {pts_ms} ms is past what this MP4's time base holds (span_ms too small)")
        if self._last_tick is not None and tick <= self._last_tick:
            tick = self._last_tick + 1  # two frames within one coarse tick: keep their order
        self._encode_audio_to(pts_ms)
        frame = self._av.VideoFrame.from_image(image)
        frame.pts = tick
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts, self._last_tick = pts_ms, tick

    def close(self) -> VideoStats | None:
        """Flush and finish the file (None if no frame could be written: no file)."""
        if self._stream is None:
            return None
        self._encode_audio_to(self.stats.last_ms + 1000 // FRAME_RATE)  # the last frame's display
        for packet in self._stream.encode():
            self._container.mux(packet)
        if self._audio_stream is not None:
            for packet in self._audio_stream.encode(None):
                self._container.mux(packet)
        self._container.close()
        return self.stats


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    codec: str
    pix_fmt: str
    pts_ms: list[int]
    duration_ms: int
    audio_codec: str | None = None  # None: video only
    audio_ms: int = 0  # the audio track's length


def probe(path: Path) -> VideoInfo:
    """What an MP4 holds, read back with PyAV (decoding every frame): for tests and reports."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [int(frame.pts * frame.time_base * 1000) for frame in container.decode(stream)]
        ctx = stream.codec_context
        duration = int(container.duration * 1000 / av.time_base) if container.duration else (pts[-1] if pts else 0)
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_ms = int(audio.duration * audio.time_base * 1000) if audio is not None and audio.duration else 0
        return VideoInfo(len(pts), ctx.width, ctx.height, ctx.name, ctx.pix_fmt or "", pts, duration,
                         audio.codec_context.name if audio is not None else None, audio_ms)
