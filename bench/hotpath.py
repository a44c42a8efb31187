"""Hot-path CPU per frame: the ingest core with storage replaced by a no-op, against the floor.

Subject: ``Ingestor.handle(message)`` (orjson parse, bounded fields, pybase64 decode, PNG
header checks, metrics calls) with a store that does everything FrameStore does before the
network: the S3 metadata, the index item and its DynamoDB serialization, the participant
totals' accumulation. Floor: the standard library's ``json.loads`` plus ``base64.b64decode``
of the same message, the least a plain Python receiver does. Batches of the subject and the
floor alternate so machine noise hits both; the min of each is compared.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from concurrent.futures import Future

import orjson
import pybase64

from framesink.synthetic import SCREENSHARE_SIZE, WEBCAM_SIZE, frame_message, make_png
from framesink_core.ingest.events import parse_message
from framesink_core.ingest.ingestor import Ingestor
from framesink_core.ingest.png import inspect_png
from framesink_core.ingest.storage import StoreResult, crc32_base64, resolved
from framesink_core.ingest.stored_frame import StoredFrame
from framesink_core.ingest.totals import ParticipantTotals
from framesink_core.shared.items import to_item
from framesink_core.shared.observability import metrics

from . import Row, summarize

TARGET = 1.1
MAX_FRAME_BYTES = 4 * 1024 * 1024
POOL = 4  # distinct frames per size, as a camera's consecutive frames differ


class NoopStore:
    """FrameStore minus the network: builds exactly what begin_put would send, and adds the
    frame to participant totals that are never flushed (a flush is a network call)."""

    def __init__(self):
        self.items = 0
        self.totals = ParticipantTotals("bench", None, interval=1e9)

    def begin_put(self, frame, *, bot_id=None, connection_id=None) -> Future:
        record = StoredFrame.from_frame(frame, bot_id=bot_id or frame.bot_id, connection_id=connection_id,
                                        stored_at=int(time.time() * 1000))
        record.metadata()
        crc32_base64(frame.png)  # the checksum put_object sends
        to_item(record.index_item())
        self.totals.add(record, None)
        self.items += 1
        return resolved(lambda: StoreResult(record.key, duplicate=False))


def messages(size: tuple[int, int]) -> tuple[list[str], list[bytes]]:
    pngs = [make_png(*size, seed=100 + k, detailed=True) for k in range(POOL)]
    msgs = [
        frame_message(png, recording_id="rec-bench", participant_id=100, relative=k * 0.5, bot_id="bot-bench")
        for k, png in enumerate(pngs)
    ]
    return msgs, pngs


def floor(message: str) -> None:
    base64.b64decode(json.loads(message)["data"]["data"]["buffer"])


def _time_batch(fn, batch) -> int:
    start = time.perf_counter_ns()
    for item in batch:
        fn(item)
    return time.perf_counter_ns() - start


def interleaved(subject, baseline, batch, repeats: int) -> tuple[list[int], list[int]]:
    """Alternate subject and baseline batches (ns per batch), starting with each in turn."""
    subj, base = [], []
    for r in range(repeats):
        pair = [(subject, subj), (baseline, base)]
        for fn, out in pair if r % 2 == 0 else reversed(pair):
            out.append(_time_batch(fn, batch))
            metrics.clear_metrics()  # as the Lambda's per-invocation flush would
    return subj, base


def breakdown(msgs: list[str], repeats: int) -> dict[str, float]:
    """Microseconds per frame of each step, to say what dominates (min over repeats)."""
    decoded = [json.loads(m) for m in msgs]
    buffers = [d["data"]["data"]["buffer"] for d in decoded]
    pngs = [base64.b64decode(b) for b in buffers]
    frames = [parse_message(m, MAX_FRAME_BYTES) for m in msgs]
    steps = {
        "json.loads": (json.loads, msgs),
        "orjson.loads": (orjson.loads, msgs),
        "base64.b64decode(validate=True)": (lambda b: base64.b64decode(b, validate=True), buffers),
        "pybase64.b64decode(validate=True)": (lambda b: pybase64.b64decode(b, validate=True), buffers),
        "inspect_png (chunk walk + CRCs)": (inspect_png, pngs),
        "  of which zlib.crc32 over the file": (zlib.crc32, pngs),
        "items (S3 metadata, checksum, index item)": (NoopStore().begin_put, frames),
    }
    return {
        name: min(_time_batch(fn, batch) for _ in range(repeats)) / len(batch) / 1000
        for name, (fn, batch) in steps.items()
    }


def run(quick: bool = False) -> tuple[list[Row], dict]:
    repeats = 15 if quick else 41
    rows, details = [], {}
    for label, size in (("480x360", WEBCAM_SIZE), ("1280x720", SCREENSHARE_SIZE)):
        msgs, pngs = messages(size)
        store = NoopStore()
        ingestor = Ingestor(store, MAX_FRAME_BYTES)
        for m in msgs:  # warm up, and prove the subject really stores each frame
            assert ingestor.handle(m, connection_id="conn-bench").status == "stored"
            metrics.clear_metrics()

        def subject(m, _ingestor=ingestor):
            _ingestor.handle(m, connection_id="conn-bench")

        subj, base = interleaved(subject, floor, msgs, repeats)
        per = len(msgs) * 1000  # ns per batch -> us per frame
        subj_us, base_us = min(subj) / per, min(base) / per
        steps = breakdown(msgs, max(5, repeats // 3))
        avg_png = sum(map(len, pngs)) // len(pngs)
        rows.append(Row(
            "hotpath", f"CPU per frame, {label} (~{avg_png // 1024} KB PNG)", subj_us, "us",
            baseline=base_us, baseline_name="json.loads + b64decode", target=TARGET,
            note="min of interleaved batches",
        ))
        details[label] = {
            "png_bytes": [len(p) for p in pngs],
            "message_bytes": [len(m) for m in msgs],
            "subject_us": summarize([s / per for s in subj]),
            "floor_us": summarize([b / per for b in base]),
            "ratio_of_medians": summarize([s / per for s in subj])["median"]
            / summarize([b / per for b in base])["median"],
            "breakdown_us": steps,
        }
    return rows, details


if __name__ == "__main__":
    result_rows, result_details = run(quick=True)
    for row in result_rows:
        print(f"{row.name}: {row.value:.0f} us vs {row.baseline:.0f} us = {row.ratio:.2f}x")
    print(json.dumps(result_details, indent=2))
