"""The one definition of framesink's DynamoDB table and S3 layout.

The CDK stack (infra/storage.py), the local emulator and the tests all build the table
from TABLE_SCHEMA, so keys and indexes cannot drift between the cloud and a laptop.

Single-table design (documented in the README, "DynamoDB key design"):

| item            | pk                              | sk                          | gsi1pk / gsi1sk                      | gsi2pk / gsi2sk                   |
|-----------------|---------------------------------|-----------------------------|--------------------------------------|-----------------------------------|
| frame           | STREAM#<rec>#<pid>#<type>       | <relms10>                   | PART#<rec>#<pid> / <relms10>#<type>  | REC#<rec> / <relms10>#<pid>#<type> |
| participant     | REC#<rec>                       | PART#<pid>                  |                                      |                                   |
| recording       | BOT#<bot>                       | REC#<rec>                   |                                      |                                   |
| connection      | CONN#<connection id>            | META                        |                                      |                                   |
| bot token       | TOKEN#<sha256 of token>         | META                        |                                      |                                   |
"""

from __future__ import annotations

import re

FRAME_TYPES = ("webcam", "screenshare")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
RELATIVE_MS_DIGITS = 10
MAX_RELATIVE_MS = 10**RELATIVE_MS_DIGITS - 1  # ~115 days: keys stay fixed-width and sortable

GSI_PARTICIPANT = "gsi1"  # frames of one participant (all types), in time order
GSI_RECORDING = "gsi2"  # frames of a whole recording, in time order

# Attribute holding the epoch-seconds expiry (DynamoDB TTL) of connection and token items,
# and of frame, participant and bot-recording items when frames expire (index_expires_at).
TTL_ATTRIBUTE = "expires_at"
DAY_SECONDS = 24 * 60 * 60

TABLE_SCHEMA: dict = {
    "partition_key": "pk",
    "sort_key": "sk",
    "global_secondary_indexes": [
        {"name": GSI_PARTICIPANT, "partition_key": "gsi1pk", "sort_key": "gsi1sk"},
        {"name": GSI_RECORDING, "partition_key": "gsi2pk", "sort_key": "gsi2sk"},
    ],
    "ttl_attribute": TTL_ATTRIBUTE,
}


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
    """S3 key of a frame (DESIGN.md storage contract). Ids must already be validated."""
    return (
        f"recordings/{recording_id}/participants/{participant_id}/{frame_type}/"
        f"{relative_ms_text(relative_ms)}.png"
    )


FRAME_KEY_PATTERN = re.compile(
    r"recordings/(?P<recording_id>[A-Za-z0-9_-]{1,128})/participants/"
    r"(?P<participant_id>[A-Za-z0-9_-]{1,128})/(?P<type>webcam|screenshare)/"
    r"(?P<relative_ms>\d{10})\.png"
)


def recording_prefix(recording_id: str) -> str:
    return f"recordings/{recording_id}/"


def stream_pk(recording_id: str, participant_id: str, frame_type: str) -> str:
    return f"STREAM#{recording_id}#{participant_id}#{frame_type}"


def participant_gsi_pk(recording_id: str, participant_id: str) -> str:
    return f"PART#{recording_id}#{participant_id}"


def recording_gsi_pk(recording_id: str) -> str:
    return f"REC#{recording_id}"


def recording_pk(recording_id: str) -> str:
    return f"REC#{recording_id}"


def participant_sk(participant_id: str) -> str:
    return f"PART#{participant_id}"


def bot_pk(bot_id: str) -> str:
    return f"BOT#{bot_id}"


def connection_pk(connection_id: str) -> str:
    return f"CONN#{connection_id}"


def token_pk(token_hash: str) -> str:
    return f"TOKEN#{token_hash}"


META_SK = "META"
