"""The canary: every 5 minutes, the handshake a Recall bot makes, through the public URL.

Two handshakes: without a token (expects 401: the receiver, not CloudFront or the ALB, is
answering) and with a token minted for this run (expects 101), closed at once. Each run puts
``CanaryOk`` (1 or 0) and ``CanaryHandshakeMs`` in the framesink namespace; the stack alarms
after 3 failed runs in a row. It watches the CloudFront -> ALB -> receiver path in every
region, where CloudFront's own metrics (us-east-1 only) do not.

The token lives 2 minutes (TokenStore.issue, bot id ``framesink-canary``): it expires by
itself, so the canary needs no revoke and the table keeps no live canary credential.
"""

from __future__ import annotations

import os

from aws_lambda_powertools.metrics import MetricUnit

from framesink_core.access.probe import CANARY_URL_ENV, handshake
from framesink_core.shared.observability import count

from ._runtime import logger, metrics, service, tracer

CANARY_BOT_ID = "framesink-canary"
TOKEN_TTL_SECONDS = 120
TIMEOUT_SECONDS = 10.0


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    return run(os.environ[CANARY_URL_ENV])


def run(url: str) -> dict:
    """Both handshakes; the metrics and one log line; the result (no token in it)."""
    refused = handshake(url, None, timeout=TIMEOUT_SECONDS)
    token = service().tokens.issue(CANARY_BOT_ID, TOKEN_TTL_SECONDS)
    accepted = handshake(url, token, timeout=TIMEOUT_SECONDS)
    ok = refused.status == 401 and accepted.status == 101
    result = {
        "ok": ok, "url": accepted.url,
        "without_token": refused.status, "with_token": accepted.status,
        "handshake_ms": round(accepted.seconds * 1000, 1),
        "error": accepted.error or refused.error,
    }
    count("CanaryOk", 1 if ok else 0)
    if accepted.status is not None:
        count("CanaryHandshakeMs", accepted.seconds * 1000, unit=MetricUnit.Milliseconds)
    (logger.info if ok else logger.error)("canary " + ("passed" if ok else "failed"), extra=result)
    return result
