"""`framesink create-bot`: a Recall bot that streams its participants' frames to framesink.

Deployed (default): POST /bots on the stack's IAM-authenticated HTTP API, whose URL is a
CloudFormation output, signed with SigV4 from the usual AWS credentials.
--local: the create-bot handler runs in this process against the `framesink local`
stack named in the state file; the Recall API key comes from RECALL_API_KEY.

Prints the bot id, its status and the connection URL without its token; never the token or
the API key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace
from urllib.parse import urlsplit

from .. import target
from ..cli import CliError

API_URL_OUTPUT = "BotApiUrl"  # infra/bot_api.py
LOCAL_SECRET_NAME = "framesink/recall-api-key"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create-bot", help="create a Recall bot that streams frames to framesink",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meeting-url", required=True, help="the meeting's http(s) URL (Zoom, Meet, Teams, ...)")
    p.add_argument("--bot-name", help="the name shown in the meeting (1-100 characters)")
    p.add_argument("--join-at", help="ISO 8601 time with timezone to join at, e.g. 2026-11-23T19:00:00Z")
    p.add_argument("--metadata", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="metadata Recall echoes in every event (repeatable)")
    p.add_argument("--events", nargs="+", action="extend", default=[], metavar="EVENT",
                   help="what the bot sends, by group (video, participants, transcript, audio; comma-separated or "
                   "repeated) or event name (e.g. participant_events.join). Default: video,participants,transcript "
                   "(what the stack stores; transcript turns on Recall's realtime transcription, billed per hour)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    target.add_arguments(p, storage=False)
    p.add_argument("--recall-base-url", help="with --local: any Recall-compatible server "
                   "(default: the region's https://<region>.recall.ai)")
    p.add_argument("--recall-region", default="us-east-1", help="with --local: Recall region (default us-east-1)")
    p.add_argument("--ws-url", help="with --local: the URL Recall should connect to instead of the state "
                   "file's ws_url (a public wss:// tunnel to the local stack: Recall refuses localhost)")
    p.set_defaults(func=run)


def request_body(args: argparse.Namespace) -> dict:
    body: dict = {"meeting_url": args.meeting_url}
    if args.bot_name is not None:
        body["bot_name"] = args.bot_name
    if args.join_at is not None:
        body["join_at"] = args.join_at
    if args.metadata:
        pairs = {}
        for item in args.metadata:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CliError(f"--metadata takes KEY=VALUE, got {item!r}")
            pairs[key] = value
        body["metadata"] = pairs
    if args.events:
        body["events"] = [name.strip() for item in args.events for name in item.split(",") if name.strip()]
    return body


def run(args: argparse.Namespace) -> int:
    body = request_body(args)
    if not args.local and (args.recall_base_url or args.ws_url):
        raise CliError("--recall-base-url and --ws-url only apply with --local; the deployed function's "
                       "come from the stack (context recallRegion)")
    if args.local and not os.environ.get("RECALL_API_KEY"):
        raise CliError("set RECALL_API_KEY to your Recall API key (it is read from the environment, "
                       "stored only in the local stack's Secrets Manager, and never printed)")
    where = target.resolve(args, need=())
    if where.local:
        status, answer = create_local(body, args, where)
    else:
        url = where.output(API_URL_OUTPUT)
        status, answer = signed_request("POST", url.rstrip("/") + "/bots", body, where.region)
    if status != 201:
        raise CliError(describe_failure(status, answer))
    if args.json:
        print(json.dumps(answer))
    else:
        expires = datetime.fromtimestamp(answer["token_expires_at"], timezone.utc).isoformat().replace("+00:00", "Z")
        print(f"bot_id          {answer['bot_id']}")
        print(f"status          {answer['status']}")
        print(f"connection_url  {answer['connection_url']}  (its ?token= is withheld)")
        print(f"token_expires   {expires}")
    return 0


def describe_failure(status: int, answer: object) -> str:
    if not isinstance(answer, dict):
        return f"create-bot failed (HTTP {status}): {str(answer)[:500]}"
    what = answer.get("error") or answer.get("message") or "error"
    where = f" [{answer['field']}]" if answer.get("field") else ""
    detail = answer.get("detail") or ""
    extra = f" (retry after {answer['retry_after']} s)" if answer.get("retry_after") is not None else ""
    return f"create-bot failed (HTTP {status}): {what}{where}: {detail}{extra}"


# --- deployed: the stack's HTTP API, SigV4-signed --------------------------------------------


def signed_request(method: str, url: str, body: dict | None, region: str | None) -> tuple[int, object]:
    """One SigV4-signed (execute-api) request with the caller's AWS credentials."""
    import boto3
    import urllib3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = boto3.Session(region_name=region)
    credentials = session.get_credentials()
    if credentials is None:
        raise CliError("no AWS credentials found (aws configure, AWS_PROFILE, or environment)")
    # The region the API lives in is in its default hostname: <id>.execute-api.<region>.amazonaws.com
    match = re.match(r"[^.]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$", urlsplit(url).hostname or "")
    signing_region = match.group(1) if match else (session.region_name or "us-east-1")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", signing_region).add_auth(request)
    try:
        resp = urllib3.PoolManager().request(
            method, url, body=data, headers=dict(request.headers.items()), retries=False,
            timeout=urllib3.Timeout(connect=5, read=40),  # the API answers within its 30 s limit
        )
    except urllib3.exceptions.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    try:
        return resp.status, json.loads(resp.data or b"null")
    except ValueError:
        return resp.status, resp.data.decode("utf-8", "replace")


# --- local: the handler in this process, against `framesink local` -------------------------


def put_local_api_key(where: target.Target, api_key: str) -> str:
    """The key into the local stack's Secrets Manager, where the handler reads it (as in AWS)."""
    sm = where.client("secretsmanager")
    try:
        return sm.create_secret(Name=LOCAL_SECRET_NAME, SecretString=api_key)["ARN"]
    except sm.exceptions.ResourceExistsException:
        return sm.put_secret_value(SecretId=LOCAL_SECRET_NAME, SecretString=api_key)["ARN"]


def create_local(body: dict, args: argparse.Namespace, where: target.Target) -> tuple[int, dict]:
    """The create-bot handler in this process, with the Lambda environment the local stack gives
    its functions (framesink.local)."""
    from framesink_core.meeting.recall import base_url_for, without_token

    from ..local import lambda_environment, local_lambda_env

    api_key = os.environ["RECALL_API_KEY"]  # checked in run()
    state = where.state
    try:
        base_url = args.recall_base_url or base_url_for(args.recall_region)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    env = {
        **local_lambda_env(state["endpoint_url"], state["region"]),
        "FRAMESINK_BUCKET": state["bucket"],
        "FRAMESINK_TABLE": state["table"],
        # The local stack's URL carries its shared token: the bot gets its own instead.
        "FRAMESINK_WS_URL": without_token(args.ws_url or state["ws_url"]),
        "FRAMESINK_RECALL_BASE_URL": base_url,
        "FRAMESINK_RECALL_API_KEY_SECRET_ID": put_local_api_key(where, api_key),
    }
    # The handler's log lines are for Lambda; here they would mix into the command's output.
    with lambda_environment(env, os.environ.get("FRAMESINK_CLI_LOG_LEVEL", "WARNING"), log_stream=sys.stderr):
        from framesink_handlers import create_bot

        context = SimpleNamespace(function_name="framesink-create-bot-local", memory_limit_in_mb=256,
                                  invoked_function_arn="arn:aws:lambda:local:000000000000:function:create-bot",
                                  aws_request_id=str(uuid.uuid4()))
        with contextlib.redirect_stdout(sys.stderr):  # anything the handler prints is not our output
            result = create_bot.handler(body, context)
    return result["statusCode"], result["body"]
