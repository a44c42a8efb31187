"""`framesink env`: the stack's settings as shell exports, for your own scripts and analyzers.

    eval "$(framesink env --local)"     # then boto3, the AWS CLI and framesink read them

Locally they name moto (AWS_ENDPOINT_URL, fake credentials: moto takes any), the bucket,
table, websocket URL and the frame queue; for a deployed stack the bucket, table, region and
URLs from its outputs (your AWS credentials stay yours). Values are shell-quoted.
"""

from __future__ import annotations

import argparse
import shlex

from .. import target
from ..local import FAKE_CREDENTIALS  # what the local Lambdas get: moto takes any


def register(sub) -> None:
    p = sub.add_parser("env", help="print the stack's settings as shell exports (eval \"$(framesink env --local)\")",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target.add_arguments(p, storage=False)
    p.set_defaults(func=run)


def exports(args: argparse.Namespace) -> dict[str, str]:
    where = target.resolve(args)
    values = {"FRAMESINK_BUCKET": where.bucket, "FRAMESINK_TABLE": where.table, "AWS_REGION": where.region,
              "AWS_DEFAULT_REGION": where.region}
    if where.local:
        state = where.state
        values.update({"AWS_ENDPOINT_URL": where.endpoint_url, **FAKE_CREDENTIALS,
                       "FRAMESINK_WS_URL": state.get("ws_url"), "FRAMESINK_FRAME_QUEUE_URL": state.get("frame_queue_url"),
                       "FRAMESINK_STATE_FILE": str(target.find_state_file(args.state_file).resolve())})
    else:
        outputs = where.stack_outputs()
        values.update({"FRAMESINK_STACK": where.stack_name, "FRAMESINK_WS_URL": outputs.get(target.OUTPUT_WS_URL),
                       "FRAMESINK_QUERY_API_URL": outputs.get(target.OUTPUT_QUERY_API_URL),
                       "FRAMESINK_FRAME_QUEUE_URL": outputs.get("FrameQueueUrl")})
    return {k: v for k, v in values.items() if v}


def run(args: argparse.Namespace) -> int:
    for name, value in exports(args).items():
        print(f"export {name}={shlex.quote(str(value))}")
    return 0
