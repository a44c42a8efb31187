"""PNG checks for the hot path: signature, IHDR, and a chunk walk that proves the file is whole.

Why not Pillow here: ``Image.open(...).verify()`` does the same walk but costs a ~10 MB
binary dependency in every Lambda asset and tens of milliseconds of import on each cold
start, and its exceptions do not say *why* a file is bad. This walk reads only the 12-byte
chunk headers and checks each chunk's CRC with zlib (C speed); pixels are never decoded.
tests/unit/test_png.py cross-checks it against Pillow on generated and mutated images.

What it refuses without decoding: a header that is not a valid PNG header (bit depth and
colour type that go together, compression/filter 0, interlace 0 or 1), an image over the
pixel budget (a decompression bomb is a few KB that inflate to gigabytes), and a first IDAT
that does not start a zlib stream. A frame that passes can still hold corrupt deflate data
deep inside; readers (export, analyzers) skip a frame they cannot decode.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from framesink_core.shared.settings import DEFAULT_MAX_FRAME_PIXELS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")
# Either side of a frame at most this (Recall: 480x360 webcams, 1280x720 screenshares).
MAX_DIMENSION = 8192
# 4K UHD: admits every size Recall sends with room to spare; a bomb is far beyond it.
DEFAULT_MAX_PIXELS = DEFAULT_MAX_FRAME_PIXELS
# Allowed bit depths per colour type (PNG spec, table 11.1).
_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


class PngError(ValueError):
    """A frame that is not a whole, valid PNG. ``reason`` is a stable metric/log label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    bit_depth: int
    color_type: int
    # The file's identity from the walk itself: its size and a CRC32 over every chunk's length
    # and CRC fields (each chunk CRC covers its type and data, checked above). The receiver
    # stores it instead of a second CRC32 pass over the whole file (storage.py: a redelivery
    # is compared by it); it tells files apart as well as a whole-file CRC32 does.
    fingerprint: str = ""


def _check_header(width: int, height: int, depth: int, color: int, compression: int, filtering: int,
                  interlace: int, max_pixels: int) -> None:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise PngError("image_too_large" if width and height else "bad_png",
                       f"IHDR size {width}x{height} is outside 1..{MAX_DIMENSION} per side")
    if width * height > max_pixels:
        raise PngError("image_too_large", f"{width}x{height} is {width * height} pixels, over the {max_pixels} allowed")
    if depth not in _BIT_DEPTHS.get(color, ()):
        raise PngError("bad_png", f"IHDR bit depth {depth} with colour type {color} is not a valid PNG")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise PngError("bad_png", "IHDR compression/filter/interlace method is not one PNG defines")


def _check_zlib_header(data: bytes, pos: int, length: int) -> None:
    """The first IDAT must open a zlib stream: deflate, window <= 32 KB, valid check bits,
    no preset dictionary (PNG forbids one)."""
    if length < 2:
        return  # a stream split across tiny IDATs: legal, too rare to chase here
    cmf, flg = data[pos], data[pos + 1]
    if cmf & 0x0F != 8 or cmf >> 4 > 7 or (cmf << 8 | flg) % 31 or flg & 0x20:
        raise PngError("bad_png", "IDAT does not start a zlib stream")


def inspect_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> PngInfo:
    """Validate ``data`` as a complete PNG and return its header facts.

    Raises PngError with reason ``not_png`` (no PNG signature / no IHDR first),
    ``truncated_png`` (ends before IEND), ``image_too_large`` (over ``max_pixels`` or
    MAX_DIMENSION) or ``bad_png`` (CRC mismatch, invalid header, IDAT not zlib, no IDAT, bytes
    after IEND).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise PngError("not_png", "data does not start with the PNG signature")
    view = memoryview(data)
    pos = len(PNG_SIGNATURE)
    end = len(data)
    info: PngInfo | None = None
    seen_idat = False
    fields = []  # each chunk's length and CRC fields, for the fingerprint
    while True:
        if pos + 12 > end:
            raise PngError("truncated_png", f"PNG ends at byte {end} before its IEND chunk")
        length, ctype = _CHUNK_HEAD.unpack_from(data, pos)
        data_end = pos + 8 + length
        if length > 0x7FFFFFFF or data_end + 4 > end:
            raise PngError("truncated_png", f"chunk {ctype!r} at byte {pos} runs past the end")
        (crc,) = struct.unpack_from(">I", data, data_end)
        if zlib.crc32(view[pos + 4 : data_end]) != crc:
            raise PngError("bad_png", f"chunk {ctype!r} at byte {pos} fails its CRC")
        fields += (view[pos:pos + 4], view[data_end:data_end + 4])
        if info is None:
            if ctype != b"IHDR" or length != 13:
                raise PngError("not_png", "first chunk is not a 13-byte IHDR")
            width, height, depth, color, compression, filtering, interlace = _IHDR.unpack_from(data, pos + 8)
            _check_header(width, height, depth, color, compression, filtering, interlace, max_pixels)
            info = PngInfo(width, height, depth, color)
        elif ctype == b"IDAT":
            if not seen_idat:
                _check_zlib_header(data, pos + 8, length)
            seen_idat = True
        elif ctype == b"IEND":
            if not seen_idat:
                raise PngError("bad_png", "PNG has no IDAT chunk")
            # Decoders ignore what follows IEND, but a frame is stored byte for byte: bytes
            # after it are damage (or smuggled data), not part of the image.
            if data_end + 4 != end:
                raise PngError("bad_png", f"{end - data_end - 4} bytes after the IEND chunk")
            return PngInfo(info.width, info.height, info.bit_depth, info.color_type,
                           f"png1:{end}:{zlib.crc32(b''.join(fields)):08x}")
        pos = data_end + 4
