"""Connection records: who connected (and as which bot), when, and how the connection ended.

A receiver task that crashes (SIGKILL, a lost host) never writes its connections' ends, so each
receiver also keeps a *lease*: one item per receiver process listing the connections it holds
open, rewritten every ``interval`` seconds and within a second of a change. Every receiver
sweeps the leases: one not renewed for ``LEASE_MISSES`` intervals belongs to a receiver that is
gone, and the records it lists are closed (1006, ``receiver_lost``), unless they already have
an end. With the deployed 60 s interval a crashed task's records are closed within 4 minutes
while any receiver runs (a replacement task sweeps as it starts)."""

from __future__ import annotations

import time
from collections import OrderedDict

from framesink_core.shared import schema
from framesink_core.shared.items import from_item, to_item


# A lease missed this many times in a row is a receiver that is gone (a live one renews every
# interval; three misses leave room for a DynamoDB hiccup before its records are touched).
LEASE_MISSES = 3
LOST_CLOSE_CODE = 1006  # RFC 6455: closed without a close frame
LOST_REASON = "receiver_lost"
LEASE_TTL_SECONDS = 24 * 60 * 60
# Connection ids listed per lease: 32 hex characters each, so 5,000 stay far below DynamoDB's
# 400 KB item limit; a receiver holds a few hundred (its max_in_flight is the real bound).
MAX_LEASED_CONNECTIONS = 5000


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

    # --- receiver leases: the records of a crashed receiver ---------------------------------

    def renew_lease(self, receiver_id: str, open_ids: list[str], *, interval_s: float,
                    now_ms: int | None = None) -> None:
        """This receiver is alive and holds ``open_ids`` (one PutItem)."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.dynamodb.put_item(TableName=self.table, Item=to_item({
            "pk": schema.RECEIVERS_PK, "sk": schema.receiver_sk(receiver_id), "kind": "receiver",
            "receiver_id": receiver_id, "renewed_at": now_ms, "interval_ms": int(interval_s * 1000),
            "open": sorted(open_ids)[:MAX_LEASED_CONNECTIONS],
            schema.TTL_ATTRIBUTE: int(now_ms / 1000 + LEASE_TTL_SECONDS),
        }))

    def end_lease(self, receiver_id: str) -> None:
        """A receiver that stopped cleanly has recorded every close itself."""
        self.dynamodb.delete_item(TableName=self.table, Key=to_item(
            {"pk": schema.RECEIVERS_PK, "sk": schema.receiver_sk(receiver_id)}))

    def sweep_lost(self, *, own_id: str | None = None, now_ms: int | None = None) -> dict:
        """Close the records of receivers whose lease ran out. Each close is conditional on the
        record having no end yet (a late real close, or another receiver's sweep, wins); the
        lease is deleted only if it was not renewed meanwhile. Returns what was done."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        result = {"receivers": 0, "closed": 0, "skipped": 0}
        for lease in self._leases():
            if lease.get("receiver_id") == own_id:
                continue
            renewed_at, interval_ms = int(lease.get("renewed_at", 0)), int(lease.get("interval_ms", 60_000))
            if now_ms - renewed_at < LEASE_MISSES * interval_ms:
                continue
            result["receivers"] += 1
            for cid in lease.get("open") or []:
                if self._close_lost(str(cid), lease.get("receiver_id"), now_ms):
                    result["closed"] += 1
                else:
                    result["skipped"] += 1
            try:
                self.dynamodb.delete_item(
                    TableName=self.table, Key=to_item({"pk": lease["pk"], "sk": lease["sk"]}),
                    ConditionExpression="renewed_at = :seen",
                    ExpressionAttributeValues=to_item({":seen": renewed_at}))
            except self.dynamodb.exceptions.ConditionalCheckFailedException:
                pass  # it came back (a long pause, not a crash): its records stay its own
        return result

    def _leases(self) -> list[dict]:
        items, kwargs = [], {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                             "ExpressionAttributeValues": to_item({":pk": schema.RECEIVERS_PK})}
        while True:
            page = self.dynamodb.query(**kwargs)
            items += [from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _close_lost(self, connection_id: str, receiver_id: str | None, now_ms: int) -> bool:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=to_item({"pk": schema.connection_pk(connection_id), "sk": schema.META_SK}),
                UpdateExpression="SET disconnected_at = :now, close_code = :code, close_reason = :reason",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(disconnected_at)",
                ExpressionAttributeValues=to_item({
                    ":now": now_ms, ":code": LOST_CLOSE_CODE,
                    ":reason": f"{LOST_REASON}: receiver {receiver_id} stopped renewing its lease"[:512]}))
            return True
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
