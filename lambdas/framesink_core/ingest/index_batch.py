"""Index items of many frames in one DynamoDB call: what the container receiver uses.

``put(item)`` queues the item and blocks until it is durable, so a frame is still reported
stored only once both its object and its index item are. Writer threads take up to 25 items
(BatchWriteItem's maximum) as soon as 25 are waiting or the oldest has waited ``max_wait``
seconds (50 ms: the bound on how long a frame waits to be indexed), write them in one
request, and retry the items DynamoDB hands back unprocessed (throttling) with exponential
backoff and jitter. Items still unprocessed after ``max_attempts``, or a request that fails
after botocore's own retries, fail their frames with ``index_write_failed``; their S3
objects exist, so a redelivery or ``framesink reindex`` writes the items later.

Hand-written rather than boto3's BatchWriter: that buffers until 25 items or an explicit
flush and reports nothing per item, while a frame here must wait at most ``max_wait`` and
learn whether its own item landed.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future

from botocore.exceptions import BotoCoreError, ClientError

from framesink_core.ingest.storage import StoreError, _describe
from framesink_core.shared.items import to_item

MAX_BATCH = 25  # BatchWriteItem's limit
DEFAULT_MAX_WAIT = 0.05


class BatchingIndexWriter:
    def __init__(self, table: str, dynamodb, *, max_wait: float = DEFAULT_MAX_WAIT, workers: int = 2,
                 max_attempts: int = 8, sleep=time.sleep):
        self.table = table
        self.dynamodb = dynamodb
        self.max_wait = max_wait
        self.max_attempts = max_attempts
        self._sleep = sleep
        self._cond = threading.Condition()
        self._queue: list[tuple[float, dict, Future]] = []
        self._closing = False
        self.batches = 0  # requests made (for tests and benchmarks)
        self._threads = [threading.Thread(target=self._run, name=f"index-batch-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def put(self, item: dict) -> None:
        """Queue one item and wait until it is durable; raises StoreError."""
        self.submit(item).result()

    def submit(self, item: dict) -> Future:
        """Queue one item without waiting: the future resolves once the item is durable, or
        fails with StoreError. The receiver's store threads use this, so a thread is not held
        while an item waits for its batch."""
        future: Future = Future()
        with self._cond:
            if self._closing:
                raise StoreError("index", "the index writer is closed")
            self._queue.append((time.monotonic(), item, future))
            if len(self._queue) >= MAX_BATCH:
                self._cond.notify()
            elif len(self._queue) == 1:
                self._cond.notify()
        return future

    def close(self) -> None:
        """Write what is queued, then stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _next_batch(self) -> list[tuple[float, dict, Future]] | None:
        with self._cond:
            while True:
                if self._queue:
                    wait = self._queue[0][0] + self.max_wait - time.monotonic()
                    if len(self._queue) >= MAX_BATCH or wait <= 0 or self._closing:
                        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                        if self._queue:
                            self._cond.notify()  # another writer can take the rest
                        return batch
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._write(batch)
            except Exception as exc:  # never leave a frame waiting forever
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(StoreError("index", _describe(exc)))

    def _write(self, batch: list[tuple[float, dict, Future]]) -> None:
        # One request may not name a key twice; the same key twice carries the same item.
        by_key: dict[tuple[str, str], tuple[dict, list[Future]]] = {}
        for _, item, future in batch:
            key = (item["pk"], item["sk"])
            by_key[key] = (item, [*by_key.get(key, (None, []))[1], future])
        requests = {key: {"PutRequest": {"Item": to_item(item)}} for key, (item, _) in by_key.items()}
        for attempt in range(self.max_attempts):
            try:
                self.batches += 1
                answer = self.dynamodb.batch_write_item(RequestItems={self.table: list(requests.values())})
            except (ClientError, BotoCoreError) as exc:  # after botocore's own retries
                error = StoreError("index", _describe(exc))
                for _, futures in by_key.values():
                    for future in futures:
                        future.set_exception(error)
                return
            left = answer.get("UnprocessedItems", {}).get(self.table, [])
            left_keys = {(r["PutRequest"]["Item"]["pk"]["S"], r["PutRequest"]["Item"]["sk"]["S"]) for r in left}
            for key in list(requests):
                if key not in left_keys:
                    for future in by_key[key][1]:
                        future.set_result(None)
                    del requests[key]
            if not requests:
                return
            self._sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        error = StoreError("index", f"{len(requests)} items still unprocessed after {self.max_attempts} BatchWriteItem attempts")
        for key in requests:
            for future in by_key[key][1]:
                future.set_exception(error)
