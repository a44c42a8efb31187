"""A stream's stored audio as one timeline, for the MP4s (video.py): its objects (audio.py)
read in key order, silence where nothing was stored, and for an instant two objects both
cover (a redelivery, two receivers) the first object's samples.

Reads are sequential: ``read(start, end)`` with each ``start`` at or after the previous
``end``, so memory is a few objects however long the meeting.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from framesink_core.ingest.audio import SAMPLE_BYTES, audio_prefix, object_span, read_wav


class PcmTimeline:
    def __init__(self, segments: Iterable[tuple[int, bytes]]):
        """``segments``: (first sample, PCM) in order of first sample."""
        self._segments: Iterator[tuple[int, bytes]] = iter(segments)
        self._current: tuple[int, bytes] | None = None
        self._done = False

    def _segment_covering(self, pos: int) -> tuple[int, bytes] | None:
        """The first segment that ends after ``pos`` (it may start later); None past the last."""
        while True:
            if self._current is not None and self._current[0] + len(self._current[1]) // SAMPLE_BYTES > pos:
                return self._current
            if self._done:
                return None
            nxt = next(self._segments, None)
            if nxt is None:
                self._done, self._current = True, None
                return None
            self._current = nxt

    def read(self, start: int, end: int) -> tuple[bytes, int]:
        """PCM for samples [start, end) and how many of them are silence (nothing stored)."""
        out = bytearray()
        pos, silent = start, 0
        while pos < end:
            segment = self._segment_covering(pos)
            if segment is None or segment[0] >= end:
                gap = end - pos
            elif segment[0] > pos:
                gap = segment[0] - pos
            else:
                seg_start, pcm = segment
                take_to = min(end, seg_start + len(pcm) // SAMPLE_BYTES)
                out += pcm[(pos - seg_start) * SAMPLE_BYTES:(take_to - seg_start) * SAMPLE_BYTES]
                pos = take_to
                continue
            out += bytes(gap * SAMPLE_BYTES)
            silent += gap
            pos += gap
        return bytes(out), silent


def audio_keys(s3, bucket: str, recording_id: str, participant_id: str | None) -> list[str]:
    """A stream's audio objects in key (time) order: a participant's, or the mix (None)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=audio_prefix(recording_id, participant_id)):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".wav")]
    return sorted(keys)


def stored_segments(s3, bucket: str, keys: list[str], fetch_ahead) -> Iterator[tuple[int, bytes]]:
    """(first sample, PCM) of each object, fetched ahead by ``fetch_ahead`` (export.prefetched);
    an object that cannot be read or is not framesink's audio is left out (silence)."""
    def fetch(key: str):
        answer = s3.get_object(Bucket=bucket, Key=key)
        body = answer["Body"].read()
        start, _ = object_span(key, answer.get("Metadata") or {}, body)
        return start, read_wav(body)

    # In key order: keys sort by millisecond, and two objects that start within one ms overlap
    # by less than a ms, so the order between them does not matter.
    for _, got in fetch_ahead(fetch, keys):
        if got is not None:
            yield got
