"""Connection records: who connected (and as which bot), when, and how the connection ended."""

from __future__ import annotations

import time
from collections import OrderedDict

from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item


class ConnectionRegistry:
    def __init__(self, table: str, dynamodb, ttl_seconds: int, cache_size: int = 4096):
        self.table = table
        self.dynamodb = dynamodb
        self.ttl_seconds = ttl_seconds
        # $default runs once per message: cache each connection's bot id in the warm
        # process instead of reading the connection item for every frame.
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._cache_size = cache_size

    def opened(
        self,
        connection_id: str,
        *,
        bot_id: str | None,
        method: str,
        source_ip: str | None,
        connected_at_ms: int | None = None,
    ) -> None:
        now = time.time()
        self.dynamodb.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "pk": schema.connection_pk(connection_id),
                    "sk": schema.META_SK,
                    "kind": "connection",
                    "connection_id": connection_id,
                    "bot_id": bot_id,
                    "auth_method": method,
                    "source_ip": source_ip,
                    "connected_at": connected_at_ms or int(now * 1000),
                    schema.TTL_ATTRIBUTE: int(now + self.ttl_seconds),
                }
            ),
        )
        self._remember(connection_id, bot_id)

    def record(self, connection_id: str, *, bot_id: str | None, method: str, source_ip: str | None,
               connected_at_ms: int, status_code: int | None = None, reason: str | None = None) -> dict:
        """The whole record of a connection that has ended, for a writer that knows it all (the
        receiver): a put, so records can be batched 25 per BatchWriteItem (closed() is an
        UpdateItem because $disconnect knows only the id)."""
        now = time.time()
        return {
            "pk": schema.connection_pk(connection_id), "sk": schema.META_SK, "kind": "connection",
            "connection_id": connection_id, "bot_id": bot_id, "auth_method": method, "source_ip": source_ip,
            "connected_at": connected_at_ms, "disconnected_at": int(now * 1000),
            "close_code": status_code if status_code is not None else -1, "close_reason": (reason or "")[:512],
            schema.TTL_ATTRIBUTE: int(connected_at_ms / 1000 + self.ttl_seconds),
        }

    def closed(self, connection_id: str, *, status_code: int | None, reason: str | None) -> None:
        self.dynamodb.update_item(
            TableName=self.table,
            Key=to_item({"pk": schema.connection_pk(connection_id), "sk": schema.META_SK}),
            UpdateExpression="SET kind = :kind, connection_id = :cid, disconnected_at = :now, "
            "close_code = :code, close_reason = :reason",
            ExpressionAttributeValues=to_item(
                {
                    ":kind": "connection",
                    ":cid": connection_id,
                    ":now": int(time.time() * 1000),
                    ":code": status_code if status_code is not None else -1,
                    ":reason": (reason or "")[:512],
                }
            ),
        )
        self._cache.pop(connection_id, None)

    def get(self, connection_id: str) -> dict | None:
        result = self.dynamodb.get_item(
            TableName=self.table,
            Key=to_item({"pk": schema.connection_pk(connection_id), "sk": schema.META_SK}),
        )
        item = result.get("Item")
        return from_item(item) if item else None

    def bot_of(self, connection_id: str) -> str | None:
        if connection_id in self._cache:
            self._cache.move_to_end(connection_id)
            return self._cache[connection_id]
        item = self.get(connection_id) or {}
        bot_id = item.get("bot_id")
        self._remember(connection_id, bot_id)
        return bot_id

    def _remember(self, connection_id: str, bot_id: str | None) -> None:
        self._cache[connection_id] = bot_id
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
