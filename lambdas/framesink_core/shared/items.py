"""DynamoDB items and AWS client settings shared by every part: plain Python values to and
from DynamoDB's low-level form (the index's one (de)serializer), and the retry and timeout
configuration every client is made with."""

from __future__ import annotations

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config

# Standard retry mode: exponential backoff with jitter on throttling, 5xx and timeouts.
# Bounded so a Lambda invocation (29 s API Gateway integration limit) ends well inside it.
BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=64,
)
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


def to_item(values: dict) -> dict:
    """Python values to a DynamoDB low-level item, dropping None (absent beats NULL)."""
    return {k: _serialize(v) for k, v in values.items() if v is not None}


def from_item(item: dict) -> dict:
    return {k: _deserialize(v) for k, v in item.items()}
