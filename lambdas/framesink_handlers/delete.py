"""``DELETE /recordings/{id}`` (IAM auth): delete a recording's frames, exports and index items
for a privacy request. Without ``?confirm=true`` it only counts what would go (a dry run).
Its own function, so only this role may delete anything. The work is framesink_core.read.delete's.

The HTTP API gives an answer 30 s: a recording too big to delete in that answers ``complete:
false`` after 25 s, and the caller sends the same request again (what is gone is gone)."""

import time

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths

from framesink_core.read.delete import delete_recording
from framesink_core.read.query import QueryError
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer
from .query import bad_parameter

app = APIGatewayHttpResolver()
app.exception_handler(QueryError)(bad_parameter)


@app.delete("/recordings/<recording_id>")
@tracer.capture_method(capture_response=False)
def delete(recording_id: str):
    count("DeleteRequest")  # every request, refused ones too
    params = app.current_event.query_string_parameters or {}
    confirm = params.get("confirm", "false")
    if confirm not in ("true", "false"):
        raise QueryError("confirm", "must be true or false")
    svc = service()
    result = delete_recording(svc.s3, svc.dynamodb, svc.settings.bucket, svc.settings.table, recording_id,
                              dry_run=confirm != "true", deadline=time.monotonic() + 25)
    if not result.found:  # a mistyped id in a privacy request must not look like success
        count_with_dimension("QueryRejected", "reason", "unknown_recording")
        raise NotFoundError(f"recording {recording_id} has nothing stored (no objects, no index items): "
                            "a mistyped id, or already deleted")
    logger.info("recording deleted" if confirm == "true" else "recording delete counted", extra=result.as_dict())
    count_with_dimension("RecordingDelete", "mode", "delete" if confirm == "true" else "dry_run")
    count("QueryServed")
    return result.as_dict()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event, context):
    return app.resolve(event, context)
