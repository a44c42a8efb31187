"""$disconnect: record how the connection ended (close code and reason)."""

from framesink_core.observability import count

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict, context):
    ctx = event["requestContext"]  # a plain dict, as in ingest.py (cold start)
    logger.append_keys(connection_id=ctx["connectionId"])
    code, reason = ctx.get("disconnectStatusCode"), ctx.get("disconnectReason")
    service().connections.closed(ctx["connectionId"], status_code=code, reason=reason)
    logger.info("connection closed", extra={"close_code": code, "close_reason": reason})
    count("ConnectionClosed")
    return {"statusCode": 200}
