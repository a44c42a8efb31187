"""A frame in: parse and bound the message (events, png), store it exactly once (storage:
S3 first, then the index item; index_batch, native_objects), keep what the store refused on
disk until it answers (spool), count participants (totals), refuse deleted recordings
(tombstones). ``ingestor.Ingestor`` is the one entry point every ingress calls."""
