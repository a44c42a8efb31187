"""Participant totals accumulated in memory (framesink_core/ingest/totals.py) and index items written
in batches (framesink_core/ingest/index_batch.py), on moto, with faults injected: flush interval,
late frames, two writers, failed flushes merged back, unprocessed items retried, a failing
request failing exactly its frames."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from framesink_core.ingest.index_batch import MAX_BATCH, BatchingIndexWriter
from framesink_core.ingest.storage import StoreError
from framesink_core.ingest.stored_frame import StoredFrame
from framesink_core.ingest.totals import ParticipantTotals
from framesink_core.shared.items import from_item


def frame(ms: int, *, size: int = 100, name: str | None = "Ada", pid: str = "1", host: bool | None = False,
          frame_type: str = "webcam", rec: str = "rec-t") -> StoredFrame:
    return StoredFrame(rec, pid, name, host, "zoom", frame_type, ms, None, 16, 16, size, bot_id="bot-1",
                       stored_at=1_796_000_000_000 + ms)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def participant(stack, aws, pid="1", rec="rec-t") -> dict | None:
    found = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": f"REC#{rec}"}, "sk": {"S": f"PART#{pid}"}},
                                     ConsistentRead=True)
    return from_item(found["Item"]) if "Item" in found else None


def test_the_first_sighting_is_written_at_once_then_at_most_every_interval(stack, aws):
    clock = Clock()
    totals = ParticipantTotals(stack.table, aws["dynamodb"], interval=5.0, clock=clock)
    totals.add(frame(0), None)
    assert totals.flush_due() == 1  # listed with its first frame
    for ms in (500, 1000, 1500):
        totals.add(frame(ms), None)
        assert totals.flush_due() == 0  # within the interval: nothing written
    assert participant(stack, aws)["frame_count"] == 1 and totals.pending() == 3
    clock.now += 5.0
    assert totals.flush_due() == 1
    item = participant(stack, aws)
    assert (item["frame_count"], item["bytes"], item["first_ms"], item["last_ms"]) == (4, 400, 0, 1500)
    assert item["types"] == {"webcam"} and totals.pending() == 0


def test_a_late_frame_counts_but_does_not_revert_name_or_last(stack, aws):
    totals = ParticipantTotals(stack.table, aws["dynamodb"], interval=0)
    totals.add(frame(5000, name="Ada Lovelace", host=True), None)
    totals.flush_all()
    totals.add(frame(1000, name="ada (old name)", host=False), None)  # arrives late, older in meeting time
    totals.flush_all()
    item = participant(stack, aws)
    assert (item["frame_count"], item["first_ms"], item["last_ms"]) == (2, 1000, 5000)
    assert (item["participant_name"], item["is_host"]) == ("Ada Lovelace", True)


def test_two_writers_add_up_and_the_latest_in_meeting_time_names_the_participant(stack, aws):
    a = ParticipantTotals(stack.table, aws["dynamodb"], interval=0)
    b = ParticipantTotals(stack.table, aws["dynamodb"], interval=0)
    for ms in range(0, 5000, 500):
        (a if ms % 1000 == 0 else b).add(frame(ms, name=f"name@{ms}"), None)
    b.flush_all()  # b holds the latest frame (4500) and flushes first
    a.flush_all()  # a's newest is 4000: counts add, its name does not win
    item = participant(stack, aws)
    assert (item["frame_count"], item["bytes"], item["first_ms"], item["last_ms"]) == (10, 1000, 0, 4500)
    assert item["participant_name"] == "name@4500"


def test_concurrent_adds_and_flushes_from_many_threads_lose_no_count(stack, aws):
    """The receiver's store threads add and flush one accumulator at once. (One writer: moto
    applies concurrent ADDs to one item non-atomically, which DynamoDB does not; several
    writers are covered one after the other above.)"""
    totals = ParticipantTotals(stack.table, aws["dynamodb"], interval=0)

    def work(k):
        totals.add(frame(k * 10), None)
        totals.flush_due()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(200)))
    totals.flush_all()
    item = participant(stack, aws)
    assert (item["frame_count"], item["bytes"], item["first_ms"], item["last_ms"]) == (200, 20000, 0, 1990)


def test_a_failed_flush_is_merged_back_and_written_by_the_next(stack, aws, monkeypatch, caplog_json):
    totals = ParticipantTotals(stack.table, aws["dynamodb"], interval=0)
    totals.add(frame(0), None)
    totals.add(frame(500), None)
    real = aws["dynamodb"].update_item
    calls = {"n": 0}

    def failing(**kwargs):
        if kwargs["Key"]["sk"]["S"].startswith("PART#") and calls["n"] == 0:
            calls["n"] += 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                              "UpdateItem")
        return real(**kwargs)

    monkeypatch.setattr(aws["dynamodb"], "update_item", failing)
    assert totals.flush_all() == 0 and participant(stack, aws) is None
    assert totals.pending() == 2  # put back, not lost
    totals.add(frame(1000), None)  # arrives meanwhile
    assert totals.flush_all() == 1
    item = participant(stack, aws)
    assert (item["frame_count"], item["first_ms"], item["last_ms"]) == (3, 0, 1000)
    assert any(line.get("reason") == "totals_write_failed" for line in caplog_json())


def test_totals_lag_at_most_the_interval_and_retotal_makes_them_exact(stack, aws):
    """What a crash loses: the unflushed deltas; retotal (the export job runs it) rebuilds them."""
    from framesink_core.read.reindex import retotal_recording
    from framesink_core.service import Service

    svc = Service(stack, s3=aws["s3"], dynamodb=aws["dynamodb"])
    svc.store.totals.interval = 3600  # nothing flushed after the first sighting: a crash now loses the rest
    from framesink.synthetic import frame_message, make_png

    for i in range(6):
        msg = frame_message(make_png(16, 16, seed=i, detailed=False), recording_id="rec-crash", participant_id=2,
                            relative=i / 2)
        assert svc.ingestor.handle(msg).stored
    assert participant(stack, aws, "2", "rec-crash")["frame_count"] == 1  # the process "crashed" here
    retotal_recording(svc.store, "rec-crash")
    item = participant(stack, aws, "2", "rec-crash")
    assert (item["frame_count"], item["first_ms"], item["last_ms"]) == (6, 0, 2500)


def test_a_delta_left_over_from_before_a_recount_is_not_counted_twice(stack, aws):
    """A Lambda instance flushes its leftover delta at its next invocation, which can come
    after the export job recounted the participant: those frames were counted already."""
    from framesink_core.ingest.totals import set_exact_totals

    leftover = ParticipantTotals(stack.table, aws["dynamodb"], interval=3600)
    frames = [frame(ms) for ms in (0, 500, 1000, 1500)]
    leftover.add(frames[0], None)
    leftover.flush_all()  # its first frame, written at once
    for f in frames[1:]:
        leftover.add(f, None)  # ...the rest still in memory when the meeting ends
    set_exact_totals(aws["dynamodb"], stack.table, frames, 30)  # the export job's recount
    assert participant(stack, aws)["frame_count"] == 4
    leftover.flush_all()
    assert participant(stack, aws)["frame_count"] == 4  # dropped, not added
    later = ParticipantTotals(stack.table, aws["dynamodb"], interval=0)
    later.add(frame(2000), None)  # stored after the recount: counted
    later.flush_all()
    item = participant(stack, aws)
    assert (item["frame_count"], item["last_ms"]) == (5, 2000)


# --- the batching index writer -------------------------------------------------------------------


def index_item(k: int) -> dict:
    return {"pk": "REC#rec-b", "sk": f"{k:010d}#1#webcam", "kind": "frame", "n": k}


def stored_keys(stack, aws) -> set[str]:
    result = aws["dynamodb"].query(TableName=stack.table, KeyConditionExpression="pk = :pk",
                                   ExpressionAttributeValues={":pk": {"S": "REC#rec-b"}}, ConsistentRead=True)
    return {i["sk"]["S"] for i in result["Items"]}


def put_all(writer, items) -> list[Exception | None]:
    results: list[Exception | None] = [None] * len(items)

    def one(k):
        try:
            writer.put(items[k])
        except StoreError as exc:
            results[k] = exc

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_items_are_written_in_batches_and_each_put_returns_once_durable(stack, aws):
    writer = BatchingIndexWriter(stack.table, aws["dynamodb"], max_wait=0.2)
    items = [index_item(k) for k in range(60)]
    assert put_all(writer, items) == [None] * 60
    writer.close()
    assert stored_keys(stack, aws) == {i["sk"] for i in items}
    assert writer.batches <= 60 // MAX_BATCH + 2  # 3 or so requests, not 60


def test_unprocessed_items_are_retried_until_written(stack, aws, monkeypatch):
    real = aws["dynamodb"].batch_write_item
    sizes = []

    def throttled(**kwargs):
        requests = kwargs["RequestItems"][stack.table]
        sizes.append(len(requests))
        keep, hand_back = requests[: len(requests) // 2 or 1], requests[len(requests) // 2 or 1:]
        answer = real(RequestItems={stack.table: keep})
        answer["UnprocessedItems"] = {stack.table: hand_back} if hand_back else {}
        return answer

    monkeypatch.setattr(aws["dynamodb"], "batch_write_item", throttled)
    writer = BatchingIndexWriter(stack.table, aws["dynamodb"], max_wait=0.2, workers=1, sleep=lambda s: None)
    items = [index_item(k) for k in range(20)]
    assert put_all(writer, items) == [None] * 20
    writer.close()
    assert stored_keys(stack, aws) == {i["sk"] for i in items}
    assert len(sizes) > 2 and sizes[1] < sizes[0]  # the retries carry only what was handed back


def test_items_still_unprocessed_after_the_attempts_fail_only_their_frames(stack, aws, monkeypatch):
    real = aws["dynamodb"].batch_write_item
    poisoned = index_item(7)["sk"]

    def never_item_7(**kwargs):
        requests = kwargs["RequestItems"][stack.table]
        keep = [r for r in requests if r["PutRequest"]["Item"]["sk"]["S"] != poisoned]
        answer = real(RequestItems={stack.table: keep}) if keep else {"UnprocessedItems": {}}
        left = [r for r in requests if r not in keep]
        answer["UnprocessedItems"] = {stack.table: left} if left else {}
        return answer

    monkeypatch.setattr(aws["dynamodb"], "batch_write_item", never_item_7)
    writer = BatchingIndexWriter(stack.table, aws["dynamodb"], max_wait=0.1, max_attempts=3, sleep=lambda s: None)
    results = put_all(writer, [index_item(k) for k in range(10)])
    writer.close()
    assert [k for k, r in enumerate(results) if r is not None] == [7]
    assert "index" in str(results[7])
    assert stored_keys(stack, aws) == {index_item(k)["sk"] for k in range(10) if k != 7}


def test_a_failing_request_fails_its_frames_and_the_writer_goes_on(stack, aws, monkeypatch):
    real = aws["dynamodb"].batch_write_item
    state = {"fail": True}

    def flaky(**kwargs):
        if state["fail"]:
            state["fail"] = False
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "BatchWriteItem")
        return real(**kwargs)

    monkeypatch.setattr(aws["dynamodb"], "batch_write_item", flaky)
    writer = BatchingIndexWriter(stack.table, aws["dynamodb"], max_wait=0.05, workers=1)
    first = put_all(writer, [index_item(1)])
    second = put_all(writer, [index_item(2)])
    writer.close()
    assert isinstance(first[0], StoreError) and second == [None]
    assert stored_keys(stack, aws) == {index_item(2)["sk"]}


def test_a_closed_writer_refuses_new_items(stack, aws):
    writer = BatchingIndexWriter(stack.table, aws["dynamodb"])
    writer.close()
    with pytest.raises(StoreError):
        writer.put(index_item(1))


# --- the two-stage store the receiver uses (FrameStore.begin_put, Ingestor.begin_store) ---------


def _gated_ingestor(stack, aws, monkeypatch, *, fail: bool = False):
    """An Ingestor whose batched index writes wait for ``gate`` (and then fail, with ``fail``)."""
    from framesink_core.ingest.ingestor import Ingestor
    from framesink_core.ingest.storage import FrameStore

    gate = threading.Event()
    real = aws["dynamodb"].batch_write_item

    def gated(**kwargs):
        gate.wait(30)
        if fail:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "BatchWriteItem")
        return real(**kwargs)

    monkeypatch.setattr(aws["dynamodb"], "batch_write_item", gated)
    writer = BatchingIndexWriter(stack.table, aws["dynamodb"], max_wait=0.01, workers=1)
    store = FrameStore(stack.bucket, stack.table, aws["s3"], aws["dynamodb"], index_writer=writer, totals_interval=0)
    return Ingestor(store, 512 * 1024), gate


def test_a_frame_is_stored_only_once_its_index_item_is_durable_and_holds_no_thread_meanwhile(stack, aws, monkeypatch):
    from framesink.synthetic import frame_message, make_png
    from framesink_core.ingest.ingestor import STORED

    ingestor, gate = _gated_ingestor(stack, aws, monkeypatch)
    frame = ingestor.accept(frame_message(make_png(32, 24, seed=1, detailed=False), recording_id="rec-two",
                                           participant_id=1, relative=1.0))
    pending = ingestor.begin_store(frame, connection_id="c1")  # returns once S3 has the object
    assert aws["s3"].head_object(Bucket=stack.bucket, Key=frame.s3_key)["ContentLength"] == len(frame.png)
    assert not pending.done() and participant(stack, aws, rec="rec-two") is None  # not counted yet
    gate.set()
    outcome = pending.result(30)
    assert outcome.status == STORED and outcome.key == frame.s3_key
    ingestor.store.close()  # writes the totals the durable frame added
    assert participant(stack, aws, rec="rec-two")["frame_count"] == 1


def test_a_frame_whose_index_write_fails_is_reported_failed_and_not_counted(stack, aws, monkeypatch):
    from framesink.synthetic import frame_message, make_png
    from framesink_core.ingest.ingestor import FAILED

    ingestor, gate = _gated_ingestor(stack, aws, monkeypatch, fail=True)
    frame = ingestor.accept(frame_message(make_png(32, 24, seed=2, detailed=False), recording_id="rec-two-f",
                                           participant_id=1, relative=1.0))
    pending = ingestor.begin_store(frame)
    gate.set()
    outcome = pending.result(30)
    assert (outcome.status, outcome.reason) == (FAILED, "index_write_failed")
    ingestor.store.close()
    assert participant(stack, aws, rec="rec-two-f") is None


def test_under_load_batches_fill_and_slow_traffic_keeps_its_latency(stack, aws):
    """Items arriving faster than 25 per fill_wait wait for a full batch (at most fill_wait);
    items arriving slower are written at max_wait, as before."""
    def run(gap: float, n: int) -> list[int]:
        writer = BatchingIndexWriter(stack.table, aws["dynamodb"], max_wait=0.05, fill_wait=0.3, workers=1)
        sizes = []
        real = aws["dynamodb"].batch_write_item

        def counted(**kwargs):
            sizes.append(len(kwargs["RequestItems"][stack.table]))
            return real(**kwargs)

        aws["dynamodb"].batch_write_item = counted
        try:
            futures = []
            for k in range(n):
                futures.append(writer.submit(index_item(k + int(gap * 1e6))))
                time.sleep(gap)
            for future in futures:
                future.result(10)
        finally:
            writer.close()
            del aws["dynamodb"].batch_write_item
        return sizes

    fast_sizes = run(0.002, 100)  # 500 items/s: 25 in 50 ms
    assert max(fast_sizes) == MAX_BATCH and len(fast_sizes) <= 6  # not the ~9 of 11 items max_wait alone gives
    slow_sizes = run(0.04, 10)  # 25 a second: a batch would take a second to fill
    # written at max_wait (1-2 items each), not held for fill_wait (which would gather ~7)
    assert max(slow_sizes) <= 3 and sum(slow_sizes) == 10
