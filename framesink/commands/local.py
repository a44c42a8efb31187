"""`framesink local`: the whole stack on this machine (framesink/local/ does the work)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..cli import CliError, need_extra
from ..local import APIGW_IDLE_TIMEOUT, APIGW_MAX_AGE, DEFAULT_PORT, LocalConfig, LocalStack
from ..local import write_state_file
from ..target import DEFAULT_STATE_FILE, STATE_FILE_ENV, user_state_file


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "local",
        help="run the stack locally: moto + the container receiver (or --ingress apigw: API Gateway emulation)",
        description="Start an in-process moto server (S3, DynamoDB, Secrets Manager, SQS, EventBridge), the "
        "container receiver a deploy hands bots (or, with --ingress apigw, a websocket server that emulates "
        "API Gateway: routes, event shapes, 32 KB frame / 128 KB message limits, idle timeout, maximum age, "
        "calling the real Lambda handlers), the webhook route, the export job and the slide analyzer. Writes "
        "the state file once ready; runs until Ctrl+C / SIGTERM.",
    )
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"websocket port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--moto-port", type=port_number, default=0, metavar="PORT",
                   help="moto's port, the AWS endpoint your scripts use (default 0: any free port)")
    p.add_argument("--webhook-port", type=port_number, default=0, metavar="PORT",
                   help="port of the Recall webhook route POST /recall/events (default 0: any free port)")
    p.add_argument("--token", help="connection token bots must send as ?token= (default: a random one)")
    p.add_argument("--ingress", choices=["apigw", "direct"], default="direct",
                   help="direct: the container receiver, what a deploy hands bots (default); apigw: API Gateway "
                   "emulation, its 32 KB frame limit included")
    p.add_argument("--state-file", type=Path, default=None, metavar="F",
                   help=f"where to write the connection details (default ${STATE_FILE_ENV}, else "
                   f"{DEFAULT_STATE_FILE} here, with a copy at {user_state_file()} so --local works from any "
                   "directory); refused while the stack it names still answers")
    p.add_argument("--idle-timeout", type=float, default=APIGW_IDLE_TIMEOUT, metavar="SECONDS",
                   help="close a connection after this long without a message (API Gateway: 600)")
    p.add_argument("--max-age", type=float, default=APIGW_MAX_AGE, metavar="SECONDS",
                   help="close a connection this long after it opened (API Gateway: 7200)")
    p.add_argument("--frame-queue", action="store_true",
                   help="also feed stored frames to a queue for `framesink watch` (the deploy's -c frameQueue=true); "
                   "without it, watch polls the index. Locally, a queue nobody reads slows every store as it fills")
    p.add_argument("--verbose", "-v", action="store_true", help="show the handlers' INFO logs too")
    p.set_defaults(func=run)


def port_number(text: str) -> int:
    """A TCP port for argparse: 0-65535 (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def run(args: argparse.Namespace) -> int:
    need_extra("local", "moto", "obstore", what="framesink local")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    logging.getLogger("local_stack").setLevel(logging.INFO)  # connections opened, refused, closed
    logging.getLogger("local_stack.websockets").setLevel(logging.WARNING)
    state_file = args.state_file or Path(os.environ.get(STATE_FILE_ENV) or DEFAULT_STATE_FILE)
    copy = user_state_file() if args.state_file is None and not os.environ.get(STATE_FILE_ENV) else None
    refuse_a_live_stack(state_file)
    config = LocalConfig(
        port=args.port, ingress=args.ingress, token=args.token, state_file=state_file, idle_timeout=args.idle_timeout,
        moto_port=args.moto_port, webhook_port=args.webhook_port,
        max_age=args.max_age, handler_log_level="INFO" if args.verbose else "WARNING", frame_queue=args.frame_queue,
    )
    return asyncio.run(_serve(config, copy))


def refuse_a_live_stack(path: Path) -> None:
    """A state file whose moto endpoint still answers belongs to a running `framesink local`:
    replacing it would strand that stack (its webhook secret and token are only in there)."""
    try:
        state = json.loads(path.read_text())
        endpoint = state["endpoint_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # none, or not ours to worry about: it is replaced
    try:
        with urllib.request.urlopen(endpoint, timeout=1.0):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: alive
    except (urllib.error.URLError, OSError, ValueError):
        return  # nothing there any more
    raise CliError(f"a framesink local stack is still running with state file {path} (websocket "
                   f"{str(state.get('ws_url', '?')).split('?')[0]}); stop it first, or start this one with "
                   "--state-file elsewhere")


async def _serve(config: LocalConfig, copy: Path | None = None) -> int:
    stack = LocalStack(config)
    try:
        state = await stack.start()
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{config.port} ({exc.strerror or exc}); "
                       "try --port 0 for any free port") from None
    if copy is not None and copy.resolve() != Path(config.state_file).resolve():
        write_state_file(copy, state)  # --local from any directory finds this stack
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if config.ingress == "direct":
        what = "the container receiver, no API Gateway limits"
        limits = f"frames up to {config.max_frame_bytes // 1024 // 1024} MB (the configured maximum)"
    else:
        what = "API Gateway WebSocket emulation, real Lambda handlers"
        limits = (f"32 KB frame / 128 KB message (close 1009), binary (close 1003), "
                  f"idle {config.idle_timeout:g} s / max age {config.max_age:g} s (close 1001)")
    print(
        f"framesink local is running ({what})\n"
        f"  websocket   {state['ws_url']}\n"
        f"  AWS (moto)  {state['endpoint_url']}  bucket {state['bucket']}, table {state['table']}\n"
        f"  limits      {limits}\n"
        f"  webhooks    POST {state['webhook_url']} (Recall's bot status events, signed; secret in the state file)\n"
        f"  frame queue {state['frame_queue_url'] or 'off (--frame-queue turns it on; watch polls the index)'}\n"
        f"  state file  {config.state_file}" + (f" (and {copy})" if copy is not None else "") + "\n"
        + (f"Try:  framesink simulate --webhooks    (a bot with camera-size frames and its signed status webhooks;\n"
           f"      --slides 3 shares a deck of real-size slides)\n" if config.ingress == "direct" else
           f"Try:  framesink simulate --small --webhooks    (frames that fit API Gateway's 32 KB, and the bot's\n"
           f"      signed status webhooks)\n") +
        f"      framesink watch --local --recording <recording id>\n"
        f"      framesink recording --local <recording id>\n"
        f"Ctrl+C stops it (in-flight frames are finished first).",
        flush=True,
    )
    await stop.wait()
    print("stopping: closing connections and finishing in-flight handler calls...", file=sys.stderr, flush=True)
    stats = await stack.stop()
    # One JSON line a script (or a test) can check: every message received has an outcome.
    print(json.dumps({"framesink_local": "stopped", **stats}), flush=True)
    return 0
