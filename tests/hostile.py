"""The hostile-input corpus: one case per class of message an outside test used against both
ingresses (issue 12), each with the outcome framesink must give it.

A case is a list of steps, (message, status, reason): most are one message; a conflict
needs the first frame before the second. Every message is built for its own recording id,
participant and time, so cases never collide with each other or with the good frames the
tests interleave. ``fits_apigw`` says whether API Gateway would deliver it at all (32 KB
frame limit; bigger messages are closed there with 1009, before framesink sees them).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from framesink.synthetic import frame_event

APIGW_FRAME = 32 * 1024


def png_bytes(width: int = 24, height: int = 16, color=(40, 80, 120)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def forged_png(width: int, height: int, idat: bytes, depth: int = 8, color: int = 2) -> bytes:
    """A PNG whose every chunk has a valid CRC, with whatever header and IDAT we like."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# 16384 x 16384 RGB of zeros: 805 MB once decoded, 780 KB as deflate. The IDAT here holds the
# first rows only; the header alone is what must be refused (nothing is ever decoded).
BOMB = forged_png(16384, 16384, zlib.compress(b"\0" * (16384 * 3 + 1) * 64, 9))
NOT_ZLIB = forged_png(24, 16, b"\xde\xad\xbe\xef" * 64)  # valid CRCs, IDAT is not a zlib stream
BAD_DEPTH = forged_png(24, 16, zlib.compress(b"\0" * (24 * 3 + 1) * 16), depth=3, color=2)


@dataclass(frozen=True)
class Step:
    message: str
    status: str  # "stored" | "rejected" | "ignored"
    reason: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]

    @property
    def fits_apigw(self) -> bool:
        return all(len(s.message.encode()) <= APIGW_FRAME for s in self.steps)


def _event(rec: str, relative: float, png: bytes | None = None, **kw) -> dict:
    return frame_event(png or png_bytes(), recording_id=rec, participant_id=kw.pop("participant_id", 7),
                       relative=relative, **kw)


def _text(event: dict, replace: tuple[str, str] | None = None) -> str:
    text = json.dumps(event, ensure_ascii=False)
    if replace:
        old, new = replace
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def cases(prefix: str) -> list[Case]:
    """The corpus, with recording ids ``<prefix>-<case>`` (one recording per case)."""
    def rec(name: str) -> str:
        return f"{prefix}-{name}"[:128]

    def one(name, message, status, reason=None):
        return Case(name, (Step(message, status, reason),))

    out = [
        # Free text: stored, cut to its byte budget, in linear time.
        one("name-14000-e-umlaut", _text(_event(rec("name-14000-e-umlaut"), 1.0, name="ë" * 14000)), "stored"),
        one("name-450kb", _text(_event(rec("name-450kb"), 1.0, name="Z" * 450_000)), "stored"),
        one("name-control-chars", _text(_event(rec("name-control-chars"), 1.0, name="\x1b[2J\x07Eve\r\n\t")), "stored"),
        one("platform-100kb", _text(_event(rec("platform-100kb"), 1.0, platform="p" * 100_000)), "stored"),
        one("metadata-deep-500", _text(_event(rec("metadata-deep-500"), 1.0),
                                       ('"metadata": {}', '"metadata": ' + "[" * 500 + "]" * 500)), "stored"),
        # Numbers and nesting: rejected with a reason, never an internal error.
        one("relative-400-digits", _text(_event(rec("relative-400-digits"), 1.0),
                                         ('"relative": 1.0', '"relative": ' + "9" * 400)), "rejected", "not_json"),
        one("relative-1e306", _text(_event(rec("relative-1e306"), 1.0), ('"relative": 1.0', '"relative": 1e306')),
            "rejected", "bad_timestamp"),
        one("relative-nan", _text(_event(rec("relative-nan"), 1.0), ('"relative": 1.0', '"relative": NaN')),
            "rejected", "not_json"),
        one("participant-id-400-digits", _text(_event(rec("participant-id-400-digits"), 1.0),
                                               ('"id": 7', '"id": ' + "7" * 400)), "rejected", "not_json"),
        one("participant-id-20-digits", _text(_event(rec("participant-id-20-digits"), 1.0),
                                              ('"id": 7', '"id": 18446744073709551616')),
            "rejected", "bad_participant_id"),
        one("nested-10000", _text(_event(rec("nested-10000"), 1.0),
                                  ('"extra_data": {}', '"extra_data": ' + "[" * 10000 + "]" * 10000)),
            "rejected", "not_json"),
        one("lone-surrogate", _text(_event(rec("lone-surrogate"), 1.0, name="x"), ('"name": "x"', '"name": "\\ud800"')),
            "rejected", "not_json"),
        one("absolute-non-ascii", _text(_event(rec("absolute-non-ascii"), 1.0),
                                        ('"absolute": "2026', '"absolute": "２０２６')), "rejected", "bad_timestamp"),
        one("absolute-crlf", _text(_event(rec("absolute-crlf"), 1.0),
                                   ('.000Z"', '.000Z\\r\\nX-Amz-Meta-Evil: 1"')), "rejected", "bad_timestamp"),
        one("absolute-10kb", _text(_event(rec("absolute-10kb"), 1.0),
                                   ('"absolute": "2026', '"absolute": "' + "2" * 10_000)), "rejected", "bad_timestamp"),
        one("type-object", _text(_event(rec("type-object"), 1.0), ('"type": "webcam"', '"type": {"a": [1, 2]}')),
            "rejected", "bad_type"),
        one("recording-id-traversal", _text(_event("../../etc", 1.0)), "rejected", "bad_recording_id"),
        one("buffer-with-newlines", _text(_event(rec("buffer-with-newlines"), 1.0),
                                          ('"buffer": "iVBOR', '"buffer": "iVB\\nOR')), "rejected", "bad_base64"),
        # PNGs: refused by their header, never decoded.
        one("png-bomb-16384", _text(_event(rec("png-bomb-16384"), 1.0, png=BOMB)), "rejected", "image_too_large"),
        one("png-idat-not-zlib", _text(_event(rec("png-idat-not-zlib"), 1.0, png=NOT_ZLIB)), "rejected", "bad_png"),
        one("png-bad-bit-depth", _text(_event(rec("png-bad-bit-depth"), 1.0, png=BAD_DEPTH)), "rejected", "bad_png"),
        # Other event names are acknowledged, whatever their size.
        one("event-name-20kb", json.dumps({"event": "e" * 20_000, "data": {}}), "ignored", "other"),
    ]
    first, second = png_bytes(color=(1, 2, 3)), png_bytes(color=(1, 2, 4))
    conflict = rec("conflict")
    out.append(Case("conflict", (
        Step(_text(_event(conflict, 2.0, png=first)), "stored"),
        Step(_text(_event(conflict, 2.0, png=second)), "rejected", "conflicting_frame"),
        Step(_text(_event(conflict, 2.0, png=first)), "duplicate"),
    )))
    return out


def good_frame(prefix: str, k: int) -> tuple[str, str]:
    """The k-th honest frame sent between hostile ones: (message, its S3 key)."""
    rec = f"{prefix}-good"
    event = frame_event(png_bytes(color=(k % 256, 10, 10)), recording_id=rec, participant_id=100, relative=k / 2)
    return json.dumps(event), f"recordings/{rec}/participants/100/webcam/{round(k * 500):010d}.png"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
