"""A frame as the index records it (StoredFrame): one item-building path for ingest, reindex
and every reader, so an index rebuilt from S3 alone is the index ingest wrote."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote

from framesink_core.ingest.events import Frame
from framesink_core.shared import schema
from framesink_core.shared.settings import DEFAULT_FRAME_EXPIRY_DAYS


class MetadataError(ValueError):
    """An S3 object whose key or metadata cannot be turned back into an index item."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StoredFrame:
    """A frame as the index records it, without its pixels.

    Built from a parsed Frame at ingest (``from_frame``) or from an S3 object's key and
    metadata at reindex (``from_object``); both paths then write the same items with
    ``index_item``. Free text is already bounded by the parser (events.MAX_NAME_BYTES), so
    the quoted metadata fits S3's 2 KB and quoting is linear.
    """

    recording_id: str
    participant_id: str
    participant_name: str | None
    is_host: bool | None
    platform: str | None
    frame_type: str
    relative_ms: int
    absolute: str | None
    width: int
    height: int
    size: int
    bot_id: str | None = None
    connection_id: str | None = None
    stored_at: int | None = None  # epoch ms of the S3 write

    @property
    def key(self) -> str:
        return schema.frame_key(self.recording_id, self.participant_id, self.frame_type, self.relative_ms)

    @property
    def index_key(self) -> dict[str, str]:
        return schema.frame_item_key(self.recording_id, self.participant_id, self.frame_type, self.relative_ms)

    @classmethod
    def from_frame(cls, frame: Frame, *, bot_id: str | None, connection_id: str | None,
                   stored_at: int | None) -> "StoredFrame":
        return cls(
            recording_id=frame.recording_id, participant_id=frame.participant_id,
            participant_name=frame.participant_name, is_host=frame.is_host, platform=frame.platform,
            frame_type=frame.frame_type, relative_ms=frame.relative_ms, absolute=frame.absolute,
            width=frame.width, height=frame.height, size=len(frame.png),
            bot_id=bot_id, connection_id=connection_id, stored_at=stored_at,
        )

    @classmethod
    def from_object(cls, key: str, metadata: dict[str, str], size: int,
                    last_modified_ms: int | None = None) -> "StoredFrame":
        """Rebuild from an object's key, user metadata (HeadObject) and size.

        The key is the authority for ids, type and time; metadata that disagrees with it
        means the object was not written by framesink, and is refused.
        """
        match = schema.FRAME_KEY_PATTERN.fullmatch(key)
        if not match:
            raise MetadataError("not_a_frame_key", f"{key[:200]!r} is not a frame key")
        meta = {k.lower(): v for k, v in (metadata or {}).items()}
        for field, expected in (
            ("recording-id", match["recording_id"]),
            ("participant-id", match["participant_id"]),
            ("type", match["type"]),
            ("relative-ms", str(int(match["relative_ms"]))),
        ):
            if meta.get(field) != expected:
                raise MetadataError("metadata_mismatch", f"{key}: metadata {field} is not {expected!r}")
        try:
            width, height = int(meta["width"]), int(meta["height"])
            stored_at = int(meta["stored-at"]) if meta.get("stored-at") else last_modified_ms
        except (KeyError, ValueError):
            raise MetadataError("metadata_missing", f"{key}: width/height/stored-at missing or not integers") from None
        name = meta.get("participant-name")
        return cls(
            recording_id=match["recording_id"], participant_id=match["participant_id"],
            participant_name=unquote(name) if name is not None else None,
            is_host={"true": True, "false": False}.get(meta.get("is-host", "")),
            platform=unquote(meta["platform"]) if "platform" in meta else None,
            frame_type=match["type"], relative_ms=int(match["relative_ms"]),
            absolute=meta.get("absolute") or None, width=width, height=height, size=size,
            bot_id=meta.get("bot-id") or None, connection_id=meta.get("connection-id") or None,
            stored_at=stored_at,
        )

    @classmethod
    def from_index_item(cls, values: dict) -> "StoredFrame":
        """Back from a frame item (already ``from_item``-decoded): what retotal reads."""
        def num(name):
            value = values.get(name)
            return int(value) if value is not None else None

        return cls(
            recording_id=values["recording_id"], participant_id=values["participant_id"],
            participant_name=values.get("participant_name"), is_host=values.get("is_host"),
            platform=values.get("platform"), frame_type=values["type"], relative_ms=num("relative_ms"),
            absolute=values.get("absolute"), width=num("width"), height=num("height"), size=num("bytes"),
            bot_id=values.get("bot_id"), connection_id=values.get("connection_id"), stored_at=num("stored_at"),
        )

    def metadata(self) -> dict[str, str]:
        """User metadata: enough to rebuild the index item from the object alone (reindex).

        S3 metadata travels as HTTP headers, so free text (name, platform) is URL-quoted.
        An absent name, host flag or platform is an absent key, so None survives the trip.
        """
        meta = {
            "absolute": self.absolute or "",
            "bot-id": self.bot_id or "",
            "recording-id": self.recording_id,
            "participant-id": self.participant_id,
            "type": self.frame_type,
            "relative-ms": str(self.relative_ms),
            "width": str(self.width),
            "height": str(self.height),
        }
        if self.participant_name is not None:
            meta["participant-name"] = quote(self.participant_name, safe="")
        if self.is_host is not None:
            meta["is-host"] = "true" if self.is_host else "false"
        if self.platform is not None:
            meta["platform"] = quote(self.platform, safe="")
        if self.connection_id:
            meta["connection-id"] = self.connection_id
        if self.stored_at is not None:
            meta["stored-at"] = str(self.stored_at)
        return meta

    def expires_at(self, expiry_days: int) -> int | None:
        """TTL of this frame's index items: from its store time, which S3's lifecycle counts
        from too (the absolute capture time only when the store time is unknown)."""
        created_ms = self.stored_at
        if created_ms is None and self.absolute:
            try:
                created_ms = int(datetime.fromisoformat(self.absolute).timestamp() * 1000)
            except ValueError:
                pass
        return schema.index_expires_at(created_ms, expiry_days)

    def index_item(self, expiry_days: int = DEFAULT_FRAME_EXPIRY_DAYS) -> dict:
        """The frame's one item (its GSI copy comes with it). The S3 key is not stored: it is
        a function of the key attributes (query.frame_record derives it)."""
        return {
            **self.index_key,
            "gsi1pk": schema.participant_gsi_pk(self.recording_id, self.participant_id),
            "gsi1sk": schema.participant_gsi_sk(self.relative_ms, self.frame_type),
            "kind": "frame",
            "recording_id": self.recording_id,
            "participant_id": self.participant_id,
            "participant_name": self.participant_name,
            "is_host": self.is_host,
            "platform": self.platform,
            "type": self.frame_type,
            "relative_ms": self.relative_ms,
            "absolute": self.absolute,
            "bytes": self.size,
            "width": self.width,
            "height": self.height,
            "bot_id": self.bot_id,
            "connection_id": self.connection_id,
            "stored_at": self.stored_at,
            schema.TTL_ATTRIBUTE: self.expires_at(expiry_days),
        }
