"""`framesink revoke-bot --bot-id ID`: revoke every connection token of a bot.

New connections with its URL are refused (403) from then on; a connection already open
stays open until it ends (API Gateway checks the token only at $connect). Writes straight
to the index table with framesink_core's TokenStore: the stack's table (CloudFormation
output) and your AWS credentials, or the `framesink local` stack with --local.
"""

from __future__ import annotations

import argparse

from ..cli import CliError
from .create_bot import TABLE_OUTPUT, _target_arguments, local_client, read_state, stack_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("revoke-bot", help="revoke a bot's connection tokens", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bot-id", required=True, help="the Recall bot id create-bot printed")
    _target_arguments(p)
    p.add_argument("--table", help="the index table (default: the stack's BotTokenTableName output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from framesink_core.auth import TokenStore
    from framesink_core.schema import ID_PATTERN

    if not ID_PATTERN.fullmatch(args.bot_id):
        raise CliError(f"--bot-id must match {ID_PATTERN.pattern}, got {args.bot_id!r}")
    if args.local:
        state = read_state(args.state_file)
        table, dynamodb = args.table or state["table"], local_client(state, "dynamodb")
    else:
        table = args.table or stack_outputs(args.stack_name, args.region).get(TABLE_OUTPUT)
        if not table:
            raise CliError(f"stack {args.stack_name!r} has no {TABLE_OUTPUT} output; pass --table")
        dynamodb = boto3.client("dynamodb", region_name=args.region)
    try:
        revoked = TokenStore(table, dynamodb).revoke(args.bot_id)
    except (ClientError, BotoCoreError) as exc:
        raise CliError(f"cannot revoke the tokens of bot {args.bot_id}: {exc}") from None
    if not revoked:
        raise CliError(f"bot {args.bot_id} has no tokens in table {table} (unknown bot, or expired)")
    print(f"revoked {revoked} token(s) of bot {args.bot_id}; new connections with its URL are refused")
    return 0
