"""Recall's bot status webhooks: ``POST /recall/events`` on a public HTTP API (no IAM: Recall
cannot sign SigV4; every delivery must carry a valid, fresh Svix signature instead).

Answers fast (Svix gives up on a delivery after 15 s): 200 for a delivery recorded, a
duplicate (same webhook-id) or an event we do not act on; 401 for a missing, bad or stale
signature (nothing stored); 400 for a signed body that is not a status event. The work is
framesink_core.meeting.meetings'.
"""

from __future__ import annotations

import json
from base64 import b64decode

from framesink_core.access.auth import AuthError
from framesink_core.meeting.meetings import KNOWN, WebhookError
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer


def _answer(status: int, body: dict) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    count("WebhookReceived")
    body = event.get("body") or ""
    raw = b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8", "surrogatepass")
    headers = event.get("headers") or {}
    try:
        result = service().meetings.handle(headers, raw)
    except AuthError as exc:
        logger.warning("webhook refused", extra={"reason": exc.reason, "detail": exc.detail})
        count_with_dimension("WebhookRefused", "reason", exc.reason)
        # 401 for every signature problem (missing, bad, stale): Svix retries it, as it should
        # while the secret is being fixed; 413 for a body over the limit.
        return _answer(413 if exc.reason == "too_large" else 401, {"error": exc.reason})
    except WebhookError as exc:
        logger.warning("webhook rejected", extra={"reason": exc.reason, "detail": exc.detail})
        count_with_dimension("WebhookRejected", "reason", exc.reason)
        return _answer(exc.status, {"error": exc.reason, "detail": exc.detail})
    if result["result"] == "recorded":
        count_with_dimension("BotStatus", "status", result["status"] if result["status"] in KNOWN
                             else "endpoint" if result.get("endpoint") else "other")
        logger.info("bot status", extra={k: result[k] for k in ("bot_id", "status", "recordings")})
    elif result["result"] == "ignored":
        count_with_dimension("WebhookIgnored", "event", "other")
        logger.info("webhook ignored", extra={"event": result["event"]})
    else:
        count("WebhookDuplicate")
    return _answer(200, {"result": result["result"]})
