"""Receiver leases (framesink_core/access/connections.py): the connection records of a receiver
that stopped renewing its lease (a crashed task) are closed by another receiver's sweep; a
record that already has an end, and a lease still renewed, are left alone. Over moto's DynamoDB."""

from __future__ import annotations

import boto3

from framesink_core.access.connections import LEASE_MISSES, LOST_CLOSE_CODE, LOST_REASON, ConnectionRegistry
from framesink_core.shared import schema
from framesink_core.shared.items import BOTO_CONFIG, to_item

INTERVAL_S = 60.0
NOW_MS = 1_800_000_000_000


def registry(stack) -> ConnectionRegistry:
    return ConnectionRegistry(stack.table, boto3.client("dynamodb", region_name="us-east-1", config=BOTO_CONFIG),
                              ttl_seconds=3 * 3600)


def opened(reg: ConnectionRegistry, *ids: str) -> None:
    for cid in ids:
        reg.opened(cid, bot_id="bot-1", method="token", source_ip="198.51.100.7", connected_at_ms=NOW_MS - 600_000)


def lease_items(reg: ConnectionRegistry) -> list[dict]:
    return reg._leases()


def test_a_lost_receivers_open_records_are_closed_and_its_lease_removed(stack):
    reg = registry(stack)
    opened(reg, "c-open", "c-done", "c-live")
    # c-done ended normally before the crash (the receiver's own record, batched): kept as is.
    reg.dynamodb.put_item(TableName=stack.table, Item=to_item(reg.record(
        "c-done", bot_id="bot-1", method="token", source_ip=None, connected_at_ms=NOW_MS - 600_000,
        status_code=1000, reason="bye")))
    stale_at = NOW_MS - LEASE_MISSES * int(INTERVAL_S * 1000)
    reg.renew_lease("crashed", ["c-open", "c-done", "c-missing"], interval_s=INTERVAL_S, now_ms=stale_at)
    reg.renew_lease("alive", ["c-live"], interval_s=INTERVAL_S, now_ms=NOW_MS - 1000)

    result = reg.sweep_lost(own_id="sweeper", now_ms=NOW_MS)

    # c-missing has no record (the crash came between the lease and the record): none is made up.
    assert result == {"receivers": 1, "closed": 1, "skipped": 2}
    lost = reg.get("c-open")
    assert (lost["close_code"], lost["disconnected_at"]) == (LOST_CLOSE_CODE, NOW_MS)
    assert lost["close_reason"].startswith(LOST_REASON) and "crashed" in lost["close_reason"]
    assert lost["bot_id"] == "bot-1" and lost["connected_at"] == NOW_MS - 600_000  # the rest of it kept
    assert reg.get("c-done")["close_code"] == 1000 and reg.get("c-done")["close_reason"] == "bye"
    assert reg.get("c-missing") is None
    assert "disconnected_at" not in reg.get("c-live")
    assert [item["receiver_id"] for item in lease_items(reg)] == ["alive"]
    # A second sweep (another receiver, the same minute) finds nothing left to do.
    assert reg.sweep_lost(own_id="other", now_ms=NOW_MS + 1) == {"receivers": 0, "closed": 0, "skipped": 0}


def test_a_lease_just_inside_its_misses_and_the_sweepers_own_are_left_alone(stack):
    reg = registry(stack)
    opened(reg, "c-1", "c-2")
    reg.renew_lease("slow", ["c-1"], interval_s=INTERVAL_S,
                    now_ms=NOW_MS - LEASE_MISSES * int(INTERVAL_S * 1000) + 1)
    reg.renew_lease("me", ["c-2"], interval_s=INTERVAL_S, now_ms=NOW_MS - 10 * int(INTERVAL_S * 1000))
    assert reg.sweep_lost(own_id="me", now_ms=NOW_MS)["receivers"] == 0
    assert "disconnected_at" not in reg.get("c-1") and "disconnected_at" not in reg.get("c-2")


def test_a_lease_renewed_during_the_sweep_is_not_deleted(stack, monkeypatch):
    """A receiver paused past its misses (not crashed) that renews while being swept keeps its
    lease: the delete is conditional on the renewal the sweep read."""
    reg = registry(stack)
    opened(reg, "c-1")
    reg.renew_lease("paused", ["c-1"], interval_s=INTERVAL_S, now_ms=NOW_MS - 3600_000)
    real_close = reg._close_lost

    def close_and_come_back(cid, receiver_id, now_ms):
        reg.renew_lease("paused", ["c-1"], interval_s=INTERVAL_S, now_ms=NOW_MS)
        return real_close(cid, receiver_id, now_ms)

    monkeypatch.setattr(reg, "_close_lost", close_and_come_back)
    assert reg.sweep_lost(own_id="sweeper", now_ms=NOW_MS)["closed"] == 1
    assert [item["renewed_at"] for item in lease_items(reg)] == [NOW_MS]


def test_end_lease_and_the_lease_item_shape(stack):
    reg = registry(stack)
    reg.renew_lease("r-1", [f"c-{i}" for i in range(3)], interval_s=INTERVAL_S, now_ms=NOW_MS)
    (item,) = lease_items(reg)
    assert (item["pk"], item["sk"], item["open"]) == (schema.RECEIVERS_PK, "r-1", ["c-0", "c-1", "c-2"])
    assert item[schema.TTL_ATTRIBUTE] > NOW_MS / 1000  # a forgotten lease still goes
    reg.end_lease("r-1")
    assert lease_items(reg) == []
