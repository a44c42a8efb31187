"""$connect: authenticate the bot before anything else, then record the connection."""

from framesink_core.access.auth import AuthError
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    ctx = event["requestContext"]  # a plain dict, as in ingest.py (cold start)
    source_ip = ctx["identity"]["sourceIp"]
    logger.append_keys(connection_id=ctx["connectionId"])
    svc = service()
    count("ConnectionAttempt")
    # `?token=` exactly, as the container receiver reads it (query names are case-sensitive);
    # header names are matched case-insensitively by auth itself.
    try:
        principal = svc.authenticator.authenticate(event.get("queryStringParameters"), event.get("headers") or {})
    except AuthError as exc:
        logger.warning("connection refused", extra={"reason": exc.reason, "detail": exc.detail,
                                                     "source_ip": source_ip})
        count_with_dimension("ConnectionRefused", "reason", exc.reason)
        return {"statusCode": exc.status, "body": exc.reason}
    svc.connections.opened(
        ctx["connectionId"],
        bot_id=principal.bot_id,
        method=principal.method,
        source_ip=source_ip,
        connected_at_ms=ctx["connectedAt"],
    )
    logger.info("connection accepted", extra={"bot_id": principal.bot_id, "auth": principal.method,
                                              "signed": principal.signed})
    count("ConnectionAccepted")
    return {"statusCode": 200}
