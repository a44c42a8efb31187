"""PNG checks: the hand-written chunk walk, cross-checked against Pillow."""

import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from framesink.synthetic import make_png
from framesink_core.ingest.png import PngError, inspect_png


def pillow_png(mode="RGB", size=(32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128 if mode in ("L", "P") else (10, 20, 30)[: len(mode)] or 0).save(out, "PNG")
    return out.getvalue()


def pillow_accepts(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:
        return False


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1"])
def test_accepts_pillow_pngs_and_reads_size(mode):
    info = inspect_png(pillow_png(mode, (37, 19)))
    assert (info.width, info.height) == (37, 19)


def test_reads_size_of_real_sized_frames():
    for w, h in ((480, 360), (1280, 720)):
        info = inspect_png(make_png(w, h, seed=2, detailed=False))
        assert (info.width, info.height) == (w, h)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"\xff\xd8\xff\xe0JFIF" + b"\0" * 40, b"GIF89a" + b"\0" * 40],
    ids=["empty", "text", "jpeg", "gif"],
)
def test_not_png(data):
    with pytest.raises(PngError) as err:
        inspect_png(data)
    assert err.value.reason == "not_png"


def test_first_chunk_must_be_ihdr():
    png = pillow_png()
    body = png[8:]
    # swap in a tEXt chunk before IHDR
    text = b"tEXtk\0v"
    chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text))
    with pytest.raises(PngError) as err:
        inspect_png(png[:8] + chunk + body)
    assert err.value.reason == "not_png"


def test_every_truncation_is_rejected():
    png = pillow_png(size=(20, 10))
    for cut in range(8, len(png)):
        with pytest.raises(PngError) as err:
            inspect_png(png[:cut])
        assert err.value.reason in ("truncated_png", "bad_png"), cut


def test_crc_mismatch_is_bad_png():
    png = bytearray(pillow_png())
    png[-20] ^= 0xFF  # inside IDAT data
    with pytest.raises(PngError) as err:
        inspect_png(bytes(png))
    assert err.value.reason == "bad_png"


def test_bytes_after_iend_are_bad_png():
    """Decoders ignore them, but a frame is stored byte for byte: trailing bytes are damage (a
    cut-down oversized buffer, found by tests/unit/test_fuzz.py) or a polyglot's payload."""
    png = pillow_png()
    assert inspect_png(png).width == 32
    for tail in (b"\0", b"\0\0\0", b"PK\x03\x04" + bytes(40)):
        with pytest.raises(PngError) as err:
            inspect_png(png + tail)
        assert err.value.reason == "bad_png" and f"{len(tail)} bytes after the IEND chunk" in err.value.detail


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255), cut=st.integers(min_value=0))
def test_mutations_never_accepted_when_pillow_rejects(position, value, cut):
    """Whatever the walk accepts, Pillow can also verify and decode (no false accepts)."""
    png = bytearray(pillow_png(size=(16, 16)))
    png[position % len(png)] = value
    data = bytes(png[: max(8, len(png) - cut % 64)])
    try:
        inspect_png(data)
    except PngError:
        return
    assert pillow_accepts(data)


def test_the_fingerprint_tells_frames_apart_as_a_crc32_would():
    """The chunk walk's fingerprint (storage.py compares redeliveries by it instead of a
    second CRC32 pass): equal for the same bytes, different for another frame of the same
    size and length."""
    frames = [make_png(64, 48, seed=s, detailed=False) for s in range(50)]
    prints = [inspect_png(f).fingerprint for f in frames]
    assert prints[0] == inspect_png(bytes(frames[0])).fingerprint and prints[0].startswith("png1:")
    assert len(set(prints)) == len(set(frames))
    same_length = [(a, b) for a in frames for b in frames if a != b and len(a) == len(b)]
    assert all(inspect_png(a).fingerprint != inspect_png(b).fingerprint for a, b in same_length)
