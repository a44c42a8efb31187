"""The end-of-meeting export: an MP4 per participant and type, and a contact sheet beside it,
under ``exports/<recording_id>/<participant_id>/`` (outside ``recordings/``, which reindex reads).

Started by Recall's ``bot.done`` webhook (or ``bot.call_ended`` after a quiet period:
meetings.py), through a queue. One job per recording (its ``JOB#export`` item, created once:
a redelivered webhook finds it and queues nothing), fanned out into one message per stream
(participant x type), each encoded by its own invocation: measured on one core, an hour of a
480x360 webcam is ~1.5 min of CPU and an hour of 1280x720 screenshare ~7 min (docs/performance.md
"Exports"), so a stream fits a Lambda's 15 minutes where a whole meeting might not. The last
stream to finish marks the job done; a failing stream is retried by the queue, then parked
in its dead-letter queue, which alarms.

Before fanning out, the job recomputes the recording's participant totals exactly from the
index (reindex.retotal_recording): the totals that lagged during the meeting are exact once
it is over.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from botocore.exceptions import ClientError

from framesink_core.ingest.audio import SAMPLE_RATE
from framesink_core.ingest.tombstones import is_deleted
from framesink_core.read.audio_track import PcmTimeline, audio_keys, stored_segments
from framesink_core.read.contact_sheet import MAX_FRAMES, SheetEntry, make_contact_sheet, sample_evenly
from framesink_core.read.notes import write_notes
from framesink_core.read.query import FrameIndex
from framesink_core.read.video import DEFAULT_GAP_MS, VideoStats, VideoWriter
from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.objects import error_code
from framesink_core.shared.settings import STALE_RUNNING_SECONDS

PREFETCH = 8  # frames downloaded ahead of the encoder: bounds memory, hides S3 latency
# The export starts once the newest frame is this old: every index item written (the receiver
# batches them for 50 ms), so the totals' recount is final (totals.py, counted_through).
SETTLE_SECONDS = 5
RESTARTABLE = ("queued", "pending", "failed")


@dataclass
class StreamExport:
    recording_id: str
    participant_id: str
    frame_type: str
    s3_key: str
    frames: int
    duration_ms: int
    bytes: int
    width: int
    height: int
    contact_sheet_key: str
    skipped: int
    filled: int
    audio_ms: int = 0  # the audio track's length (0: video only)
    audio_silent_ms: int = 0  # of it, where no audio was stored
    # Recall's realtime endpoint failed (realtime_endpoint.failed): the stream ends early,
    # whatever came after this time never reached framesink.
    endpoint_failed_at: str | None = None

    def item(self, expires_at: int | None) -> dict:
        return {"pk": schema.recording_pk(self.recording_id), "sk": schema.export_sk(self.participant_id, self.frame_type),
                "kind": "export", "recording_id": self.recording_id, "participant_id": self.participant_id,
                "type": self.frame_type, "s3_key": self.s3_key, "frames": self.frames, "duration_ms": self.duration_ms,
                "bytes": self.bytes, "width": self.width, "height": self.height,
                "contact_sheet_key": self.contact_sheet_key, "skipped": self.skipped, "filled": self.filled,
                "audio_ms": self.audio_ms, "audio_silent_ms": self.audio_silent_ms,
                **({"endpoint_failed_at": self.endpoint_failed_at} if self.endpoint_failed_at else {}),
                "created_at": int(time.time() * 1000), schema.TTL_ATTRIBUTE: expires_at}


def video_key(recording_id: str, participant_id: str, frame_type: str) -> str:
    return schema.export_key(recording_id, participant_id, f"{frame_type}.mp4")


def sheet_key(recording_id: str, participant_id: str, frame_type: str) -> str:
    return schema.export_key(recording_id, participant_id, f"{frame_type}-contact-sheet.png")


def prefetched(fetch: Callable[[dict], bytes], frames: list[dict], ahead: int = PREFETCH) -> Iterator[tuple[dict, bytes | None]]:
    """(frame, bytes) in order, downloaded up to ``ahead`` frames in advance by a thread pool
    (memory: at most ``ahead`` frames); bytes None if the download failed (then skipped, as
    a frame that cannot be decoded is)."""
    def safe(frame):
        try:
            return fetch(frame)
        except Exception:  # noqa: BLE001 - one unreadable frame must not stop a meeting's export
            return None

    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending: deque = deque()
        upcoming = iter(frames)
        for frame in islice(upcoming, ahead):
            pending.append((frame, pool.submit(safe, frame)))
        while pending:
            frame, future = pending.popleft()
            following = next(upcoming, None)
            if following is not None:
                pending.append((following, pool.submit(safe, following)))
            yield frame, future.result()


def audio_for(s3, bucket: str, recording_id: str, participant_id: str, frame_type: str,
              ahead: int = PREFETCH) -> PcmTimeline | None:
    """The audio an MP4 of this stream carries: the participant's own for a webcam, the
    meeting's mix for a screenshare (Recall's separate audio has no screenshare audio); None
    when none was stored (the MP4 is then video only)."""
    owner = participant_id if frame_type == "webcam" else None
    keys = audio_keys(s3, bucket, recording_id, owner)
    if not keys:
        return None
    return PcmTimeline(stored_segments(s3, bucket, keys, lambda fetch, items: prefetched(fetch, items, ahead)))


def encode_stream(frames: list[dict], fetch: Callable[[dict], bytes], path: Path, *, gap_fill: str | None = None,
                  gap_threshold_ms: int = DEFAULT_GAP_MS, ahead: int = PREFETCH, progress: Callable[[int], None] | None = None,
                  audio: PcmTimeline | None = None) -> tuple[VideoStats | None, list[SheetEntry]]:
    """One stream's frames (index records, in time order) into an MP4 at ``path``, fetched
    ``ahead`` at a time, with ``audio`` (audio_for) as its sound; also the contact sheet's
    evenly sampled frames. (None, []) if no frame decodes. Shared by the export job and
    ``framesink export --video``."""
    sampled = {id(f) for f in sample_evenly(frames, MAX_FRAMES)}
    entries: list[SheetEntry] = []
    span = frames[-1]["relative_ms"] - frames[0]["relative_ms"] if frames else 0
    writer = VideoWriter(path, gap_fill=gap_fill, gap_threshold_ms=gap_threshold_ms, span_ms=span, audio=audio)
    for frame, data in prefetched(fetch, frames, ahead):
        if data is not None and writer.add(frame["relative_ms"], data) and id(frame) in sampled:
            entries.append(SheetEntry(None, frame["relative_ms"], frame["type"], data))
        elif data is None:
            writer.skip()
        if progress:
            progress(1)
    stats = writer.close()
    return stats, (entries if stats else [])


def export_stream(s3, bucket: str, index: FrameIndex, recording_id: str, participant_id: str, frame_type: str,
                  *, gap_fill: str | None = None, workdir: Path | None = None,
                  progress: Callable[[int], None] | None = None) -> StreamExport | None:
    """Encode one stream from S3 and put its MP4 and contact sheet under exports/. None if
    the stream has no frame that decodes."""
    frames = list(index.iter_frames(recording_id, participant_id=participant_id, frame_type=frame_type))
    if not frames:
        return None
    with tempfile.TemporaryDirectory(dir=workdir, prefix="framesink-export-") as tmp:
        video_path = Path(tmp) / f"{frame_type}.mp4"
        fetch = lambda f: s3.get_object(Bucket=bucket, Key=f["s3_key"])["Body"].read()  # noqa: E731
        stats, entries = encode_stream(frames, fetch, video_path, gap_fill=gap_fill, progress=progress,
                                       audio=audio_for(s3, bucket, recording_id, participant_id, frame_type))
        if stats is None:
            return None
        sheet_path = Path(tmp) / "contact-sheet.png"
        make_contact_sheet(entries, sheet_path, title=f"participant {participant_id} {frame_type} - {recording_id}")
        key, sheet = video_key(recording_id, participant_id, frame_type), sheet_key(recording_id, participant_id, frame_type)
        s3.upload_file(str(video_path), bucket, key, ExtraArgs={"ContentType": "video/mp4"})
        s3.upload_file(str(sheet_path), bucket, sheet, ExtraArgs={"ContentType": "image/png"})
        size = os.path.getsize(video_path)
    return StreamExport(recording_id, participant_id, frame_type, key, stats.frames, stats.duration_ms, size,
                        stats.width, stats.height, sheet, stats.skipped, stats.filled,
                        stats.audio_samples * 1000 // SAMPLE_RATE, stats.audio_silent_samples * 1000 // SAMPLE_RATE)


def restartable(job: dict, now: float) -> bool:
    """Not started yet, failed, or stranded "running" (STALE_RUNNING_SECONDS after its start)."""
    status = job.get("job_status")
    if status in RESTARTABLE:
        return True
    return status == "running" and int(job.get("started_at") or 0) < (now - STALE_RUNNING_SECONDS) * 1000


class ExportJobs:
    """Runs export messages: ``{"kind": "recording", "recording_id", "trigger"}`` plans a job
    and sends one ``{"kind": "stream", ...}`` per stream; ``send(message, delay_seconds)``
    puts a message on the export queue."""

    def __init__(self, s3, bucket: str, store, send: Callable[[dict, int], None], *, quiet_seconds: int = 600,
                 gap_fill: str | None = None):
        from framesink_core.read.reindex import retotal_recording

        self._retotal = retotal_recording
        self.s3, self.bucket, self.store = s3, bucket, store
        self.table, self.dynamodb = store.table, store.dynamodb
        self.index = FrameIndex(store.table, store.dynamodb)
        self.send = send
        self.quiet_seconds = quiet_seconds
        self.gap_fill = gap_fill
        self._notes_written: dict[str, list[str]] = {}  # recording -> the notes' keys, for _undo

    def handle(self, message: dict) -> str:
        if message.get("kind") == "stream":
            return self.stream(message)
        return self.plan(message["recording_id"])

    def _job_key(self, recording_id: str) -> dict:
        return to_item({"pk": schema.recording_pk(recording_id), "sk": schema.EXPORT_JOB_SK})

    def job(self, recording_id: str) -> dict | None:
        item = self.dynamodb.get_item(TableName=self.table, Key=self._job_key(recording_id), ConsistentRead=True).get("Item")
        return from_item(item) if item else None

    def plan(self, recording_id: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if is_deleted(self.dynamodb, self.table, recording_id):
            return f"skipped: recording {recording_id} deleted"
        job = self.job(recording_id)
        if job is None or not restartable(job, now):
            return f"skipped: job {job.get('job_status') if job else 'missing'}"
        # bot.call_ended: wait until frames have stopped for the quiet period. Always: wait
        # until the last frame is SETTLE_SECONDS old, so every frame's index item is written
        # before the totals are recounted (a recount is final for the frames stored before it).
        quiet = self.quiet_seconds if job.get("job_status") == "pending" else SETTLE_SECONDS
        latest = max((p.get("last_seen") or 0 for p in self._participants(recording_id)), default=0) / 1000
        if now - latest < quiet:
            self.send({"kind": "recording", "recording_id": recording_id, "trigger": "quiet check"},
                      min(900, int(quiet - (now - latest)) + 1))
            return "waiting: frames still arriving"
        started = int(now * 1000)
        try:  # the one transition that starts it: a redelivery or a second trigger skips
            self.dynamodb.update_item(
                TableName=self.table, Key=self._job_key(recording_id),
                UpdateExpression="SET job_status = :running, started_at = :now REMOVE streams_done ADD attempts :one",
                ConditionExpression="job_status IN (:queued, :pending, :failed) "
                                    "OR (job_status = :running AND started_at < :stale)",
                ExpressionAttributeValues=to_item({":running": "running", ":now": started, ":one": 1,
                                                   ":queued": "queued", ":pending": "pending", ":failed": "failed",
                                                   ":stale": started - STALE_RUNNING_SECONDS * 1000}))
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return "skipped: started elsewhere"
            raise
        try:
            return self._start(recording_id, now)
        except Exception as exc:
            # Anything failing between "running" and the last stream message (a throttled
            # recount, a failed send) would strand the job: mark this attempt failed, so the
            # redelivered message starts it again; after the queue's retries it lands in the
            # dead-letter queue, which alarms.
            self._fail(recording_id, started, exc)
            raise

    def _fail(self, recording_id: str, started: int, exc: Exception) -> None:
        try:
            self.dynamodb.update_item(
                TableName=self.table, Key=self._job_key(recording_id),
                UpdateExpression="SET job_status = :failed, failure = :why",
                ConditionExpression="job_status = :running AND started_at = :started",
                ExpressionAttributeValues=to_item({":failed": "failed", ":running": "running", ":started": started,
                                                   ":why": f"{type(exc).__name__}: {exc}"[:300]}))
        except ClientError:
            pass  # another attempt took over, or DynamoDB is down: the job goes stale, then restartable

    def _start(self, recording_id: str, now: float) -> str:
        self._retotal(self.store, recording_id)
        streams = [(p["participant_id"], t) for p in self.index.participants(recording_id) for t in (p.get("types") or [])]
        self.dynamodb.update_item(
            TableName=self.table, Key=self._job_key(recording_id),
            UpdateExpression="SET streams_total = :n" + (", job_status = :done, finished_at = :now" if not streams else ""),
            ExpressionAttributeValues=to_item({":n": len(streams), **({":done": "done", ":now": int(now * 1000)}
                                                                       if not streams else {})}))
        for participant_id, frame_type in streams:
            self.send({"kind": "stream", "recording_id": recording_id, "participant_id": participant_id,
                       "type": frame_type}, 0)
        return f"planned {len(streams)} streams"

    def _participants(self, recording_id: str) -> list[dict]:
        """Participants with when their newest frame was stored (the quiet-period check)."""
        out = []
        for p in self.index.participants(recording_id):
            latest = self.index.latest_frame(recording_id, p["participant_id"])
            out.append({**p, "last_seen": (latest or {}).get("stored_at")})
        return out

    def stream(self, message: dict) -> str:
        recording_id, participant_id, frame_type = message["recording_id"], message["participant_id"], message["type"]
        if is_deleted(self.dynamodb, self.table, recording_id):
            return f"skipped: recording {recording_id} deleted"
        failure = outcome = None
        try:
            outcome = self._stream(recording_id, participant_id, frame_type)
        except Exception as exc:  # its frames may have gone with a delete: decided below
            failure = exc
        # Written first, checked after (delete.py): a delete that ran meanwhile wins.
        if is_deleted(self.dynamodb, self.table, recording_id):
            self._undo(recording_id, participant_id, frame_type)
            return f"removed {participant_id}/{frame_type}: recording {recording_id} deleted while it was exported"
        if failure is not None:
            raise failure  # retried by the queue
        return outcome

    def _undo(self, recording_id: str, participant_id: str, frame_type: str) -> None:
        for key in (video_key(recording_id, participant_id, frame_type), sheet_key(recording_id, participant_id, frame_type),
                    *self._notes_written.pop(recording_id, ())):
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        pk = schema.recording_pk(recording_id)
        for sk in (schema.export_sk(participant_id, frame_type), schema.EXPORT_JOB_SK):
            self.dynamodb.delete_item(TableName=self.table, Key=to_item({"pk": pk, "sk": sk}))

    def _stream(self, recording_id: str, participant_id: str, frame_type: str) -> str:
        result = export_stream(self.s3, self.bucket, self.index, recording_id, participant_id, frame_type,
                               gap_fill=self.gap_fill)
        if result is not None:
            result.endpoint_failed_at = self.index.endpoint_failure(recording_id)
            latest = self.index.latest_frame(recording_id, participant_id, frame_type) or {}
            expires = schema.index_expires_at(latest.get("stored_at"), self.store.frame_expiry_days)
            self.dynamodb.put_item(TableName=self.table, Item=to_item(result.item(expires)))
        # A set: a redelivered stream message counts once.
        answer = self.dynamodb.update_item(
            TableName=self.table, Key=self._job_key(recording_id), UpdateExpression="ADD streams_done :s",
            ExpressionAttributeValues=to_item({":s": {f"{participant_id}#{frame_type}"}}), ReturnValues="ALL_NEW")
        job = from_item(answer["Attributes"])
        if len(job.get("streams_done", ())) >= int(job.get("streams_total", 0)):
            # The last stream: the slide notes beside the MP4s (read/notes.py), then done.
            # A delete that ran meanwhile removes them: they are under exports/<rec>/.
            self._notes_written[recording_id] = write_notes(self.s3, self.bucket, self.index, recording_id)
            self.dynamodb.update_item(
                TableName=self.table, Key=self._job_key(recording_id),
                UpdateExpression="SET job_status = :done, finished_at = :now",
                ExpressionAttributeValues=to_item({":done": "done", ":now": int(time.time() * 1000)}))
        return f"exported {participant_id}/{frame_type}" if result else f"nothing to export for {participant_id}/{frame_type}"
