"""Audio (framesink_core/ingest/audio.py, read/audio_track.py, read/video.py) over moto:
the documented shapes parsed, hostile variants refused with a reason, first write wins for
audio objects (a redelivery is a duplicate, other bytes on a taken key keep the first and
lose nothing new), the receiver's buffering into 5 s objects, and the MP4's sound read back
with PyAV: present, aligned on the frames' clock, silence in a gap and before a late
joiner's first word."""

from __future__ import annotations

import base64
import io
import json
import wave
from dataclasses import dataclass

import av
import numpy as np
import pytest

from framesink.synthetic import audio_message, make_png, voice
from framesink_core.ingest.audio import (
    MAX_CHUNK_BYTES,
    SAMPLE_RATE,
    AudioChunk,
    AudioObjects,
    BufferedAudio,
    audio_key,
    parse_audio,
    read_wav,
)
from framesink_core.ingest.events import Rejected
from framesink_core.ingest.tombstones import write_tombstone
from framesink_core.read.audio_track import PcmTimeline, audio_keys
from framesink_core.read.export import audio_for
from framesink_core.read.video import VideoWriter
from framesink_core.service import Service
from framesink_core.shared.observability import flush_metrics

AAC_FRAME = 1024  # samples: "within one audio frame"


@pytest.fixture
def svc(stack, aws):
    return Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])


def parsed(message: str) -> AudioChunk:
    body = json.loads(message)
    return parse_audio(body, body["event"])


def stored(svc, key: str) -> tuple[bytes, dict]:
    answer = svc.s3.get_object(Bucket=svc.settings.bucket, Key=key)
    return read_wav(answer["Body"].read()), answer["Metadata"]


def keys(svc, rec: str, participant: str | None) -> list[str]:
    return audio_keys(svc.s3, svc.settings.bucket, rec, participant)


def test_documented_shapes_parse_separate_and_mixed():
    pcm = voice(0, 0, 1600)
    chunk = parsed(audio_message(pcm, recording_id="r1", relative=2.5, participant_id=7, bot_id="b1"))
    assert (chunk.recording_id, chunk.participant_id, chunk.start_sample, chunk.pcm, chunk.bot_id) == \
        ("r1", "7", 40_000, pcm, "b1")
    assert chunk.absolute == "2026-11-23T19:00:02.500Z"
    mixed = parsed(audio_message(pcm, recording_id="r1", relative=0))
    assert (mixed.participant_id, mixed.start_sample, mixed.bot_id) == (None, 0, None)
    body = json.loads(audio_message(pcm, recording_id="r1", relative=1))
    del body["data"]["data"]["timestamp"]["absolute"], body["data"]["bot"]  # optional fields missing
    assert parse_audio(body, body["event"]).absolute is None


def hostile(mutate, participant=True):
    body = json.loads(audio_message(b"\0\0" * 800, recording_id="r1", relative=1.0,
                                    participant_id=3 if participant else None))
    mutate(body)
    return body


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m["data"]["data"].update(buffer="not base64!!"), "bad_base64"),
    (lambda m: m["data"]["data"].update(buffer=base64.b64encode(b"\0\0\0").decode()), "bad_audio"),  # half a sample
    (lambda m: m["data"]["data"].update(buffer=""), "missing_buffer"),
    (lambda m: m["data"]["data"].update(buffer={"deep": [[[[{}]]]]}), "missing_buffer"),
    (lambda m: m["data"]["data"].update(buffer="A" * (MAX_CHUNK_BYTES * 2)), "audio_too_large"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=-0.5), "bad_timestamp"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=float("nan")), "bad_timestamp"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=True), "bad_timestamp"),
    (lambda m: m["data"]["data"]["timestamp"].update(relative=1e300), "bad_timestamp"),
    (lambda m: m["data"]["data"].pop("participant"), "missing_participant"),
    (lambda m: m["data"]["data"]["participant"].update(id="../../x"), "bad_participant_id"),
    (lambda m: m["data"]["recording"].update(id=["r"]), "bad_recording_id"),
    (lambda m: m["data"].update(data=[1] * 10), "missing_data"),
])
def test_hostile_audio_is_refused_with_a_reason(mutate, reason):
    body = hostile(mutate)
    with pytest.raises(Rejected) as refused:
        parse_audio(body, body["event"])
    assert refused.value.reason == reason


def test_a_bad_chunk_is_one_log_line_and_metric_and_the_good_ones_are_stored(svc, caplog_json):
    good = audio_message(voice(0, 0, 1600), recording_id="rb", relative=0.0, participant_id=1)
    bad = json.dumps(hostile(lambda m: m["data"]["data"].update(buffer="@@@")))
    caplog_json()
    outcomes = [svc.ingestor.handle(body).status for body in (bad, good)]
    assert outcomes == ["rejected", "recorded"]
    flush_metrics()
    lines = caplog_json()
    rejected = [line for line in lines if line.get("message") == "message rejected"]
    assert len(rejected) == 1 and rejected[0]["reason"] == "bad_base64"
    assert rejected[0]["event"] == "audio_separate_raw.data" and rejected[0]["participant_id"] == "3"
    assert any(line.get("reason") == "bad_base64" and "MessageRejected" in line for line in lines)
    assert keys(svc, "rb", "1") == [audio_key("rb", "1", 0)]


def test_the_lambda_path_writes_each_chunk_first_write_wins(svc):
    pcm = voice(1, 16_000, 1600)
    message = audio_message(pcm, recording_id="rl", relative=1.0, participant_id=4, bot_id="bot-1")
    assert svc.ingestor.handle(message).status == "recorded"
    key = audio_key("rl", "4", 1000)
    body, meta = stored(svc, key)
    assert body == pcm and meta["start-sample"] == "16000" and meta["bot-id"] == "bot-1"
    assert svc.ingestor.handle(message).status == "recorded"  # a redelivery: the same object
    assert keys(svc, "rl", "4") == [key]
    # Other bytes at the same instant: the first stays; ours is longer, and its part past the
    # first object's end is written after it.
    longer = voice(2, 16_000, 3200)
    assert AudioObjects(svc.s3, svc.settings.bucket).write(parsed(audio_message(
        longer, recording_id="rl", relative=1.0, participant_id=4)), 16_000, longer) == "conflict"
    assert stored(svc, key)[0] == pcm
    tail_key = audio_key("rl", "4", 1100)
    assert keys(svc, "rl", "4") == [key, tail_key]
    assert stored(svc, tail_key)[0] == longer[3200:]


def test_a_deleted_recordings_audio_is_refused(svc):
    write_tombstone(svc.dynamodb, svc.settings.table, "rd")
    from framesink_core.ingest.tombstones import DeletedRecordings

    svc.ingestor.deleted = DeletedRecordings(svc.dynamodb, svc.settings.table)
    outcome = svc.ingestor.handle(audio_message(b"\0\0" * 10, recording_id="rd", relative=0.0, participant_id=1))
    assert (outcome.status, outcome.reason) == ("rejected", "recording_deleted")
    assert keys(svc, "rd", "1") == []


def chunks(participant: int, start_s: float, seconds: float, step: float = 0.1):
    out, n = [], round(seconds / step)
    for k in range(n):
        begin = round((start_s + k * step) * SAMPLE_RATE)
        out.append((begin, voice(participant, begin, round(step * SAMPLE_RATE))))
    return out


def test_the_receiver_joins_chunks_into_five_second_objects(svc):
    audio = BufferedAudio(svc.s3, svc.settings.bucket, idle_seconds=3600)
    sent = chunks(0, 0.0, 6.0) + chunks(0, 8.0, 1.0)  # 6 s, a 2 s gap, 1 s
    for begin, pcm in sent:
        audio.add(AudioChunk("rr", "1", begin, pcm, None, None))
    audio.add(AudioChunk("rr", "1", sent[3][0], sent[3][1], None, None))  # a redelivery inside the first run
    audio.close()
    assert keys(svc, "rr", "1") == [audio_key("rr", "1", ms) for ms in (0, 5000, 8000)]
    spans = [stored(svc, k) for k in keys(svc, "rr", "1")]
    assert [len(pcm) // 2 for pcm, _ in spans] == [80_000, 16_000, 16_000]
    assert b"".join(pcm for pcm, _ in spans[:2]) == b"".join(p for _, p in sent[:60])


def test_a_quiet_stream_is_written_out_by_the_timer(svc):
    audio = BufferedAudio(svc.s3, svc.settings.bucket, idle_seconds=0.0)
    for begin, pcm in chunks(0, 0.0, 0.3):
        audio.add(AudioChunk("rq", None, begin, pcm, None, None))
    assert audio.buffered_bytes == 9600
    audio.flush_due()
    audio.close()
    assert keys(svc, "rq", None) == [audio_key("rq", None, 0)] and audio.buffered_bytes == 0


def test_the_timeline_fills_gaps_with_silence_and_keeps_the_first_of_an_overlap():
    one, two = b"\1\0" * 10, b"\2\0" * 10
    timeline = PcmTimeline([(5, one), (10, two), (30, two)])  # 10..15 overlaps: the first object's
    pcm, silent = timeline.read(0, 40)
    samples = np.frombuffer(pcm, "<i2").tolist()
    assert samples == [0] * 5 + [1] * 10 + [2] * 5 + [0] * 10 + [2] * 10 and silent == 15
    assert timeline.read(40, 42) == (b"\0" * 4, 2)


@dataclass
class Track:
    codec: str
    sample_rate: int
    channels: int
    start_s: float
    duration_s: float


def decoded_audio(path) -> tuple[np.ndarray, Track, Track]:
    """The decoded audio samples and both tracks' facts (read while the file is open)."""
    with av.open(str(path)) as container:
        a, v = container.streams.audio[0], container.streams.video[0]
        tracks = [Track(s.codec_context.name, getattr(s, "sample_rate", 0), getattr(s, "channels", 0),
                        float(s.start_time * s.time_base), float(s.duration * s.time_base)) for s in (a, v)]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(a)])
    return samples, tracks[0], tracks[1]


def first_loud(samples: np.ndarray, after: int = 0, level: float = 0.05) -> int:
    return after + int(np.argmax(np.abs(samples[after:]) > level))


def test_the_mp4_carries_the_participants_audio_aligned_with_a_gap_and_a_late_join(svc, tmp_path):
    """A participant who joins late (first frame at 10 s) and speaks from 10.4 s to 12 s, then
    from 14 s to 15 s: the webcam MP4's sound starts with the first frame, is silent until
    the first word and in the gap, and ends with the last frame's display."""
    for begin, pcm in chunks(3, 10.4, 1.6) + chunks(3, 14.0, 1.0):
        svc.ingestor.handle(audio_message(pcm, recording_id="rv", relative=begin / SAMPLE_RATE, participant_id=9))
    frames = [(10_000 + 500 * k, make_png(64, 48, seed=k)) for k in range(12)]  # 10.0 .. 15.5 s
    timeline = audio_for(svc.s3, svc.settings.bucket, "rv", "9", "webcam")
    writer = VideoWriter(tmp_path / "w.mp4", audio=timeline)
    for ms, png in frames:
        writer.add(ms, png)
    stats = writer.close()
    samples, a, v = decoded_audio(tmp_path / "w.mp4")
    assert (a.codec, a.sample_rate, a.channels) == ("aac", SAMPLE_RATE, 1)
    assert v.duration_s == pytest.approx(6.0)  # 11 intervals of 0.5 s and the last frame's 0.5 s
    assert abs(a.duration_s - v.duration_s) <= AAC_FRAME / SAMPLE_RATE
    assert abs(a.start_s - v.start_s) <= AAC_FRAME / SAMPLE_RATE
    assert (stats.audio_samples, stats.audio_silent_samples) == (96_000, 96_000 - 2.6 * SAMPLE_RATE)
    # the first word 0.4 s into the file, the second run 4 s in, within one audio frame
    assert abs(first_loud(samples) - 0.4 * SAMPLE_RATE) <= AAC_FRAME
    assert np.abs(samples[int(2.2 * SAMPLE_RATE):int(3.8 * SAMPLE_RATE)]).max() < 0.01  # the gap: silence
    assert abs(first_loud(samples, int(3 * SAMPLE_RATE)) - 4.0 * SAMPLE_RATE) <= AAC_FRAME
    # the sound is this participant's voice: its pitch (180 + 70 x 3 Hz) dominates
    spoken = samples[int(0.5 * SAMPLE_RATE):int(1.5 * SAMPLE_RATE)]
    peak_hz = np.argmax(np.abs(np.fft.rfft(spoken))) * SAMPLE_RATE / len(spoken)
    assert abs(peak_hz - 390) < 5


def test_a_screenshare_gets_the_mix_and_no_audio_means_video_only(svc, tmp_path):
    for begin, pcm in chunks(0, 0.0, 2.0):
        svc.ingestor.handle(audio_message(pcm, recording_id="rm", relative=begin / SAMPLE_RATE))
    assert audio_for(svc.s3, svc.settings.bucket, "rm", "5", "webcam") is None
    timeline = audio_for(svc.s3, svc.settings.bucket, "rm", "5", "screenshare")
    writer = VideoWriter(tmp_path / "s.mp4", audio=timeline)
    for k in range(4):
        writer.add(500 * k, make_png(64, 48, seed=k))
    writer.close()
    samples, a, _ = decoded_audio(tmp_path / "s.mp4")
    assert a.sample_rate == SAMPLE_RATE and first_loud(samples) < AAC_FRAME
    writer = VideoWriter(tmp_path / "v.mp4")
    writer.add(0, make_png(64, 48, seed=1))
    writer.close()
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1


def test_stored_objects_play_as_wav(svc):
    pcm = voice(0, 0, 800)
    svc.ingestor.handle(audio_message(pcm, recording_id="rw", relative=0.25, participant_id=2))
    data = svc.s3.get_object(Bucket=svc.settings.bucket, Key=audio_key("rw", "2", 250))
    assert data["ContentType"] == "audio/wav"
    with wave.open(io.BytesIO(data["Body"].read())) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (SAMPLE_RATE, 1, 2, 800)


def test_the_cost_model_prices_the_objects_the_receiver_writes(svc):
    """bench/cost.py's audio line: its object size and PUTs per hour are those of the objects
    BufferedAudio really writes (an hour of audio in 0.1 s chunks)."""
    from bench.cost import audio_per_participant_hour

    model = audio_per_participant_hour(repeats=1)
    audio = BufferedAudio(svc.s3, svc.settings.bucket, idle_seconds=3600)
    for begin, pcm in chunks(0, 0.0, 10.0):
        audio.add(AudioChunk("rc", "1", begin, pcm, None, None))
    audio.close()
    sizes = [svc.s3.head_object(Bucket=svc.settings.bucket, Key=k)["ContentLength"] for k in keys(svc, "rc", "1")]
    assert sizes == [model["object_bytes"]] * 2  # 10 s: two objects
    assert model["container"]["puts"] == 3600 / 10 * len(sizes)
    assert model["apigw"]["puts"] == 3600 / 0.1


def test_a_stop_does_not_wait_past_its_bound_for_audio_s3_refuses(svc, caplog_json):
    """The receiver's stop writes what is buffered; an object whose write hangs (S3 away) is
    reported as left, and close returns."""
    import threading

    gate = threading.Event()

    class Hanging:
        def put_object(self, **kwargs):
            gate.wait(30)
            raise RuntimeError("S3 away")

    audio = BufferedAudio(Hanging(), svc.settings.bucket, idle_seconds=3600)
    audio.add(AudioChunk("rs", "1", 0, b"\0\0" * 160, None, None))
    caplog_json()
    audio.close(timeout=0.2)
    gate.set()
    flush_metrics()
    lines = caplog_json()
    assert any(line.get("message") == "audio not stored at shutdown" and line.get("objects") == 1 for line in lines)
