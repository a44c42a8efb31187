"""Frames out, after they are stored: the index's queries (query), the frame events a
consumer reads (feed), MP4 and contact-sheet export and its job (export, video,
contact_sheet), rebuilding the index from S3 (reindex), and the privacy delete (delete)."""
