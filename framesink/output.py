"""Printing for the query commands: aligned tables for people, JSON lines for programs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence

from framesink_core.shared.timefmt import clock  # noqa: F401  (the commands import it from here


def json_lines(records: Iterable[dict], stream=None) -> int:
    """One compact JSON object per line, flushed as it goes (pipes see frames at once)."""
    stream = stream or sys.stdout
    n = 0
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    stream.flush()
    return n


def table(rows: Sequence[Sequence], headers: Sequence[str], *, right: Iterable[str] = (), stream=None) -> None:
    """An aligned text table (numbers right-aligned). A dozen lines, so no table library:
    tabulate & co. would be one more dependency for the same output."""
    stream = stream or sys.stdout
    right = set(right)
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        parts = [v.rjust(w) if h in right else v.ljust(w) for v, w, h in zip(values, widths, headers)]
        return "  ".join(parts).rstrip()

    stream.write(line(headers) + "\n")
    for row in cells:
        stream.write(line(row) + "\n")
    stream.flush()


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value))


def printable(text: str) -> str:
    """Free text (a participant's name) safe for a terminal: one line, and no control or
    format character reaches it raw (an ANSI escape could rewrite the screen); each is shown
    as its \\x / \\u escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def quiet_broken_pipe() -> None:
    """`framesink frames | head`: stop quietly when the reader goes away."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
