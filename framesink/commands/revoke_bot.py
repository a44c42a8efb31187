"""`framesink revoke-bot --bot-id ID`: revoke every connection token of a bot.

New connections with its URL are refused (403) from then on; a connection already open on
the container receiver is closed with 1008 within a minute (it checks open connections' bot
tokens again), one on API Gateway stays open until it ends (the token is checked only at
$connect). Writes straight
to the index table with framesink_core's TokenStore, using your AWS credentials: the
deployed stack's table (its TableName output), or the `framesink local` stack with --local.
"""

from __future__ import annotations

import argparse

from .. import target
from ..cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("revoke-bot", help="revoke a bot's connection tokens", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bot-id", required=True, help="the Recall bot id create-bot printed")
    target.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from framesink_core.access.auth import TokenStore
    from framesink_core.shared.schema import ID_PATTERN

    if not ID_PATTERN.fullmatch(args.bot_id):
        raise CliError(f"--bot-id must match {ID_PATTERN.pattern}, got {args.bot_id!r}")
    where = target.resolve(args, need=("table",))
    try:
        revoked = TokenStore(where.table, where.client("dynamodb")).revoke(args.bot_id)
    except (ClientError, BotoCoreError) as exc:
        raise CliError(f"cannot revoke the tokens of bot {args.bot_id}: {exc}") from None
    if not revoked:
        raise CliError(f"bot {args.bot_id} has no tokens in table {where.table} (unknown bot, or expired)")
    print(f"revoked {revoked} token(s) of bot {args.bot_id}; new connections with its URL are refused, open ones "
          "on the container receiver are closed within a minute")
    return 0
