"""Meeting times as people read them (tables, contact sheets, video reports)."""


def clock(ms: int | None) -> str:
    """Relative milliseconds as [h:]mm:ss.mmm."""
    if ms is None:
        return "-"
    seconds, millis = divmod(int(ms), 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{minutes:02d}:{seconds:02d}.{millis:03d}"
    return f"{hours}:{text}" if hours else text
