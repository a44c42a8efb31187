"""create-bot: ``POST /bots`` creates a Recall bot that streams to this stack's ingress with
its own token; ``GET /bots/{id}`` returns the bot's status from Recall.

Two ways in: the HTTP API (API Gateway v2 payload, IAM-authenticated) or a direct Lambda
invoke whose event is just the JSON body of ``POST /bots`` (answered as
``{"statusCode": N, "body": {...}}``). The work is framesink_core.meeting.recall's.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import orjson
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from framesink_core.meeting.recall import (
    BotRequest,
    ConfigError,
    InvalidBotRequest,
    RecallError,
    TokenRegistrationError,
    bot_status,
    create_streaming_bot,
)
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer

app = APIGatewayHttpResolver()


def create(body: object) -> tuple[int, dict]:
    request = BotRequest.from_json(body)
    svc = service()
    s = svc.settings
    logger.append_keys(meeting_host=urlsplit(request.meeting_url).hostname)  # not the URL: it may hold a passcode
    created = create_streaming_bot(
        request,
        client=svc.recall,
        tokens=svc.tokens,
        ws_url=s.ws_url,
        token_ttl_seconds=s.bot_token_ttl_seconds,
        endpoint_form=s.recall_endpoint_form,
    )
    logger.info("bot created", extra={"bot_id": created.bot_id, "status": created.status,
                                      "token_expires_at": created.token_expires_at})
    count("BotCreated")
    return 201, created.summary()


def get(bot_id: str) -> tuple[int, dict]:
    bot = service().recall.get_bot(bot_id)
    return 200, {"bot_id": bot.get("id", bot_id), "status": bot_status(bot),
                 "status_changes": bot.get("status_changes") or [],
                 "meeting_url": bot.get("meeting_url"), "join_at": bot.get("join_at")}


def answer(action, *args) -> tuple[int, dict]:
    """Run one action; every failure becomes one log line with a reason, a metric and a
    status code whose body says what is wrong."""
    # Every request, whatever its outcome: the denominator of the failure metrics below (and
    # it keeps Powertools from warning about an empty metric batch on failed requests).
    count("BotRequest")
    try:
        return action(*args)
    except InvalidBotRequest as exc:
        logger.warning("bot request rejected", extra={"reason": "invalid_request", "field": exc.field,
                                                       "detail": exc.detail})
        count_with_dimension("BotRequestRejected", "reason", "invalid_request")
        return 400, {"error": "invalid_request", "field": exc.field, "detail": exc.detail}
    except RecallError as exc:
        logger.warning("recall refused", extra={"reason": exc.reason, "recall_status": exc.status,
                                                "detail": exc.detail})
        count_with_dimension("RecallError", "reason", exc.reason)
        body = {"error": f"recall_{exc.reason}", "recall_status": exc.status, "detail": exc.detail}
        if exc.retry_after is not None:
            body["retry_after"] = round(exc.retry_after, 1)
        return exc.gateway_status, body
    except ConfigError as exc:
        logger.error("create-bot misconfigured", extra={"reason": "misconfigured", "detail": str(exc)})
        count_with_dimension("BotRequestFailed", "reason", "misconfigured")
        return 500, {"error": "misconfigured", "detail": str(exc)}
    except TokenRegistrationError as exc:
        # The bot exists at Recall but would be refused at $connect: say which one.
        logger.error("token not registered", extra={"reason": "token_not_registered", "bot_id": exc.bot_id,
                                                    "detail": exc.detail})
        count_with_dimension("BotRequestFailed", "reason", "token_not_registered")
        return 500, {"error": "token_not_registered", "bot_id": exc.bot_id, "detail": exc.detail}


def _response(status: int, body: dict) -> Response:
    headers = {"Retry-After": str(int(body["retry_after"] + 0.999))} if "retry_after" in body else None
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=headers)


@app.post("/bots")
def post_bots():
    raw = app.current_event.decoded_body or ""
    try:
        body = orjson.loads(raw)  # refuses nesting past 1024 levels (json.loads would recurse)
    except orjson.JSONDecodeError:
        return _response(*answer(_raise, InvalidBotRequest("body", "is not valid JSON")))
    return _response(*answer(create, body))


@app.get("/bots/<bot_id>")
def get_bots(bot_id: str):
    return _response(*answer(get, bot_id))


def _raise(exc: Exception):
    raise exc


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    if isinstance(event, dict) and "routeKey" in event and "requestContext" in event:
        iam = (event["requestContext"].get("authorizer") or {}).get("iam") or {}
        logger.append_keys(caller=iam.get("userArn"))  # who asked, for the audit trail
        return app.resolve(event, context)
    status, body = answer(create, event)
    return {"statusCode": status, "body": body}
