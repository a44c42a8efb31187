"""$disconnect: record how the connection ended (close code and reason)."""

from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    ctx = event["requestContext"]  # a plain dict, as in ingest.py (cold start)
    logger.append_keys(connection_id=ctx["connectionId"])
    code, reason = ctx.get("disconnectStatusCode"), ctx.get("disconnectReason")
    service().connections.closed(ctx["connectionId"], status_code=code, reason=reason)
    logger.info("connection closed", extra={"close_code": code, "close_reason": reason})
    # All closes, and by close code as a dimension: 1009 (too big) and 1011 (server error) alarm.
    count("ConnectionClosed")
    count_with_dimension("ConnectionClosed", "code", str(code if code is not None else 1006))
    return {"statusCode": 200}
