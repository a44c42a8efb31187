"""`framesink receive`: the container receiver (lambdas/framesink_receiver does the work)."""

from __future__ import annotations

import argparse

from framesink_receiver import HEALTH_PATH, add_arguments, run


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "receive",
        help="run the container websocket receiver (ECS Fargate entry point): no 32 KB limit",
        description="Serve Recall's websocket on --host/--port with the same core as the Lambda "
        f"handlers: token check at the handshake, every frame to S3 + DynamoDB, GET {HEALTH_PATH} "
        "for the load balancer, graceful drain on SIGTERM (close 1001, in-flight frames finished). "
        "Reads FRAMESINK_* settings from the environment, like the Lambda functions.",
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..cli import need_extra

    need_extra("local", "obstore", what="framesink receive")
    return run(args)
