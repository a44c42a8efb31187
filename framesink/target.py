"""Which framesink stack a command talks to: one answer for every CLI command.

``--local``: the state file that `framesink local` writes (default .framesink/local.json:
``{ws_url, endpoint_url, bucket, table, token, region}``) names the moto endpoint, bucket
and table. Otherwise, for each value the first of:

1. the command line (``--bucket``, ``--table``, ``--region``),
2. the environment (``FRAMESINK_BUCKET``, ``FRAMESINK_TABLE``),
3. the deployed stack's CloudFormation outputs (``--stack-name``, default ``$FRAMESINK_STACK``
   or ``framesink-live``), read with one DescribeStacks call, only when still needed.

AWS credentials, profile, region and ``AWS_ENDPOINT_URL`` come from the usual boto3
configuration (environment, ~/.aws), never from framesink; ``--profile`` picks a profile and
``AWS_REGION`` alone names the region (boto3 itself reads only ``AWS_DEFAULT_REGION``).

Usage in a command module::

    def register(sub):
        p = sub.add_parser(...)
        target.add_arguments(p)                  # --local --state-file --stack-name --region --bucket --table
    def run(args):
        t = target.resolve(args)                 # raises CliError with what to do
        t.index().frames(...); t.store(); t.client("secretsmanager"); t.output("BotApiUrl")
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from framesink_core.ingest.storage import FrameStore
from framesink_core.shared.items import BOTO_CONFIG
from framesink_core.shared.settings import Settings

from .cli import CliError

DEFAULT_STATE_FILE = Path(".framesink/local.json")  # `framesink local` writes it (docs/cli.md)
STATE_FILE_ENV = "FRAMESINK_STATE_FILE"


def user_state_file() -> Path:
    """The per-user copy `framesink local` also writes when it uses the default place, so
    `--local` works from any directory: $XDG_STATE_HOME/framesink/local.json (default
    ~/.local/state/framesink/local.json)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "framesink" / "local.json"


def state_file_candidates(explicit: Path | None = None) -> list[Path]:
    """Where `--local` looks, in order: --state-file, $FRAMESINK_STATE_FILE, .framesink/local.json
    in this directory or any above it, the per-user copy."""
    if explicit is not None:
        return [Path(explicit)]
    if os.environ.get(STATE_FILE_ENV):
        return [Path(os.environ[STATE_FILE_ENV])]
    here = Path.cwd()
    return [*(d / DEFAULT_STATE_FILE for d in (here, *here.parents)), user_state_file()]


def find_state_file(explicit: Path | None = None) -> Path:
    """The first existing candidate (state_file_candidates); if none exists, the first one, so
    the error names where it looked."""
    candidates = state_file_candidates(explicit)
    return next((c for c in candidates if c.exists()), candidates[0])
STACK_ENV = "FRAMESINK_STACK"
DEFAULT_STACK = "framesink-live"  # infra/settings.py: "framesink-<stage>", stage "live"
# CloudFormation output keys (infra/stack.py: "Output ids are a contract for the CLI").
OUTPUT_BUCKET = "BucketName"
OUTPUT_TABLE = "TableName"
OUTPUT_REGION = "Region"
OUTPUT_FRAME_EXPIRY_DAYS = "FrameExpiryDays"
OUTPUT_WS_URL = "WebSocketUrl"
OUTPUT_QUERY_API_URL = "QueryApiUrl"
STATE_KEYS = ("ws_url", "endpoint_url", "bucket", "table", "region")


def default_stack() -> str:
    return os.environ.get(STACK_ENV) or DEFAULT_STACK


def add_arguments(parser: argparse.ArgumentParser, *, storage: bool = True) -> None:
    """The target options. ``storage``: also --bucket/--table (commands that read the data)."""
    group = parser.add_argument_group("which stack")
    group.add_argument("--local", action="store_true", help="use the `framesink local` stack (its state file)")
    group.add_argument("--state-file", type=Path, default=None, metavar="F",
                       help=f"with --local: the local stack's state file (default ${STATE_FILE_ENV}, else "
                       f"{DEFAULT_STATE_FILE} here or in a directory above, else {user_state_file()})")
    group.add_argument("--stack-name", "--stack", dest="stack_name", default=None, metavar="NAME",
                       help=f"deployed stack whose outputs name the resources (default ${STACK_ENV} "
                       f"or {DEFAULT_STACK})")
    group.add_argument("--region", help="AWS region of the deployed stack (default: $AWS_REGION, else your AWS "
                       "configuration)")
    # Also accepted before the command (framesink --profile P ...); SUPPRESS keeps that value.
    group.add_argument("--profile", default=argparse.SUPPRESS, help="AWS profile (default: AWS_PROFILE)")
    if storage:
        group.add_argument("--bucket", help="frames bucket (default $FRAMESINK_BUCKET, else the stack output)")
        group.add_argument("--table", help="index table (default $FRAMESINK_TABLE, else the stack output)")


@dataclass
class Target:
    local: bool
    region: str | None = None
    endpoint_url: str | None = None
    bucket: str | None = None
    table: str | None = None
    stack_name: str | None = None
    state: dict = field(default_factory=dict)  # the local state file, with --local
    outputs: dict = field(default_factory=dict)  # stack outputs, when they were read

    def client(self, service: str, *, signature_version: str | None = None):
        """A boto3 client for this target, with framesink's retry/timeout settings
        (``signature_version="s3v4"`` for an S3 client that presigns URLs)."""
        config = BOTO_CONFIG.merge(Config(signature_version=signature_version)) if signature_version else BOTO_CONFIG
        kwargs: dict = {"region_name": self.region, "config": config}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.local:
            # moto accepts any credentials; do not make a laptop without AWS set up fail.
            kwargs["aws_access_key_id"] = os.environ.get("AWS_ACCESS_KEY_ID") or "testing"
            kwargs["aws_secret_access_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY") or "testing"
        return boto3.client(service, **kwargs)

    def store(self) -> FrameStore:
        self.require("bucket", "table")
        return FrameStore(self.bucket, self.table, self.client("s3"), self.client("dynamodb"),
                          frame_expiry_days=self.frame_expiry_days())

    def frame_expiry_days(self) -> int:
        """The days index items live (reindex writes their expires_at): $FRAMESINK_FRAME_EXPIRY_DAYS,
        else the FrameExpiryDays output of the stack (--stack-name) if it can be read, else the
        default, which the local stack uses too."""
        default = Settings.from_env().frame_expiry_days  # $FRAMESINK_FRAME_EXPIRY_DAYS or 30
        if os.environ.get("FRAMESINK_FRAME_EXPIRY_DAYS") or self.local:
            return default
        try:
            outputs = self.stack_outputs()
        except CliError:  # no such stack: the bucket and table were named directly
            return default
        return int(outputs.get(OUTPUT_FRAME_EXPIRY_DAYS, default))

    def index(self):
        from framesink_core.read.query import FrameIndex

        self.require("table")
        return FrameIndex(self.table, self.client("dynamodb"))

    def output(self, key: str) -> str:
        """A stack output (deployed) or state-file value (local), or a CliError naming it."""
        if self.local:
            value = self.state.get(key)
            where = "the local state file"
        else:
            value = self.stack_outputs().get(key)
            where = f"stack {self.stack_name or default_stack()}'s outputs"
        if not value:
            raise CliError(f"{key} is not in {where}")
        return value

    def stack_outputs(self) -> dict[str, str]:
        """The deployed stack's outputs, read once (DescribeStacks) when first needed."""
        if not self.outputs:
            self.outputs = stack_outputs(self.stack_name or default_stack(), self.region)
        return self.outputs

    def require(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise CliError(f"no {' or '.join(missing)} given (use --{missing[0]} or --local)")


def read_state(path: Path | None = None) -> dict:
    """The `framesink local` state file (``path``, else found: find_state_file), checked."""
    if path is None:
        path = find_state_file()
        if not path.exists() and not os.environ.get(STATE_FILE_ENV):
            raise CliError(f"no local stack found (looked for {DEFAULT_STATE_FILE} here and in every directory "
                           f"above, and {user_state_file()}): start one with `framesink local`, or pass --state-file")
    path = Path(path)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no local stack state at {path}: start one with `framesink local`") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"{path} is not a framesink local state file: {exc}") from None
    if not isinstance(state, dict):
        raise CliError(f"{path} is not a framesink local state file")
    missing = [k for k in STATE_KEYS if not isinstance(state.get(k), str) or not state.get(k)]
    if missing:
        raise CliError(f"{path} lacks {', '.join(missing)} (or they are not text): start `framesink local` again")
    return state


def stack_outputs(stack_name: str, region: str | None = None) -> dict[str, str]:
    """OutputKey -> OutputValue of a deployed stack (one DescribeStacks call)."""
    try:
        cfn = boto3.client("cloudformation", region_name=region, config=BOTO_CONFIG)
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise CliError(f"cannot read stack {stack_name}: {message} (deployed? right --region/--stack-name? "
                       f"or pass --bucket/--table, or --local)") from None
    except BotoCoreError as exc:
        raise CliError(f"cannot read stack {stack_name}: {exc} (or pass --bucket/--table, or --local)") from None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def resolve(args: argparse.Namespace, *, need: tuple[str, ...] = ("bucket", "table")) -> Target:
    """The target the arguments name; ``need`` lists what the command cannot do without."""
    if getattr(args, "local", False):
        state = read_state(args.state_file)
        return Target(local=True, region=state["region"], endpoint_url=state["endpoint_url"],
                      bucket=state["bucket"], table=state["table"], state=state)
    if getattr(args, "profile", None):
        os.environ["AWS_PROFILE"] = args.profile
    target = Target(
        local=False,
        region=getattr(args, "region", None) or os.environ.get("AWS_REGION") or None,
        bucket=getattr(args, "bucket", None) or os.environ.get("FRAMESINK_BUCKET") or None,
        table=getattr(args, "table", None) or os.environ.get("FRAMESINK_TABLE") or None,
        stack_name=getattr(args, "stack_name", None) or default_stack(),
    )
    if any(not getattr(target, n) for n in need if n in ("bucket", "table")):
        outputs = target.stack_outputs()
        target.bucket = target.bucket or outputs.get(OUTPUT_BUCKET)
        target.table = target.table or outputs.get(OUTPUT_TABLE)
        target.region = target.region or outputs.get(OUTPUT_REGION)
    target.require(*[n for n in need if n in ("bucket", "table")])
    return target


def same_stack(args: argparse.Namespace) -> str:
    """The options that name the stack ``args`` named, for a command a hint suggests next
    (`framesink slides --recording R --local`): a hint without them talks to another stack."""
    if getattr(args, "local", False):
        state_file = getattr(args, "state_file", None)
        return " --local" + (f" --state-file {shlex.quote(str(state_file))}" if state_file else "")
    flags = ""
    for name in ("stack_name", "region", "bucket", "table"):
        value = getattr(args, name, None)
        if value:
            flags += f" --{name.replace('_', '-')} {shlex.quote(str(value))}"
    return flags
