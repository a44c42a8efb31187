"""Run the receiver as a process: ``framesink receive`` and ``python -m framesink_receiver``
(the container's CMD). Serves until SIGTERM/SIGINT, then shuts down within the grace."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from framesink_core.service import Service
from framesink_core.shared.observability import count_in_memory
from framesink_core.shared.settings import Settings
from framesink_receiver.config import ReceiverConfig, add_arguments, config_from_args
from framesink_receiver.server import Receiver


async def serve_until_signalled(service: Service, config: ReceiverConfig) -> dict:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Prints a ready line and a summary."""
    receiver = Receiver(service, config)
    await receiver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # One JSON line each at start and end, for scripts and tests (logs go to stdout too).
    print(json.dumps({"framesink_receiver": "ready", "host": config.host, "port": receiver.port,
                      "health_port": receiver.health_port or receiver.port}), flush=True)
    await stop.wait()
    receiver.drain()
    if config.drain_grace > 0:
        await asyncio.sleep(config.drain_grace)
    summary = await receiver.stop()
    print(json.dumps({"framesink_receiver": "stopped", **summary}), flush=True)
    return summary


def receiver_service(settings: Settings | None = None) -> Service:
    """The core as the container runs it: index items batched (index_batch.py) and frames
    written with obstore (native_objects.py). `framesink receive` and `framesink local
    --ingress direct` both start from here."""
    return Service(settings, batch_index_writes=True, native_s3=True)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    settings = Settings.from_env()
    if not settings.bucket or not settings.table:
        print("framesink receive: FRAMESINK_BUCKET and FRAMESINK_TABLE must be set "
              "(the task definition sets them; locally, use `framesink local --ingress direct`)", file=sys.stderr)
        return 2
    # This process is the receiver alone: count metrics in memory, flushed every
    # metrics_interval (observability.py; `framesink local` hosts Lambda handlers beside its
    # receiver, and keeps Powertools' per-invocation batches).
    count_in_memory()
    asyncio.run(serve_until_signalled(receiver_service(settings), config))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framesink receive", description="The container receiver: a websocket server that stores every frame in S3 and DynamoDB.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
