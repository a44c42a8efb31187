"""`framesink` entry point. Each subcommand lives in its own module under framesink/commands/
and registers itself through a ``register(subparsers)`` function listed in COMMANDS.

Every failure a user can meet ends as one line on stderr and exit status 1: a bad argument,
an unreachable endpoint or stack, a path that cannot be written. ``FRAMESINK_DEBUG=1`` shows
the traceback of an unexpected error; nothing else prints one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from importlib import metadata

from framesink_core.read.query import QueryError

# Module names under framesink.commands; each defines register(subparsers).
COMMANDS: list[str] = ["local", "simulate", "demo", "create_bot", "revoke_bot", "frames", "participants", "export", "export_job",
                       "watch", "analyze", "results", "live", "context", "notes", "slides", "recordings", "delete", "reindex", "receive", "doctor", "env"]


def version() -> str:
    try:
        return metadata.version("framesink")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framesink",
        description="Receive Recall.ai real-time participant video frames into S3 + DynamoDB.",
    )
    parser.add_argument("--version", action="version", version=f"framesink {version()}")
    parser.add_argument("--profile", help="AWS profile to use (default: AWS_PROFILE or the default profile)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"framesink.commands.{name}").register(sub)  # recordings: both commands
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "profile", None):
        # boto3's default session reads AWS_PROFILE: every client framesink makes uses it.
        os.environ["AWS_PROFILE"] = args.profile
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `framesink frames | head`
        from .output import quiet_broken_pipe

        quiet_broken_pipe()
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into one line
        print(f"framesink: error: {describe(exc)}", file=sys.stderr)
        if os.environ.get("FRAMESINK_DEBUG") and not isinstance(exc, (CliError, QueryError)):
            traceback.print_exc()
        return 1


def describe(exc: Exception) -> str:
    """One line for an error, saying what to do where we know."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ProfileNotFound,
    )

    if isinstance(exc, QueryError):
        # The core's query checks name the parameter: say which option it came from.
        return f"--{exc.param}: {exc.detail}"
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, EndpointConnectionError):
        return (f"cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}: is `framesink local` still running "
                "(with --local), or are your region and network right?")
    if isinstance(exc, (NoCredentialsError, ProfileNotFound)):
        return f"{exc} (aws configure, AWS_PROFILE or --profile)"
    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_REGION, --region, or a region in your profile"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"AWS refused {exc.operation_name}: {err.get('Code')}: {err.get('Message')}"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {exc}"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"unexpected {type(exc).__name__}: {exc} (FRAMESINK_DEBUG=1 shows the traceback)"


class CliError(Exception):
    """An error the user can act on; printed without a traceback."""


def need_extra(extra: str, *modules: str, what: str) -> None:
    """Stop with the pip line to run when ``what`` needs an optional extra that is not installed
    (pyproject.toml: local = moto + obstore, video = PyAV)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(f"{what} needs {', '.join(missing)}, which this install lacks: "
                       f"pip install 'framesink[{extra}]' (or [all])")
