"""$default: every websocket message. One call into the core; never fails the connection."""

from base64 import b64decode

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    # The event is read as the plain dict it is: Powertools' event classes would cost every
    # cold start their package's import (all ~40 event types), ~40 ms CPU, for three fields.
    connection_id = event["requestContext"]["connectionId"]
    logger.append_keys(connection_id=connection_id)
    svc = service()
    # API Gateway hands binary frames to $default base64-encoded; they are not Recall events.
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = b64decode(body)
    outcome = svc.ingestor.handle(
        body, connection_id=connection_id, bot_id=svc.connections.bot_of(connection_id)
    )
    # No route response is configured, so nothing is sent back to the bot; the status
    # code is for the Lambda's own logs and the tests.
    return {"statusCode": 500 if outcome.status == "failed" else 200, "body": outcome.status}
