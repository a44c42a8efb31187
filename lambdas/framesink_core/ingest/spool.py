"""A bounded spool on the receiver's disk for frames the store could not take.

Recall's websocket has no acknowledgement and no resend: a frame whose S3 or index write fails
after every retry (S3 or DynamoDB unreachable for longer than the retries last) is gone unless
the receiver keeps it. The receiver keeps it here, one file per frame, and stores it again, in
the order it arrived, once the store answers; first write wins as always (a frame that reached
S3 before the outage is a duplicate on the way out, its index item repaired).

While anything is spooled, new frames join the back of the spool instead of going to the store:
each stream stays in order, and an outage costs one probe per back-off step instead of every
frame's full retries. A frame that does not fit (``max_bytes``) is failed as before, counted
with reason ``spool_full``; the receiver then closes its connections, so the outage shows as
reconnects in Recall's logs rather than as silence.

Files survive a restart of the receiver on the same disk (``Spool`` picks up what a previous
process left, in order); a file is written to a temporary name, then renamed, so a crash never
leaves half a frame under a spool name. No fsync: a process crash leaves the page cache to the
kernel, and the host crash fsync would guard against takes a Fargate task's disk with it (and a
fsync per frame would make a shutdown's spooling of thousands of frames take minutes). The Lambda ingress has no spool: API
Gateway hands a message to one invocation and holds nothing, so a frame failed there is
counted (FrameStoreFailed) and lost.

Layout: ``<directory>/<sequence:012d>.frame`` = one JSON header line (the Frame's fields but the
PNG, the bot and connection ids, when and why it was spooled), then the PNG bytes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from framesink_core.ingest.events import Frame
from framesink_core.shared.observability import count, logger

SUFFIX = ".frame"
TMP_SUFFIX = ".tmp"
HEADER_LIMIT = 64 * 1024  # a header is ids and names (each bounded by the parser): never near this
DEFAULT_MAX_BYTES = 2 * 1024**3  # of the task's 20 GiB ephemeral disk; a setting (spoolMaxBytes)
# The reasons a frame is spooled instead of failed: the store's, after its retries.
SPOOLABLE = frozenset({"s3_write_failed", "index_write_failed"})


@dataclass(frozen=True)
class Spooled:
    """One frame read back from the spool."""

    path: Path
    frame: Frame
    bot_id: str | None
    connection_id: str | None
    spooled_at_ms: int
    size: int


class Spool:
    """Thread-safe: store threads put, one drainer takes (``oldest`` / ``remove``)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 1:
            raise ValueError("the spool's max_bytes must be at least 1")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*" + TMP_SUFFIX):  # a crash between write and rename
            leftover.unlink(missing_ok=True)
        files = sorted(self.directory.glob("*" + SUFFIX))
        self._files: dict[str, int] = {p.name: p.stat().st_size for p in files}  # name -> bytes, in order
        self._bytes = sum(self._files.values())
        self._attempts: dict[str, int] = {}
        # Names reserved by a put whose file is not renamed into place yet: the drainer stops at
        # the first one (reading it then would find no file and drop the frame as corrupt).
        self._writing: set[str] = set()
        self._next = int(files[-1].name.removesuffix(SUFFIX)) + 1 if files else 0
        # A put did not fit; cleared once one fits or the spool is below 90 % again.
        self.full = False
        if self._files:
            logger.warning("spool holds frames from an earlier run", extra={
                "reason": "spool_recovered", "frames": len(self._files), "bytes": self._bytes,
                "spool_dir": str(self.directory)})

    # --- state --------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        with self._lock:
            return len(self._files)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def active(self) -> bool:
        """Frames are waiting: new frames go to the back of the spool, not to the store."""
        with self._lock:
            return bool(self._files)

    # --- in -----------------------------------------------------------------------------------

    def put(self, frame: Frame, *, bot_id: str | None, connection_id: str | None, reason: str) -> bool:
        """Write the frame to the spool; False (nothing written) when it would not fit."""
        fields = asdict(frame)
        png = fields.pop("png")
        header = json.dumps({"frame": fields, "bot_id": bot_id, "connection_id": connection_id,
                             "spooled_at_ms": int(time.time() * 1000), "reason": reason},
                            separators=(",", ":")).encode() + b"\n"
        size = len(header) + len(png)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                self.full = True
                return False
            self.full = False
            name = f"{self._next:012d}{SUFFIX}"
            self._next += 1
            self._bytes += size  # reserved now, so parallel puts cannot overshoot together
            self._files[name] = size
            self._writing.add(name)
        try:
            tmp = self.directory / (name + TMP_SUFFIX)
            with open(tmp, "wb") as out:
                out.write(header)
                out.write(png)
            os.replace(tmp, self.directory / name)
        except OSError as exc:  # disk full or gone: the frame is not spooled
            with self._lock:
                self._writing.discard(name)
                self._files.pop(name, None)
                self._bytes -= size
            logger.error("frame not spooled", extra={"reason": "spool_write_failed", "detail": str(exc)})
            return False
        with self._lock:
            self._writing.discard(name)
        count("FrameSpooled")
        return True

    # --- out ----------------------------------------------------------------------------------

    def oldest(self, limit: int) -> list[Spooled]:
        """Up to ``limit`` of the oldest frames, in order, none past one still being written, no
        two with the same S3 key (a later one of a key waits for the next call, so the first
        spooled is the first written). A file that cannot be read is logged, counted, removed."""
        with self._lock:
            names = []
            for name in self._files:  # in spool order, up to the first still being written
                if name in self._writing or len(names) >= max(limit, 1) * 2:
                    break
                names.append(name)
        batch: list[Spooled] = []
        keys: set[str] = set()
        for name in names:
            if len(batch) >= limit:
                break
            path = self.directory / name
            try:
                item = _read(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.error("spooled frame unreadable, removed", extra={
                    "reason": "spool_corrupt", "detail": f"{type(exc).__name__}: {exc}", "file": name})
                count("SpoolCorrupt")
                self.remove(path)
                continue
            if item.frame.s3_key in keys:
                break
            keys.add(item.frame.s3_key)
            batch.append(item)
        return batch

    def attempted(self, path: Path) -> int:
        """Count one more failed attempt to store this file (in memory: a restart starts over)."""
        with self._lock:
            self._attempts[path.name] = self._attempts.get(path.name, 0) + 1
            return self._attempts[path.name]

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        with self._lock:
            self._attempts.pop(path.name, None)
            size = self._files.pop(path.name, 0)
            self._bytes -= size
            if self.full and self._bytes < self.max_bytes * 0.9:
                self.full = False


def _read(path: Path) -> Spooled:
    with open(path, "rb") as source:
        header = source.readline(HEADER_LIMIT)
        png = source.read()
    if not header.endswith(b"\n"):
        raise ValueError("no header line")
    meta = json.loads(header)
    frame = Frame(**meta["frame"], png=png)
    return Spooled(path, frame, meta.get("bot_id"), meta.get("connection_id"),
                   int(meta.get("spooled_at_ms") or 0), len(header) + len(png))
