"""Slide notes: each slide shown in a recording, when it was on screen, who spoke and what was
said while it was (`framesink notes`).

The slides are the slide analyzer's changes (``SLIDE#`` items, framesink_core/analyze/slides.py);
without the analyzer (it is optional in a deploy), the novelty function's novel screenshare
frames that are a stream's first or a change (not a heartbeat). A slide is on screen from its
change until the next change (of any presenter), the last one until the recording's last
screenshare frame. Words are the final transcript utterances whose middle falls in that span
(an utterance begun just before a slide change is mostly about the new slide); speakers
are the speaker timeline's segments that overlap it, with the time each spoke over the slide.
Three Queries and one more per 1,000 frames at most; nothing is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from framesink_core.read.query import FrameIndex
from framesink_core.shared.settings import DEFAULT_NOVELTY_THRESHOLD


@dataclass
class SlideNote:
    number: int
    participant_id: str
    start_ms: int
    end_ms: int | None
    s3_key: str
    repeat_of: int | None = None  # the number of the slide it shows again
    speakers: list[dict] = field(default_factory=list)  # {participant_id, participant_name, ms}
    said: list[dict] = field(default_factory=list)  # {participant_id, participant_name, start_ms, text}

    def as_dict(self) -> dict:
        return asdict(self)


def slide_changes(index: FrameIndex, recording_id: str) -> list[dict]:
    """{participant_id, relative_ms, s3_key, repeat_of_ms} per slide change, in time order."""
    found = index.slides(recording_id)
    if found:
        return [{k: s.get(k) for k in ("participant_id", "relative_ms", "s3_key", "repeat_of_ms")} for s in found]
    return [{"participant_id": f["participant_id"], "relative_ms": f["relative_ms"], "s3_key": f["s3_key"],
             "repeat_of_ms": None}
            for f in index.iter_frames(recording_id, frame_type="screenshare", novel=True)
            if f.get("change_score") is None or f["change_score"] > DEFAULT_NOVELTY_THRESHOLD]


def build_notes(index: FrameIndex, recording_id: str) -> list[SlideNote]:
    changes = slide_changes(index, recording_id)
    if not changes:
        return []
    last_shared = next(iter(index.iter_frames(recording_id, frame_type="screenshare", newest_first=True, limit=1)),
                       None)
    end_of_share = last_shared["relative_ms"] + 500 if last_shared else None  # a frame stands for its 0.5 s
    segments = index.speaker_timeline(recording_id)
    utterances = index.transcript(recording_id)
    numbers: dict[int, int] = {}
    notes = []
    for n, change in enumerate(changes):
        start = change["relative_ms"]
        end = changes[n + 1]["relative_ms"] if n + 1 < len(changes) else end_of_share
        numbers[start] = n + 1
        repeat = change.get("repeat_of_ms")
        note = SlideNote(n + 1, change["participant_id"], start, end, change["s3_key"],
                         numbers.get(repeat) if repeat is not None else None)
        spoke: dict[str, dict] = {}
        for s in segments:
            s_end = s["end_ms"] if s["end_ms"] is not None else (end if end is not None else s["start_ms"])
            overlap = min(s_end, end if end is not None else s_end) - max(s["start_ms"], start)
            if overlap > 0:
                entry = spoke.setdefault(s["participant_id"], {"participant_id": s["participant_id"],
                                                               "participant_name": s.get("participant_name"), "ms": 0})
                entry["ms"] += overlap
        note.speakers = sorted(spoke.values(), key=lambda e: -e["ms"])
        note.said = [{k: u.get(k) for k in ("participant_id", "participant_name", "start_ms", "text")}
                     for u in utterances if start <= _middle(u) and (end is None or _middle(u) < end)]
        notes.append(note)
    return notes


def _middle(utterance: dict) -> float:
    return (utterance["start_ms"] + (utterance.get("end_ms") or utterance["start_ms"])) / 2


def _clock(ms: int | None) -> str:
    if ms is None:
        return "the end"
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    return f"{sign}{ms // 60000}:{ms // 1000 % 60:02d}"


def markdown(recording_id: str, notes: list[SlideNote], image_names: dict[int, str],
             endpoint_failed_at: str | None = None) -> str:
    """The notes as Markdown, the slide images referenced by ``image_names`` (number -> file)."""
    lines = [f"# Slide notes: recording {recording_id}", ""]
    if endpoint_failed_at:
        lines += [f"> **Incomplete:** Recall's realtime endpoint failed at {_escape(endpoint_failed_at)} and Recall "
                  "stopped sending: slides, speech and words after that are missing.", ""]
    if not notes:
        lines.append("No slides were found in this recording's shared screens.")
    for note in notes:
        again = f" (slide {note.repeat_of} again)" if note.repeat_of else ""
        lines += [f"## Slide {note.number}{again}: {_clock(note.start_ms)} to {_clock(note.end_ms)}", ""]
        if note.number in image_names:
            lines += [f"![Slide {note.number}]({image_names[note.number]})", ""]
        if note.speakers:
            lines.append("Speakers: " + ", ".join(f"{_name(s)} ({s['ms'] / 1000:.0f} s)" for s in note.speakers))
            lines.append("")
        for said in note.said:
            lines.append(f"- **{_name(said)}** ({_clock(said['start_ms'])}): {_escape(said['text'])}")
        if not note.said:
            lines.append("_Nothing was said while it was on screen (or there is no transcript)._")
        lines.append("")
    return "\n".join(lines)


def _name(entry: dict) -> str:
    return _escape(entry.get("participant_name") or f"participant {entry['participant_id']}")


def _escape(text: str) -> str:
    """Meeting text is untrusted: no Markdown or HTML of its own reaches the page."""
    out = []
    for ch in text:
        if ch in "\\`*_{}[]()#+!|<>~":
            out.append("\\" + ch)
        elif ch in "\r\n\t":
            out.append(" ")
        elif ord(ch) < 32:
            continue
        else:
            out.append(ch)
    return "".join(out)


def render(s3, bucket: str, index: FrameIndex, recording_id: str) -> tuple[list[SlideNote], dict[str, tuple[bytes, str]]]:
    """The notes and their files: name -> (bytes, content type) for notes.md, notes.json and a
    slide-NN.png per slide whose frame is still stored (`framesink notes` writes them to a
    folder, the export job beside the MP4s)."""
    import json

    from framesink_core.shared.objects import object_missing

    notes = build_notes(index, recording_id)
    files: dict[str, tuple[bytes, str]] = {}
    images: dict[int, str] = {}
    for note in notes:
        name = f"slide-{note.number:02d}.png"
        try:
            files[name] = (s3.get_object(Bucket=bucket, Key=note.s3_key)["Body"].read(), "image/png")
        except Exception as exc:  # noqa: BLE001 - a frame gone (expiry, delete): the note stays, without its image
            if not object_missing(exc):
                raise
            continue
        images[note.number] = name
    failed_at = index.endpoint_failure(recording_id)
    files["notes.md"] = (markdown(recording_id, notes, images, failed_at).encode(), "text/markdown; charset=utf-8")
    files["notes.json"] = ((json.dumps({"recording_id": recording_id, "endpoint_failed_at": failed_at,
                                        "slides": [n.as_dict() for n in notes]}, indent=2) + "\n").encode(),
                           "application/json")
    return notes, files


def notes_prefix(recording_id: str) -> str:
    """Where the export job writes a recording's notes: beside its MP4s, under exports/."""
    from framesink_core.shared import schema

    return f"{schema.export_prefix(recording_id)}notes/"


def write_notes(s3, bucket: str, index: FrameIndex, recording_id: str) -> list[str]:
    """The notes' files under notes_prefix; the keys written. Nothing when the recording shows
    no slide."""
    notes, files = render(s3, bucket, index, recording_id)
    if not notes:
        return []
    prefix = notes_prefix(recording_id)
    for name, (body, kind) in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body, ContentType=kind)
    return [prefix + name for name in files]
