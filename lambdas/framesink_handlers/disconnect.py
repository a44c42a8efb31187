"""$disconnect: record how the connection ended (close code and reason)."""

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source

from framesink_core.observability import count

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=APIGatewayWebSocketEvent)
def handler(event: APIGatewayWebSocketEvent, context):
    ctx = event.request_context
    logger.append_keys(connection_id=ctx.connection_id)
    code, reason = ctx.disconnect_status_code, ctx.disconnect_reason
    service().connections.closed(ctx.connection_id, status_code=code, reason=reason)
    logger.info("connection closed", extra={"close_code": code, "close_reason": reason})
    count("ConnectionClosed")
    return {"statusCode": 200}
