"""Contact sheets: one PNG with a grid of timestamped thumbnails of a participant's frames.

Bounded whatever the meeting's length: at most ``max_frames`` thumbnails (sampled evenly
over time, first and last always included), so a 2-hour meeting (14,400 frames per stream)
gives the same size of sheet as a 2-minute one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from framesink_core.shared.timefmt import clock

THUMB = (192, 108)  # 16:9 cells; 4:3 webcam frames are letterboxed, not cropped
COLUMNS = 8
MAX_FRAMES = 64
LABEL_HEIGHT = 18
GAP = 4
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


@dataclass(frozen=True)
class SheetEntry:
    """A frame for the sheet: a file (``path``) or its bytes (``data``, the export job's)."""

    path: Path | None
    relative_ms: int
    frame_type: str
    data: bytes | None = None


@dataclass(frozen=True)
class Sheet:
    path: Path
    size: tuple[int, int]
    thumbnails: int
    of_frames: int
    skipped: tuple[tuple[Path, str], ...] = ()  # frames that could not be decoded, and why


# What a frame that passed ingest's header checks can still raise when its pixels are
# decoded: corrupt deflate data (OSError, zlib.error is an OSError subclass in Pillow's
# hands), a truncated stream (OSError), an image over Pillow's own bomb limit.
UNDECODABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_thumbnail(source: Path | bytes, size: tuple[int, int]) -> Image.Image:
    """A frame scaled to fit ``size``, or an UNDECODABLE error."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        img.load()
        # Fit inside the cell keeping the aspect ratio (ImageOps.contain).
        return ImageOps.contain(img.convert("RGB"), size)


def sample_evenly(items: Sequence, k: int) -> list:
    """``k`` items spread evenly over ``items`` (all of them if there are no more than k)."""
    n = len(items)
    if n <= k:
        return list(items)
    if k == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (k - 1))] for i in range(k)]


def sheet_size(thumbnails: int, columns: int = COLUMNS, thumb: tuple[int, int] = THUMB) -> tuple[int, int]:
    cols = max(1, min(columns, thumbnails))
    rows = max(1, math.ceil(thumbnails / cols))
    return (GAP + cols * (thumb[0] + GAP), GAP + rows * (thumb[1] + LABEL_HEIGHT + GAP))


def make_contact_sheet(
    entries: Sequence[SheetEntry],
    out: Path,
    *,
    title: str | None = None,
    max_frames: int = MAX_FRAMES,
    columns: int = COLUMNS,
    thumb: tuple[int, int] = THUMB,
) -> Sheet:
    """Write a contact sheet of ``entries`` (in the order given: time order) to ``out``.
    A frame that cannot be decoded is left out and listed in ``Sheet.skipped``; the sheet
    is written from the others (an empty cell marks where it would have been)."""
    chosen = sample_evenly(list(entries), max_frames)
    skipped: list[tuple[Path, str]] = []
    width, height = sheet_size(len(chosen), columns, thumb)
    title_height = LABEL_HEIGHT + GAP if title else 0
    sheet = Image.new("RGB", (width, height + title_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    if title:
        draw.text((GAP, GAP), title, fill=TEXT, font=font)
    cols = max(1, min(columns, len(chosen)))
    for i, entry in enumerate(chosen):
        row, col = divmod(i, cols)
        x = GAP + col * (thumb[0] + GAP)
        y = title_height + GAP + row * (thumb[1] + LABEL_HEIGHT + GAP)
        try:
            small = load_thumbnail(entry.data if entry.data is not None else entry.path, thumb)
        except UNDECODABLE as exc:
            skipped.append((entry.path or Path(clock(entry.relative_ms)), f"{type(exc).__name__}: {exc}"[:200]))
            small = None
        if small is not None:
            sheet.paste(small, (x + (thumb[0] - small.width) // 2, y + (thumb[1] - small.height) // 2))
        label = clock(entry.relative_ms) + (" screen" if entry.frame_type == "screenshare" else "")
        draw.text((x + 2, y + thumb[1] + 2), label, fill=TEXT, font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG", optimize=False)
    return Sheet(out, sheet.size, len(chosen) - len(skipped), len(entries), tuple(skipped))
