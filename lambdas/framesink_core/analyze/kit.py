"""The analyzer kit: write one function, ``analyze(frame) -> dict | None``, and framesink runs it
on every stored frame (docs/analyzers.md).

- ``Frame``: what the frame event says (ids, name, times, size, novelty), ``.png()`` (one S3
  GetObject, fetched once) and ``.image()`` (a Pillow image, decoded once).
- ``Runner.run(ref)``: one frame through the function; a dict it returns is written beside the
  frame as a result item (``RESULT#<analyzer>#<relms10>#<pid>#<type>`` in the recording's
  partition, the frame's expiry), which ``framesink results`` and ``FrameIndex.results`` read.
  A frame deleted after its event, or one Pillow cannot decode, is skipped with its reason;
  anything else the function raises is a failure its caller retries (Lambda's retries, the
  queue's redrive), then the dead-letter path.
- ``Runner.handle_event(event)``: the same for one EventBridge frame event, with the one log
  line and metric per skipped frame: the Lambda handlers of the built-in analyzers (slides,
  novelty) and of deployed ones are this call.

The built-in analyzers take a second argument, the ``Context`` (clients, table, settings),
because they keep state of their own (slide changes, a stream's last novel frame); a user's
function may take it too. Where it runs (Lambda, a container reading a queue, the CLI's
workers) is analyze/worker.py's and the deploy's business, never the function's.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from framesink_core.ingest.tombstones import is_deleted
from framesink_core.read.feed import FrameRef
from framesink_core.shared import schema
from framesink_core.shared.items import to_item
from framesink_core.shared.objects import object_missing
from framesink_core.shared.observability import count, count_with_dimension, logger

# A result is one DynamoDB attribute beside its frame: small, so a recording's results read in
# few pages (an item may hold 400 KB; a result that needs more belongs in S3, its key here).
MAX_RESULT_BYTES = 16 * 1024
ANALYZER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
SPEC = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<function>[A-Za-z_]\w*)")


class UndecodableFrame(ValueError):
    """The frame's PNG does not decode (skipped, never retried: it will not decode next time)."""


class AnalyzerError(ValueError):
    """An analyzer that cannot be loaded or named: the message says what to change."""


@dataclass
class Frame:
    """One stored frame, as its event (or the index) describes it."""

    recording_id: str
    participant_id: str
    type: str  # "webcam" or "screenshare"
    relative_ms: int  # time in the meeting
    key: str  # its S3 object
    bucket: str
    participant_name: str | None = None
    absolute: str | None = None  # wall-clock time Recall gave (ISO 8601)
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    stored_at: int | None = None  # epoch ms, when it became durable
    bot_id: str | None = None
    novel: bool | None = None  # None until the novelty function scored it
    change_score: float | None = None
    detail: dict | None = field(default=None, repr=False, compare=False)  # the event's whole detail
    _s3: Any = field(default=None, repr=False, compare=False)
    _png: bytes | None = field(default=None, repr=False, compare=False)
    _image: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_ref(cls, ref: FrameRef, s3=None) -> "Frame":
        record = ref.frame_record()
        return cls(ref.recording_id, ref.participant_id, ref.frame_type, ref.relative_ms, ref.key, ref.bucket,
                   participant_name=record.get("participant_name"), absolute=record.get("absolute"),
                   width=_int(record.get("width")), height=_int(record.get("height")),
                   bytes=_int(record.get("bytes")), stored_at=_int(record.get("stored_at")),
                   bot_id=record.get("bot_id"), novel=record.get("novel") if isinstance(record.get("novel"), bool)
                   else None, change_score=_float(record.get("change_score")), detail=ref.record, _s3=s3)

    def ref(self) -> FrameRef:
        return FrameRef(self.bucket, self.key, self.recording_id, self.participant_id, self.type, self.relative_ms,
                        self.bytes, None, self.detail)

    @property
    def seconds(self) -> float:
        return self.relative_ms / 1000

    def png(self) -> bytes:
        """The PNG, read from S3 on first use (a frame deleted since raises ClientError NoSuchKey,
        which the runner reports as skipped)."""
        if self._png is None:
            self._png = self._s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        return self._png

    def image(self):
        """The frame as a Pillow image (RGB, or L for a grayscale PNG), decoded once."""
        if self._image is None:
            from PIL import Image

            try:
                with Image.open(io.BytesIO(self.png())) as img:
                    img.load()
                    self._image = img if img.mode in ("RGB", "L") else img.convert("RGB")
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise UndecodableFrame(str(exc)[:200]) from exc
        return self._image

    def record(self) -> dict:
        """The frame's public fields (as `framesink frames --json` gives them)."""
        return self.ref().frame_record()


@dataclass
class Context:
    """What an analyzer may use beyond its frame: the stack's clients and settings."""

    bucket: str
    table: str
    s3: Any
    dynamodb: Any
    frame_expiry_days: int = 30
    outlet: Any = None  # the frame bus publisher (novelty publishes "Frame Scored")
    settings: Any = None
    cache: dict = field(default_factory=dict, repr=False)  # an analyzer's state across frames

    @classmethod
    def of_service(cls, service) -> "Context":
        s = service.settings
        return cls(s.bucket, s.table, service.s3, service.dynamodb, s.frame_expiry_days, service.outlet, s)


@dataclass(frozen=True)
class Outcome:
    status: str  # "result" (a dict came back), "nothing" (None came back) or "skipped"
    result: dict | None = None
    reason: str | None = None  # why it was skipped: deleted, undecodable, result_invalid, not_a_frame
    detail: str | None = None
    ms: float = 0.0  # the function's wall time


def load(spec: str, search_path: str | Path | None = None) -> tuple[str, Callable]:
    """``"module:function"`` -> (analyzer name, the function). The name is the module's last
    part (``faces`` for ``analyzers.faces:analyze``), lower-cased: the results' sort-key prefix.
    ``search_path`` (a directory) is put first on sys.path, as the CLI does with the current one."""
    match = SPEC.fullmatch(spec or "")
    if not match:
        raise AnalyzerError(f"{spec!r} is not MODULE:FUNCTION (e.g. faces:analyze, for analyze() in faces.py)")
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    try:
        module = importlib.import_module(match["module"])
    except ImportError as exc:
        raise AnalyzerError(f"cannot import {match['module']}: {exc} (run from the directory that holds it, "
                            f"or install what it imports)") from None
    fn = getattr(module, match["function"], None)
    if not callable(fn):
        raise AnalyzerError(f"{match['module']} has no function {match['function']}")
    return analyzer_name(match["module"].rsplit(".", 1)[-1]), fn


def analyzer_name(name: str) -> str:
    name = (name or "").lower().replace(".", "-")
    if not ANALYZER_NAME.fullmatch(name):
        raise AnalyzerError(f"analyzer name {name!r}: 1-40 of a-z, 0-9, _ and -, starting with a letter")
    return name


def result_sk(analyzer: str, relative_ms: int, participant_id: str, frame_type: str) -> str:
    return f"RESULT#{analyzer}#{schema.relative_ms_text(relative_ms)}#{participant_id}#{frame_type}"


class Runner:
    """Runs one analyzer function on frames; thread-safe if the function is."""

    def __init__(self, name: str, fn: Callable, ctx: Context, *, store_results: bool = True,
                 metric_prefix: str = "Analyzer"):
        self.name = analyzer_name(name)
        self.fn, self.ctx = fn, ctx
        self.store_results = store_results
        self.metric_prefix = metric_prefix
        try:
            params = inspect.signature(fn).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
            self._wants_context = len(positional) >= 2
        except (TypeError, ValueError):
            self._wants_context = False

    def run(self, ref: FrameRef) -> Outcome:
        """The function on one frame, its result written beside it. Raises what S3, DynamoDB or
        the function raise, but for a frame that is gone or undecodable (skipped)."""
        frame = Frame.from_ref(ref, self.ctx.s3)
        started = time.perf_counter()
        try:
            result = self.fn(frame, self.ctx) if self._wants_context else self.fn(frame)
        except UndecodableFrame as exc:
            return Outcome("skipped", reason="undecodable", detail=str(exc))
        except ClientError as exc:
            if not object_missing(exc):
                raise
            return Outcome("skipped", reason="deleted", detail="the frame no longer exists")
        ms = (time.perf_counter() - started) * 1000
        if result is None:
            return Outcome("nothing", ms=ms)
        if not self.store_results:
            return Outcome("result", result=result, ms=ms)
        try:
            text = _result_text(result)
        except ValueError as exc:
            return Outcome("skipped", reason="result_invalid", detail=str(exc), ms=ms)
        if not self._write(frame, text):
            return Outcome("skipped", reason="deleted", detail="the recording was deleted", ms=ms)
        return Outcome("result", result=result, ms=ms)

    def _write(self, frame: Frame, text: str) -> bool:
        item = {"pk": schema.recording_pk(frame.recording_id),
                "sk": result_sk(self.name, frame.relative_ms, frame.participant_id, frame.type),
                "kind": "result", "analyzer": self.name, "recording_id": frame.recording_id,
                "participant_id": frame.participant_id, "type": frame.type, "relative_ms": frame.relative_ms,
                "s3_key": frame.key, "result": text, "analyzed_at": int(time.time() * 1000)}
        expires_at = schema.index_expires_at(frame.stored_at, self.ctx.frame_expiry_days)
        if expires_at is not None:  # it goes with its frame
            item[schema.TTL_ATTRIBUTE] = expires_at
        # Same key for a redelivered event: the write is idempotent (the latest run wins).
        self.ctx.dynamodb.put_item(TableName=self.ctx.table, Item=to_item(item))
        if is_deleted(self.ctx.dynamodb, self.ctx.table, frame.recording_id):  # written first, checked after
            self.ctx.dynamodb.delete_item(TableName=self.ctx.table, Key=to_item({"pk": item["pk"], "sk": item["sk"]}))
            return False
        return True

    def handle_event(self, event: dict, *, detail_types: tuple[str, ...] | None = None) -> Outcome:
        """One EventBridge frame event: run, and log/count what happened (one line per skip)."""
        ref = FrameRef.from_event(event)
        if (ref is None or ref.bucket != self.ctx.bucket
                or (detail_types is not None and event.get("detail-type") not in detail_types)):
            outcome = Outcome("skipped", reason="not_a_frame",
                              detail=f"detail-type {str(event.get('detail-type'))[:80]!r}"
                              if isinstance(event, dict) else "not an object")
        else:
            logger.append_keys(recording_id=ref.recording_id, participant_id=ref.participant_id,
                               relative_ms=ref.relative_ms, frame_type=ref.frame_type)
            outcome = self.run(ref)
        self.report(outcome)
        return outcome

    def report(self, outcome: Outcome) -> None:
        if outcome.status == "skipped":
            count_with_dimension(f"{self.metric_prefix}Skipped", "reason", outcome.reason or "unknown")
            logger.warning("frame not analyzed", extra={"analyzer": self.name, "reason": outcome.reason,
                                                        "detail": outcome.detail})
        elif outcome.status == "result" and self.store_results:
            count(f"{self.metric_prefix}Result")


def _result_text(result: Any) -> str:
    """The result as JSON, checked: a dict, plain JSON (no NaN), at most MAX_RESULT_BYTES."""
    if not isinstance(result, dict):
        raise ValueError(f"the analyzer returned a {type(result).__name__}, not a dict or None")
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the result is not plain JSON: {exc}") from None
    if len(text.encode()) > MAX_RESULT_BYTES:
        raise ValueError(f"the result is {len(text.encode())} bytes of JSON; at most {MAX_RESULT_BYTES} "
                         f"(put larger outputs in S3 and return their key)")
    return text


def _int(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
