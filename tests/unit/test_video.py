"""The MP4 writer, read back with PyAV: frame count, timestamps (variable frame rate from the
frames' relative times), dimensions, gaps held or blacked out, sizes scaled, bad frames
skipped."""

from __future__ import annotations

import av
import pytest
from PIL import Image

from framesink.synthetic import make_png
from framesink_core.read.video import VideoWriter, probe


def write(path, frames, **kwargs):
    writer = VideoWriter(path, **kwargs)
    results = [writer.add(ms, png) for ms, png in frames]
    return writer.close(), results


def test_frames_keep_their_relative_times_and_size(tmp_path):
    times = [0, 500, 1000, 1520, 2000, 2490]  # jitter, as Recall's relative times have
    stats, _ = write(tmp_path / "a.mp4", [(ms, make_png(320, 240, seed=i)) for i, ms in enumerate(times)])
    info = probe(tmp_path / "a.mp4")
    assert (info.frames, info.width, info.height) == (6, 320, 240)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.pts_ms == [t - times[0] for t in times]
    assert (stats.frames, stats.duration_ms, stats.skipped, stats.filled) == (6, 2490, 0, 0)


def test_the_file_is_faststart_the_index_before_the_media(tmp_path):
    write(tmp_path / "f.mp4", [(ms, make_png(64, 48, seed=ms)) for ms in (0, 500, 1000)])
    data = (tmp_path / "f.mp4").read_bytes()
    assert 0 < data.index(b"moov") < data.index(b"mdat")  # playable while it downloads


def test_a_gap_holds_the_last_frame_by_default(tmp_path):
    times = [0, 500, 1000, 61000, 61500]  # a minute with the camera off
    write(tmp_path / "g.mp4", [(ms, make_png(160, 120, seed=ms)) for ms in times])
    info = probe(tmp_path / "g.mp4")
    assert info.frames == 5 and info.pts_ms == times  # no frame invented: the last one is shown until 61 s
    assert info.duration_ms >= 61000


def test_gap_fill_black_blacks_out_a_long_gap_after_the_threshold(tmp_path):
    times = [0, 500, 20500, 21000]
    pngs = [make_png(160, 120, seed=i) for i in range(4)]
    stats, _ = write(tmp_path / "b.mp4", list(zip(times, pngs)), gap_fill="black", gap_threshold_ms=5000)
    info = probe(tmp_path / "b.mp4")
    assert info.pts_ms == [0, 500, 5500, 20500, 21000]  # the black frame at last + 5 s
    assert (stats.frames, stats.filled) == (4, 1)
    with av.open(str(tmp_path / "b.mp4")) as container:
        decoded = [f.to_image() for f in container.decode(video=0)]
    black = decoded[2].convert("L")
    assert max(black.tobytes()) < 24  # black, give or take the codec
    assert max(decoded[3].convert("L").tobytes()) > 100  # the next real frame is back


def test_a_frame_of_another_size_is_scaled_to_the_streams(tmp_path):
    frames = [(0, make_png(640, 360, seed=1)), (500, make_png(1280, 720, seed=2)), (1000, make_png(321, 181, seed=3))]
    stats, _ = write(tmp_path / "s.mp4", frames)
    info = probe(tmp_path / "s.mp4")
    assert (info.frames, info.width, info.height) == (3, 640, 360)


def test_an_odd_size_is_rounded_down_to_even_for_yuv420p(tmp_path):
    write(tmp_path / "o.mp4", [(0, make_png(321, 181, seed=1)), (500, make_png(321, 181, seed=2))])
    info = probe(tmp_path / "o.mp4")
    assert (info.width, info.height) == (320, 180)


def test_undecodable_and_out_of_order_frames_are_skipped_and_counted(tmp_path):
    good = [make_png(96, 64, seed=i) for i in range(3)]
    frames = [(0, b"\x89PNG\r\n\x1a\nnot really"), (100, good[0]), (600, good[1]), (600, good[1]), (400, good[2]),
              (1100, good[2])]
    stats, results = write(tmp_path / "u.mp4", frames)
    assert results == [False, True, True, False, False, True]
    assert (stats.frames, stats.skipped) == (3, 3)
    assert probe(tmp_path / "u.mp4").pts_ms == [0, 500, 1000]  # from the first good frame


def test_no_decodable_frame_writes_no_file(tmp_path):
    stats, _ = write(tmp_path / "none.mp4", [(0, b"junk"), (500, b"")])
    assert stats is None and not (tmp_path / "none.mp4").exists()


@pytest.mark.parametrize("size", [(480, 360), (1280, 720)])
def test_decoded_pixels_resemble_the_source(tmp_path, size):
    png = make_png(*size, seed=9)
    write(tmp_path / "p.mp4", [(0, png), (500, png)])
    with av.open(str(tmp_path / "p.mp4")) as container:
        first = next(container.decode(video=0)).to_image()
    import io

    source = Image.open(io.BytesIO(png)).convert("RGB")
    diff = sum(abs(a - b) for a, b in zip(first.convert("L").resize((32, 18)).tobytes(),
                                             source.convert("L").resize((32, 18)).tobytes())) / (32 * 18)
    assert diff < 12  # lossy, but the same picture


@pytest.mark.parametrize("gap_ms, tick_ms", [
    (40 * 3600 * 1000, 1),  # a 40-hour gap: past 2^27 ms, where the file broke
    (115 * 24 * 3600 * 1000, 10),  # the longest relative time the storage layout accepts
])
def test_a_stream_longer_than_2_27_ms_keeps_its_times(tmp_path, gap_ms, tick_ms):
    """Past 2^27 ms every later frame read back at the gap's start (a 1.5 s file for a
    40-hour stream). The track's timescale is the writer's time base, and with the span given
    it picks a coarser one when milliseconds cannot hold it."""
    times = [0, 500, gap_ms, gap_ms + 500]
    stats, _ = write(tmp_path / "long.mp4", [(ms, make_png(64, 48, seed=i, detailed=False)) for i, ms in enumerate(times)],
                     span_ms=times[-1] - times[0])
    info = probe(tmp_path / "long.mp4")
    assert info.frames == 4 and stats.duration_ms == gap_ms + 500
    assert all(abs(got - want) <= tick_ms for got, want in zip(info.pts_ms, times)), info.pts_ms
    assert info.pts_ms == sorted(set(info.pts_ms))  # still in order, none on top of another
