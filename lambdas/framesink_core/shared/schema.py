"""The one definition of framesink's DynamoDB table and S3 layout.

The CDK stack (infra/storage.py), the local emulator and the tests all build the table
from TABLE_SCHEMA, so keys and indexes cannot drift between the cloud and a laptop.

Single-table design (docs/storage.md). A recording's items share one partition, so
one Query reads any slice of it; sort keys that start with a digit are frames (in time
order), every other item's sort key starts with a capital letter, so the two never mix:

| item                 | pk                  | sk                          | gsi1pk / gsi1sk                          |
|----------------------|---------------------|-----------------------------|------------------------------------------|
| frame                | REC#<rec>           | <relms10>#<pid>#<type>      | PART#<rec>#<pid> / <relms10>#<type>      |
| recording            | REC#<rec>           | META                        | RECORDINGS / <first seen ms13>#<rec>     |
| participant          | REC#<rec>           | PART#<pid>                  |                                          |
| slide (analyzer)     | REC#<rec>           | SLIDE#<relms10>#<pid>       |                                          |
| stream's last novel  | REC#<rec>           | NOVEL#<type>#<pid>          |                                          |
| export               | REC#<rec>           | EXPORT#<pid>#<type>         |                                          |
| export job           | REC#<rec>           | JOB#export                  |                                          |
| bot                  | BOT#<bot>           | META                        |                                          |
| bot status event     | BOT#<bot>           | EVENT#<iso time>#<msg id>   |                                          |
| recording of a bot   | BOT#<bot>           | REC#<rec>                   |                                          |
| connection           | CONN#<connection id>| META                        |                                          |
| receiver lease       | RECEIVERS           | <receiver id>               |                                          |
| bot token            | TOKEN#<sha256>      | META                        |                                          |
| webhook / handshake  | ONCE#<scope>#<id>   | META                        |                                          |

A frame is two writes (the item and its one GSI copy, each under 1 KB): 2 write units.
"""

from __future__ import annotations

import re

FRAME_TYPES = ("webcam", "screenshare")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
RELATIVE_MS_DIGITS = 10
MAX_RELATIVE_MS = 10**RELATIVE_MS_DIGITS - 1  # ~115 days: keys stay fixed-width and sortable

GSI_PARTICIPANT = "gsi1"  # frames of one participant (both types) in time order; recordings list

# Attribute holding the epoch-seconds expiry (DynamoDB TTL) of connection, token and
# once-only items, and of every recording item when frames expire (index_expires_at).
TTL_ATTRIBUTE = "expires_at"
DAY_SECONDS = 24 * 60 * 60

TABLE_SCHEMA: dict = {
    "partition_key": "pk",
    "sort_key": "sk",
    "global_secondary_indexes": [
        {"name": GSI_PARTICIPANT, "partition_key": "gsi1pk", "sort_key": "gsi1sk"},
    ],
    "ttl_attribute": TTL_ATTRIBUTE,
}

# Frame sort keys start with the 10-digit time; everything else in a recording's partition
# starts with a capital letter, which sorts after every digit and "#".
FRAME_SK_LOW = "0"
FRAME_SK_HIGH = "9" * RELATIVE_MS_DIGITS + "~"  # "~" sorts after "#" and every id character
NON_FRAME_SK_LOW = "A"

META_SK = "META"
RECORDINGS_GSI_PK = "RECORDINGS"


def create_table_kwargs(table_name: str) -> dict:
    """boto3 ``create_table`` arguments for TABLE_SCHEMA (local emulator, tests)."""
    keys = [TABLE_SCHEMA["partition_key"], TABLE_SCHEMA["sort_key"]]
    gsis = []
    for gsi in TABLE_SCHEMA["global_secondary_indexes"]:
        keys += [gsi["partition_key"], gsi["sort_key"]]
        gsis.append(
            {
                "IndexName": gsi["name"],
                "KeySchema": [
                    {"AttributeName": gsi["partition_key"], "KeyType": "HASH"},
                    {"AttributeName": gsi["sort_key"], "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        )
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k in keys],
        "KeySchema": [
            {"AttributeName": TABLE_SCHEMA["partition_key"], "KeyType": "HASH"},
            {"AttributeName": TABLE_SCHEMA["sort_key"], "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": gsis,
    }


def index_expires_at(created_ms: int | None, expiry_days: int) -> int | None:
    """TTL (epoch seconds) of the index items of a frame whose S3 object was created at
    ``created_ms``, or None (no TTL) when frames are kept forever or the time is unknown.

    S3 lifecycle expires an object ``expiry_days`` after its creation rounded up to the next
    midnight UTC, and DynamoDB TTL deletes an item within days after its expires_at. So the
    items expire at that same midnight plus one day: never before the object (the day covers
    the gap between our clock and the object's LastModified), and an item outlives its object
    by about a day plus TTL's own lag.
    """
    if expiry_days <= 0 or created_ms is None:
        return None
    expiry = created_ms // 1000 + expiry_days * DAY_SECONDS
    next_midnight = -(-expiry // DAY_SECONDS) * DAY_SECONDS
    return next_midnight + DAY_SECONDS


def relative_ms_text(relative_ms: int) -> str:
    return str(relative_ms).zfill(RELATIVE_MS_DIGITS)


def frame_key(recording_id: str, participant_id: str, frame_type: str, relative_ms: int) -> str:
    """S3 key of a frame (docs/storage.md, a contract). Ids must already be validated."""
    return (
        f"recordings/{recording_id}/participants/{participant_id}/{frame_type}/"
        f"{relative_ms_text(relative_ms)}.png"
    )


FRAME_KEY_PATTERN = re.compile(
    r"recordings/(?P<recording_id>[A-Za-z0-9_-]{1,128})/participants/"
    r"(?P<participant_id>[A-Za-z0-9_-]{1,128})/(?P<type>webcam|screenshare)/"
    r"(?P<relative_ms>\d{10})\.png"
)
FRAME_SK_PATTERN = re.compile(r"(?P<relative_ms>\d{10})#(?P<participant_id>[A-Za-z0-9_-]{1,128})#(?P<type>webcam|screenshare)")


def recording_prefix(recording_id: str) -> str:
    return f"recordings/{recording_id}/"


def export_prefix(recording_id: str) -> str:
    """Where a recording's exports live: outside recordings/, which reindex reads."""
    return f"exports/{recording_id}/"


def export_key(recording_id: str, participant_id: str, name: str) -> str:
    return f"{export_prefix(recording_id)}{participant_id}/{name}"


def recording_pk(recording_id: str) -> str:
    return f"REC#{recording_id}"


def frame_sk(relative_ms: int, participant_id: str, frame_type: str) -> str:
    return f"{relative_ms_text(relative_ms)}#{participant_id}#{frame_type}"


def participant_gsi_pk(recording_id: str, participant_id: str) -> str:
    return f"PART#{recording_id}#{participant_id}"


def participant_gsi_sk(relative_ms: int, frame_type: str) -> str:
    return f"{relative_ms_text(relative_ms)}#{frame_type}"


def frame_item_key(recording_id: str, participant_id: str, frame_type: str, relative_ms: int) -> dict[str, str]:
    return {"pk": recording_pk(recording_id), "sk": frame_sk(relative_ms, participant_id, frame_type)}


def participant_sk(participant_id: str) -> str:
    return f"PART#{participant_id}"


def recordings_gsi_sk(first_seen_ms: int, recording_id: str) -> str:
    return f"{first_seen_ms:013d}#{recording_id}"


def novelty_sk(frame_type: str, participant_id: str) -> str:
    """A stream's last novel frame (analyze/novelty.py)."""
    return f"NOVEL#{frame_type}#{participant_id}"


def slide_sk(relative_ms: int, participant_id: str) -> str:
    return f"SLIDE#{relative_ms_text(relative_ms)}#{participant_id}"


def export_sk(participant_id: str, frame_type: str) -> str:
    return f"EXPORT#{participant_id}#{frame_type}"


EXPORT_JOB_SK = "JOB#export"


def deleted_pk(recording_id: str) -> str:
    """The tombstone of a deleted recording (delete.py): outside the recording's partition, so
    the recording stays unknown to every query, yet late writers can see it was deleted."""
    return f"DELETED#{recording_id}"


def bot_pk(bot_id: str) -> str:
    return f"BOT#{bot_id}"


def bot_recording_sk(recording_id: str) -> str:
    return f"REC#{recording_id}"


def bot_event_sk(at: str, message_id: str) -> str:
    return f"EVENT#{at}#{message_id}"


RECEIVERS_PK = "RECEIVERS"  # one lease per live receiver process (access/connections.py)


def receiver_sk(receiver_id: str) -> str:
    return receiver_id


def connection_pk(connection_id: str) -> str:
    return f"CONN#{connection_id}"


def token_pk(token_hash: str) -> str:
    return f"TOKEN#{token_hash}"


def once_pk(scope: str, message_id: str) -> str:
    """A once-only marker (a webhook or a signed handshake already seen)."""
    return f"ONCE#{scope}#{message_id}"
