"""The ingest path's tombstone cache (framesink_core/ingest/tombstones.py): one read per recording per
recheck, a deleted answer kept, and a DynamoDB failure answered "not deleted" without a read
per frame (the spool waits behind it in an outage)."""

from __future__ import annotations

from botocore.exceptions import EndpointConnectionError

from framesink_core.ingest.tombstones import DeletedRecordings


class Table:
    def __init__(self, deleted=(), down=False):
        self.deleted, self.down, self.reads = set(deleted), down, 0

    def get_item(self, **kwargs):
        self.reads += 1
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://dynamodb")
        pk = kwargs["Key"]["pk"]["S"]
        return {"Item": {"pk": {"S": pk}}} if pk.split("#", 1)[1] in self.deleted else {}


def clock():
    now = [0.0]
    return now, lambda: now[0]


def test_one_read_per_recording_per_recheck_and_a_deletion_is_kept():
    table, (now, tick) = Table(), clock()
    deleted = DeletedRecordings(table, "t", recheck_seconds=2.0, clock=tick)
    assert [deleted("rec-a") for _ in range(5)] == [False] * 5 and table.reads == 1
    table.deleted.add("rec-a")
    now[0] = 2.5
    assert deleted("rec-a") and table.reads == 2
    table.deleted.clear()
    now[0] = 100.0
    assert deleted("rec-a") and table.reads == 2  # a tombstone is not taken back


def test_an_outage_is_not_deleted_and_not_read_again_for_every_frame(caplog_json):
    table, (now, tick) = Table(down=True), clock()
    deleted = DeletedRecordings(table, "t", recheck_seconds=2.0, clock=tick)
    assert not any(deleted("rec-b") for _ in range(50)) and table.reads == 1
    now[0] = 3.0
    deleted("rec-b")
    assert table.reads == 2
    assert [line["reason"] for line in caplog_json() if line.get("message") == "tombstone check failed"] == [
        "tombstone_check_failed"] * 2
