"""$default: every websocket message. One call into the core; never fails the connection."""

from base64 import b64decode

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=APIGatewayWebSocketEvent)
def handler(event: APIGatewayWebSocketEvent, context):
    connection_id = event.request_context.connection_id
    logger.append_keys(connection_id=connection_id)
    svc = service()
    # API Gateway hands binary frames to $default base64-encoded; they are not Recall events.
    body = b64decode(event.body or "") if event.is_base64_encoded else (event.body or "")
    outcome = svc.ingestor.handle(
        body, connection_id=connection_id, bot_id=svc.connections.bot_of(connection_id)
    )
    # No route response is configured, so nothing is sent back to the bot; the status
    # code is for the Lambda's own logs and the tests.
    return {"statusCode": 500 if outcome.status == "failed" else 200, "body": outcome.status}
