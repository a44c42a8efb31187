"""`framesink` entry point. Each subcommand lives in its own module under framesink/commands/
and registers itself through a ``register(subparsers)`` function listed in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys

from framesink_core.query import QueryError

# Module names under framesink.commands; each defines register(subparsers).
COMMANDS: list[str] = ["local", "simulate", "demo", "create_bot", "revoke_bot", "frames", "participants", "export", "reindex", "receive"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framesink",
        description="Receive Recall.ai real-time participant video frames into S3 + DynamoDB.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"framesink.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, QueryError) as exc:
        # The core's query checks name the parameter: say which option it came from.
        message = f"--{exc.param}: {exc.detail}" if isinstance(exc, QueryError) else str(exc)
        print(f"framesink: error: {message}", file=sys.stderr)
        return 1


class CliError(Exception):
    """An error the user can act on; printed without a traceback."""
