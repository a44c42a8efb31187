"""A bot's status on its recordings: the status item update that keeps the highest-precedence
status (meetings.py decides precedence), and the copy a recording takes of its bot's status
when its first frame arrives after the bot reported (totals.write_recording_items)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item
from framesink_core.shared.objects import error_code


def set_status(dynamodb, table: str, key: dict, values: dict) -> None:
    """SET the status unless the item already holds one of higher precedence."""
    names = {f"#{k}": k for k in values}
    try:
        dynamodb.update_item(
            TableName=table, Key=to_item(key),
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values if values[k] is not None),
            ConditionExpression="attribute_not_exists(#status_key) OR #status_key < :status_key",
            ExpressionAttributeNames={k: v for k, v in names.items() if values[v] is not None or v == "status_key"},
            ExpressionAttributeValues=to_item({f":{k}": v for k, v in values.items()}),
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise  # else: a later (or terminal) status is already there


STATUS_FIELDS = ("status", "status_at", "sub_code", "status_key")


def inherit_bot_status(dynamodb, table: str, bot_id: str, recording_id: str) -> None:
    """A recording first seen after its bot reported a status (``in_call_recording`` comes
    before the first frame) takes the bot's status: one GetItem when a recording is first
    seen (totals.write_recording_items), none per frame."""
    found = dynamodb.get_item(TableName=table, Key=to_item({"pk": schema.bot_pk(bot_id), "sk": schema.META_SK}),
                              ProjectionExpression=", ".join(f"#{k}" for k in STATUS_FIELDS),
                              ExpressionAttributeNames={f"#{k}": k for k in STATUS_FIELDS}).get("Item")
    bot = from_item(found) if found else {}
    if not bot.get("status_key"):
        return
    values = {k: bot.get(k) for k in STATUS_FIELDS}
    set_status(dynamodb, table, {"pk": schema.recording_pk(recording_id), "sk": schema.META_SK}, values)
    set_status(dynamodb, table, {"pk": schema.bot_pk(bot_id), "sk": schema.bot_recording_sk(recording_id)}, values)
