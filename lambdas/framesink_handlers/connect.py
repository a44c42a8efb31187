"""$connect: authenticate the bot before anything else, then record the connection."""

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source

from framesink_core.auth import AuthError
from framesink_core.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=APIGatewayWebSocketEvent)
def handler(event: APIGatewayWebSocketEvent, context):
    ctx = event.request_context
    logger.append_keys(connection_id=ctx.connection_id)
    svc = service()
    count("ConnectionAttempt")
    try:
        principal = svc.authenticator.authenticate(event.query_string_parameters, event.headers)
    except AuthError as exc:
        logger.warning("connection refused", extra={"reason": exc.reason, "detail": exc.detail,
                                                     "source_ip": ctx.identity.source_ip})
        count_with_dimension("ConnectionRefused", "reason", exc.reason)
        return {"statusCode": exc.status, "body": exc.reason}
    svc.connections.opened(
        ctx.connection_id,
        bot_id=principal.bot_id,
        method=principal.method,
        source_ip=ctx.identity.source_ip,
        connected_at_ms=ctx.connected_at,
    )
    logger.info("connection accepted", extra={"bot_id": principal.bot_id, "auth": principal.method,
                                              "signed": principal.signed})
    count("ConnectionAccepted")
    return {"statusCode": 200}
