"""Synthetic Recall traffic: PNG frames and `video_separate_png.data` events.

Used by the simulator, the demo, the benchmarks and the tests, so all of them send exactly
the payload shape in docs/recall-events.md.
"""

from __future__ import annotations

import base64
import io
import json
import random
import uuid
from datetime import datetime, timedelta, timezone

from PIL import Image, ImageDraw, ImageFilter

FRAME_EVENT = "video_separate_png.data"
WEBCAM_SIZE = (480, 360)
SCREENSHARE_SIZE = (1280, 720)


def make_png(
    width: int = 480, height: int = 360, *, seed: int = 0, detailed: bool = True, label: str | None = None,
    face: bool = False,
) -> bytes:
    """A PNG frame, the same bytes for the same arguments.

    ``detailed`` gives camera-like content whose PNG size resembles a real webcam frame:
    100-320 KB at 480x360 (so 130-430 KB of base64, over API Gateway's 32 KB frame and
    128 KB message limits), ~0.5-1 MB at 1280x720. Otherwise a tiny flat frame (1-2 KB at
    480x360) that fits through API Gateway. ``label`` is drawn in the corner (e.g. a name).
    ``face``: a drawn face in the middle, which OpenCV's frontal-face Haar cascade finds (the
    face-count analyzer, analyzers/faces: exactly one face in 195 of 200 camera-like frames at
    480x360 and in 200 of 200 flat ones).
    """
    rng = random.Random(seed)
    if not detailed:
        img = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        if face:
            draw_face(ImageDraw.Draw(img), width / 2, height * 0.55, height * 0.53)
    else:
        # A soft scene plus sensor-like luma noise. PNG cannot compress noise, so the noise
        # level sets the file size: 0.01-0.12 spans ~140-300 KB at 480x360, like cameras.
        scene = Image.new("RGB", (width, height), (rng.randrange(80, 180),) * 3)
        draw = ImageDraw.Draw(scene)
        for _ in range(12):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            x1, y1 = x0 + rng.randrange(20, width // 2), y0 + rng.randrange(20, height // 2)
            color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            draw.ellipse((x0, y0, x1, y1), fill=color)
        scene = scene.filter(ImageFilter.GaussianBlur(3))
        face_x = width / 2 + rng.randrange(-20, 21)
        noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
        img = Image.blend(scene, noise, rng.uniform(0.01, 0.12))
        if face:  # in front of the noisy scene, a little soft, as a lit face in focus
            layer, mask = Image.new("RGB", (width, height)), Image.new("L", (width, height), 0)
            s = height * 0.53
            draw_face(ImageDraw.Draw(layer), face_x, height * 0.55, s)
            ImageDraw.Draw(mask).ellipse((face_x - 0.56 * s, height * 0.55 - 0.72 * s, face_x + 0.56 * s,
                                          height * 0.55 + 0.71 * s), fill=255)
            img.paste(layer.filter(ImageFilter.GaussianBlur(1)), (0, 0), mask)
    ImageDraw.Draw(img).text((4, 4), label if label is not None else f"{seed}", fill=(255, 255, 255))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def draw_face(draw: ImageDraw.ImageDraw, cx: float, cy: float, s: float) -> None:
    """A frontal face of height ~1.3 ``s`` centred at (cx, cy): a dark rim (hair, shadow: the
    contrast with any background), head, hair, brows, eyes, nose, mouth."""
    draw.ellipse((cx - 0.56 * s, cy - 0.72 * s, cx + 0.56 * s, cy + 0.71 * s), fill=(40, 35, 35))
    draw.ellipse((cx - 0.5 * s, cy - 0.65 * s, cx + 0.5 * s, cy + 0.65 * s), fill=(224, 180, 150))
    draw.pieslice((cx - 0.52 * s, cy - 0.7 * s, cx + 0.52 * s, cy + 0.1 * s), 180, 360, fill=(60, 40, 30))
    for dx in (-0.22 * s, 0.22 * s):
        draw.rectangle((cx + dx - 0.13 * s, cy - 0.2 * s, cx + dx + 0.13 * s, cy - 0.15 * s), fill=(70, 50, 40))
        draw.ellipse((cx + dx - 0.1 * s, cy - 0.1 * s, cx + dx + 0.1 * s, cy), fill=(250, 250, 250))
        draw.ellipse((cx + dx - 0.05 * s, cy - 0.09 * s, cx + dx + 0.05 * s, cy - 0.01 * s), fill=(40, 30, 30))
    draw.polygon([(cx, cy), (cx - 0.07 * s, cy + 0.22 * s), (cx + 0.07 * s, cy + 0.22 * s)], fill=(200, 150, 125))
    draw.ellipse((cx - 0.18 * s, cy + 0.33 * s, cx + 0.18 * s, cy + 0.42 * s), fill=(150, 60, 60))


def make_slide(index: int, width: int = 1280, height: int = 720, *, noise_seed: int = 0, noise: float = 0.04) -> bytes:
    """Slide ``index`` of a generated deck as a screenshare PNG: a title bar, shapes and text
    lines that differ from slide to slide; ``noise_seed`` adds sensor-like noise (``noise``,
    the blend weight), so repeats of one slide are never byte-identical."""
    rng = random.Random(index * 7919 + 17)
    img = Image.new("RGB", (width, height), tuple(rng.randrange(200, 256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, height // 8), fill=tuple(rng.randrange(0, 120) for _ in range(3)))
    draw.text((width // 32, height // 24), f"Slide {index + 1}", fill=(255, 255, 255))
    for _ in range(6):
        x0, y0 = rng.randrange(width // 32, width * 3 // 4), rng.randrange(height // 6, height * 4 // 5)
        draw.rectangle((x0, y0, x0 + rng.randrange(width // 16, width // 4), y0 + rng.randrange(height // 18, height // 5)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    for line in range(8):
        draw.text((width // 20, height // 5 + line * height // 18), f"- point {index}.{line} " + "lorem ipsum "
                  * rng.randrange(1, 6), fill=(20, 20, 20))
    if noise:
        grain = random.Random(noise_seed)
        img = Image.blend(img, Image.frombytes("L", (width, height), grain.randbytes(width * height)).convert("RGB"),
                          noise)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def frame_event(
    png: bytes,
    *,
    recording_id: str,
    participant_id: int | str,
    relative: float,
    frame_type: str = "webcam",
    name: str | None = "Ada Lovelace",
    is_host: bool = False,
    platform: str | None = "desktop",
    bot_id: str | None = None,
    started_at: datetime | None = None,
    with_email: bool = False,
) -> dict:
    """A `video_separate_png.data` event as Recall sends it."""
    started_at = started_at or datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
    absolute = (started_at + timedelta(seconds=relative)).isoformat(timespec="milliseconds")
    participant = {
        "id": participant_id,
        "name": name,
        "is_host": is_host,
        "platform": platform,
        "extra_data": {},
    }
    if with_email:
        participant["email"] = None
    return {
        "event": FRAME_EVENT,
        "data": {
            "data": {
                "buffer": base64.b64encode(png).decode("ascii"),
                "timestamp": {"relative": relative, "absolute": absolute.replace("+00:00", "Z")},
                "type": frame_type,
                "participant": participant,
            },
            "realtime_endpoint": {"id": str(uuid.uuid4()), "metadata": {}},
            "video_separate": {"id": str(uuid.uuid4()), "metadata": {}},
            "recording": {"id": recording_id, "metadata": {}},
            "bot": {"id": bot_id, "metadata": {}} if bot_id else None,
        },
    }


def frame_message(png: bytes, **kwargs) -> str:
    return json.dumps(frame_event(png, **kwargs))


def _envelope(event: str, inner: dict, recording_id: str, bot_id: str | None, media: str) -> str:
    return json.dumps({"event": event, "data": {
        "data": inner, "realtime_endpoint": {"id": str(uuid.uuid4()), "metadata": {}},
        media: {"id": str(uuid.uuid4()), "metadata": {}}, "recording": {"id": recording_id, "metadata": {}},
        "bot": {"id": bot_id, "metadata": {}} if bot_id else None}})


def _participant(participant_id: int | str, name: str | None) -> dict:
    return {"id": participant_id, "name": name, "is_host": False, "platform": "desktop", "extra_data": {}}


def participant_event_message(kind: str, *, recording_id: str, participant_id: int | str, relative: float,
                              name: str | None = "Ada Lovelace", text: str | None = None,
                              bot_id: str | None = None) -> str:
    """A `participant_events.<kind>` message as Recall sends it (``text``: a chat message's)."""
    absolute = (datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc) + timedelta(seconds=relative))
    return _envelope(f"participant_events.{kind}", {
        "participant": _participant(participant_id, name),
        "timestamp": {"absolute": absolute.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                      "relative": relative},
        "data": {"text": text, "to": "everyone"} if text is not None else None,
    }, recording_id, bot_id, "participant_events")


def transcript_message(words: list[tuple[str, float, float | None]], *, recording_id: str,
                       participant_id: int | str, name: str | None = "Ada Lovelace", bot_id: str | None = None,
                       partial: bool = False) -> str:
    """A `transcript.data` (or `.partial_data`) message: ``words`` as (text, start s, end s)."""
    return _envelope("transcript.partial_data" if partial else "transcript.data", {
        "words": [{"text": text, "start_timestamp": {"relative": start},
                   "end_timestamp": {"relative": end} if end is not None else None} for text, start, end in words],
        "participant": _participant(participant_id, name),
    }, recording_id, bot_id, "transcript")


def spoken(text: str, start: float, seconds_per_word: float = 0.3) -> list[tuple[str, float, float]]:
    """``text``'s words, one every ``seconds_per_word`` from ``start``."""
    return [(w, start + n * seconds_per_word, start + (n + 0.8) * seconds_per_word)
            for n, w in enumerate(text.split())]


AUDIO_SAMPLE_RATE = 16_000  # Recall's raw audio (docs/recall-events.md)


def voice(participant_index: int, start_sample: int, samples: int) -> bytes:
    """A synthetic voice, 16 kHz mono S16LE: a tone of this participant's own pitch (so a
    listener, or a test, tells them apart) pulsed at syllable rate."""
    import math

    pitch = 180.0 + 70.0 * participant_index
    out = bytearray()
    for n in range(start_sample, start_sample + samples):
        t = n / AUDIO_SAMPLE_RATE
        level = 0.35 + 0.65 * abs(math.sin(math.pi * 3.0 * t))
        out += int(7000 * level * math.sin(2 * math.pi * pitch * t)).to_bytes(2, "little", signed=True)
    return bytes(out)


def audio_message(pcm: bytes, *, recording_id: str, relative: float, participant_id: int | str | None = None,
                  name: str | None = "Ada Lovelace", bot_id: str | None = None) -> str:
    """An `audio_separate_raw.data` message (a participant's), or `audio_mixed_raw.data`
    with ``participant_id`` None: base64 PCM stamped with the chunk's first sample's time."""
    absolute = (datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc) + timedelta(seconds=relative))
    inner = {"buffer": base64.b64encode(pcm).decode("ascii"),
             "timestamp": {"absolute": absolute.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                           "relative": relative}}
    if participant_id is not None:
        inner["participant"] = _participant(participant_id, name)
    return _envelope("audio_mixed_raw.data" if participant_id is None else "audio_separate_raw.data", inner,
                     recording_id, bot_id, "audio_mixed" if participant_id is None else "audio_separate")
