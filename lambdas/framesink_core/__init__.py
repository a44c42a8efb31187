"""framesink core: everything the ingresses, handlers and CLI share, in folders that follow a
frame, listed from the bottom up: each folder imports only from itself and the folders listed
before it, and access/ingest and read/meeting are peers that do not import each other.
import-linter checks it (pyproject.toml's contracts; tests/unit/test_import_structure.py):

    shared    schema, settings, DynamoDB items, the S3 write contract, logging and metrics
    access    who may send: bot tokens, signed headers, connection records, the handshake probe
    ingest    a frame in: parse, check, store exactly once, spool, totals, tombstones
    read      frames out: queries, feed events, export, reindex, delete
    meeting   Recall's bot: Create Bot, status webhooks, the export job's start
    analyze   analyzers on stored frames (slides)
    service   one of each, wired for a Lambda handler or the receiver
"""
