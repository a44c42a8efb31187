"""The export job (framesink_core/read/export.py), fed by the export queue: one message per
invocation (batch size 1), a recording's plan or one stream's MP4. A failure raises, so the
queue retries the message, then parks it in the dead-letter queue (which alarms)."""

import json

from framesink_core.shared.observability import count

from ._runtime import logger, metrics, service, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    results = []
    for record in event.get("Records", []):
        message = json.loads(record["body"])
        logger.append_keys(recording_id=message.get("recording_id"), export_kind=message.get("kind"),
                           participant_id=message.get("participant_id"), frame_type=message.get("type"))
        outcome = service().exports.handle(message)
        logger.info("export step", extra={"outcome": outcome})
        count("ExportStep")
        if outcome.startswith("exported"):
            count("StreamExported")
        results.append(outcome)
    return {"results": results}
