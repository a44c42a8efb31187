"""The spool's contract (framesink_core/ingest/spool.py): bounded, in order, one key at a time per
batch, survives a new process, never trips on a damaged file; and the ingestor's use of it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from framesink.synthetic import make_png
from framesink_core.ingest.events import Frame
from framesink_core.ingest.ingestor import FAILED, SPOOLED, STORED, Ingestor
from framesink_core.ingest.spool import Spool
from framesink_core.ingest.storage import StoreError


def frame(relative_ms: int, participant: str = "100", png: bytes | None = None) -> Frame:
    return Frame(recording_id="rec-1", participant_id=participant, participant_name="Ada", is_host=True,
                 platform="zoom", frame_type="webcam", relative_ms=relative_ms, absolute=None, bot_id="bot-1",
                 png=png or make_png(32, 24, seed=relative_ms, detailed=False), width=32, height=24)


def test_frames_come_back_whole_and_in_the_order_they_went_in(tmp_path):
    spool = Spool(tmp_path, max_bytes=10**6)
    frames = [frame(ms, participant=str(100 + ms % 3)) for ms in range(0, 5000, 500)]
    for f in frames:
        assert spool.put(f, bot_id="bot-1", connection_id="c-1", reason="s3_write_failed")
    batch = spool.oldest(4)
    assert [s.frame for s in batch] == frames[:4]
    assert all(s.bot_id == "bot-1" and s.connection_id == "c-1" for s in batch)
    for item in batch:
        spool.remove(item.path)
    assert [s.frame for s in spool.oldest(100)] == frames[4:]
    assert spool.depth == 6


def test_a_key_spooled_twice_is_never_in_one_batch(tmp_path):
    """First spooled, first written: the second of a key waits for the next batch."""
    spool = Spool(tmp_path, max_bytes=10**6)
    first, other, again = frame(0), frame(500), frame(0, png=make_png(32, 24, seed=99, detailed=False))
    for f in (first, other, again):
        spool.put(f, bot_id=None, connection_id=None, reason="s3_write_failed")
    assert [s.frame for s in spool.oldest(10)] == [first, other]


def test_a_frame_still_being_written_is_not_taken_nor_anything_after_it(tmp_path, monkeypatch):
    """A drain between a put's reservation and its rename must neither read the missing file
    (it used to drop it as damaged: frames spooled, fewer drained, none left) nor pass it."""
    import framesink_core.ingest.spool as spool_module

    spool = Spool(tmp_path, max_bytes=10**6)
    first, second = frame(0), frame(500)
    spool.put(first, bot_id=None, connection_id=None, reason="x")
    seen_mid_write = []
    real_replace = spool_module.os.replace

    def replace_after_a_look(src, dst):
        seen_mid_write.append([s.frame for s in spool.oldest(10)])
        real_replace(src, dst)

    monkeypatch.setattr(spool_module.os, "replace", replace_after_a_look)
    assert spool.put(second, bot_id=None, connection_id=None, reason="x")
    assert seen_mid_write == [[first]]
    assert [s.frame for s in spool.oldest(10)] == [first, second] and spool.depth == 2


def test_the_bound_holds_and_room_comes_back(tmp_path):
    f = frame(0)
    spool = Spool(tmp_path, max_bytes=3 * (len(f.png) + 400))
    puts = [spool.put(replace(f, relative_ms=ms), bot_id=None, connection_id=None, reason="x") for ms in range(10)]
    assert puts[:3] == [True] * 3 and not any(puts[3:]) and spool.full
    assert spool.bytes <= spool.max_bytes
    for item in spool.oldest(10):
        spool.remove(item.path)
    assert not spool.full and spool.bytes == 0 and not spool.active


def test_a_new_spool_on_the_same_directory_takes_up_where_the_last_left_off(tmp_path):
    spool = Spool(tmp_path, max_bytes=10**6)
    for ms in (0, 500):
        spool.put(frame(ms), bot_id=None, connection_id=None, reason="x")
    (tmp_path / "000000000099.frame.tmp").write_bytes(b"half a frame")  # a crash mid-write
    again = Spool(tmp_path, max_bytes=10**6)
    assert again.depth == 2 and again.bytes == spool.bytes
    again.put(frame(1000), bot_id=None, connection_id=None, reason="x")
    assert [s.frame.relative_ms for s in again.oldest(10)] == [0, 500, 1000]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_file_is_logged_and_removed_and_the_rest_go_on(tmp_path, caplog_json):
    spool = Spool(tmp_path, max_bytes=10**6)
    for ms in (0, 500):
        spool.put(frame(ms), bot_id=None, connection_id=None, reason="x")
    first = sorted(tmp_path.glob("*.frame"))[0]
    first.write_bytes(b'{"frame": {"recording_id": 1}}\n')
    assert [s.frame.relative_ms for s in spool.oldest(10)] == [500]
    assert spool.depth == 1
    assert [line["reason"] for line in caplog_json() if line.get("message") == "spooled frame unreadable, removed"] \
        == ["spool_corrupt"]


def test_a_max_bytes_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Spool(tmp_path, max_bytes=0)


class FlakyStore:
    """FrameStore's begin_put, failing (after "retries") while ``down``."""

    def __init__(self):
        self.down = True
        self.written: list[str] = []

    def begin_put(self, frame, *, bot_id=None, connection_id=None):
        from framesink_core.ingest.storage import StoreResult, resolved

        if self.down:
            raise StoreError("s3", "Could not connect to the endpoint URL")
        self.written.append(frame.s3_key)
        return resolved(lambda: StoreResult(frame.s3_key, duplicate=False))


def test_the_ingestor_spools_what_fails_keeps_order_behind_it_and_drains_when_the_store_is_back(tmp_path):
    store = FlakyStore()
    ingestor = Ingestor(store, max_frame_bytes=10**6)
    ingestor.spool = Spool(tmp_path, max_bytes=10**6)
    frames = [frame(ms) for ms in range(0, 3000, 500)]
    outcomes = [ingestor.store_frame(f).status for f in frames[:3]]
    store.down = False  # back, but frames behind the spooled ones still queue behind them
    outcomes += [ingestor.store_frame(f).status for f in frames[3:]]
    assert outcomes == [SPOOLED] * 6 and store.written == []
    with ThreadPoolExecutor(4) as pool:
        assert ingestor.drain_spool(pool, limit=4) == (4, 0)
        assert ingestor.drain_spool(pool, limit=4) == (2, 0)
    assert store.written == [f.s3_key for f in frames] and not ingestor.spool.active
    assert ingestor.store_frame(frame(3000)).status == STORED


def test_a_drain_that_still_fails_keeps_every_file(tmp_path):
    store = FlakyStore()
    ingestor = Ingestor(store, max_frame_bytes=10**6)
    ingestor.spool = Spool(tmp_path, max_bytes=10**6)
    ingestor.store_frame(frame(0))
    with ThreadPoolExecutor(2) as pool:
        assert ingestor.drain_spool(pool) == (0, 1)
    assert ingestor.spool.depth == 1


def test_without_a_spool_a_failed_frame_is_failed(tmp_path):
    ingestor = Ingestor(FlakyStore(), max_frame_bytes=10**6)
    outcome = ingestor.store_frame(frame(0))
    assert (outcome.status, outcome.reason) == (FAILED, "s3_write_failed")


def test_a_frame_the_store_keeps_refusing_while_it_takes_others_is_failed_for_good(tmp_path, caplog_json):
    """Not an outage but a key the store refuses: it must not hold up the spool for ever."""
    from framesink_core.ingest.ingestor import POISON_ATTEMPTS

    class OneKeyRefused(FlakyStore):
        def begin_put(self, frame, **kw):
            self.down = frame.relative_ms == 0
            return super().begin_put(frame, **kw)

    store = OneKeyRefused()
    ingestor = Ingestor(store, max_frame_bytes=10**6)
    ingestor.spool = Spool(tmp_path, max_bytes=10**6)
    assert ingestor.store_frame(frame(0)).status == SPOOLED
    drains = []
    with ThreadPoolExecutor(2) as pool:
        for n in range(1, POISON_ATTEMPTS + 1):  # a frame joins behind it before every drain
            assert ingestor.store_frame(frame(n * 500)).status == SPOOLED
            drains.append(ingestor.drain_spool(pool))
    assert drains == [(1, 1)] * (POISON_ATTEMPTS - 1) + [(2, 0)]
    assert not ingestor.spool.active and len(store.written) == POISON_ATTEMPTS
    lost = [line for line in caplog_json() if line.get("message") == "frame not stored"]
    assert [(line["reason"], line["s3_key"]) for line in lost] == [("s3_write_failed", frame(0).s3_key)]
