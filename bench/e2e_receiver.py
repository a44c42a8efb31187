"""`python -m framesink_receiver`, as the container runs it, with one addition for bench/e2e.py:
the moment each frame's index item became durable, taken by the same botocore hook the
in-process layout uses (e2e.StoredClock, on the receiver's own DynamoDB client), written as
JSON to ``FRAMESINK_BENCH_CLOCK`` when the receiver exits. The hook costs the receiver one
dict walk per BatchWriteItem item; nothing else differs from the image's CMD.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from .e2e import StoredClock


def main() -> int:
    # (the package exports a function named main, so the module is fetched by its full name)
    receiver_main = importlib.import_module("framesink_receiver.main")
    clocks: list[StoredClock] = []
    build = receiver_main.receiver_service

    def instrumented(settings=None):
        service = build(settings)
        clocks.append(StoredClock(service.dynamodb))
        return service

    receiver_main.receiver_service = instrumented
    code = receiver_main.main(sys.argv[1:])
    with open(os.environ["FRAMESINK_BENCH_CLOCK"], "w") as out:
        json.dump({k: v for clock in clocks for k, v in clock.at.items()}, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
