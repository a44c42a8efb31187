"""Query HTTP API (IAM auth): recordings, a recording's participants and frames, with
presigned URLs.

GET /recordings?bot=&status=
GET /recordings/{id}                (status and timeline, participants, slides, exports with URLs)
GET /recordings/{id}/participants
GET /recordings/{id}/frames?participant=&type=&since=&until=&limit=&cursor=
GET /recordings/{id}/timeline?events=true    (speaker segments and talk time; or every participant event)
GET /recordings/{id}/transcript?since=&until=

Parameters are checked by framesink_core.read.query (ids against schema.ID_PATTERN); a bad one is
a 400 naming it, with one log line and a QueryRejected metric; an unknown recording is a 404.
"""

import json

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths

from framesink_core.read.query import QueryError, check_id, presigned_get_url, recording_view
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer

app = APIGatewayHttpResolver()
ALLOWED_FRAME_PARAMS = frozenset({"participant", "type", "since", "until", "limit", "cursor"})
ALLOWED_TRANSCRIPT_PARAMS = frozenset({"since", "until"})


@app.exception_handler(QueryError)
def bad_parameter(exc: QueryError):
    logger.warning("query rejected", extra={"reason": exc.reason, "param": exc.param, "detail": exc.detail})
    count_with_dimension("QueryRejected", "reason", exc.reason)
    body = {"statusCode": 400, "message": str(exc), "param": exc.param, "reason": exc.reason}
    return Response(status_code=400, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def _not_found(recording_id: str):
    count_with_dimension("QueryRejected", "reason", "unknown_recording")
    logger.info("unknown recording", extra={"reason": "unknown_recording", "recording_id": recording_id})
    raise NotFoundError(f"recording {recording_id} has no indexed frames")


@app.get("/recordings")
@tracer.capture_method(capture_response=False)
def recordings():
    params = app.current_event.query_string_parameters or {}
    unknown = sorted(set(params) - {"bot", "status"})
    if unknown:
        raise QueryError(unknown[0], "unknown parameter; use bot, status", reason="unknown_parameter")
    status = params.get("status")
    if status is not None and not check_status(status):
        raise QueryError("status", "must be a Recall bot status code (done, call_ended, in_call_recording, ...)")
    found = service().index.recordings(params.get("bot"), status)
    count("QueryServed")
    return {"recordings": found}


@app.get("/recordings/<recording_id>")
@tracer.capture_method(capture_response=False)
def recording(recording_id: str):
    recording_id = check_id(recording_id, "recording")
    svc = service()
    expiry = svc.settings.presign_expiry_seconds
    found = recording_view(svc.index, recording_id, svc.presigner, svc.settings.bucket, expiry)
    if found is None:
        _not_found(recording_id)
    count("QueryServed")
    return {**found, "url_expires_in": expiry}


def check_status(value: str) -> bool:
    from framesink_core.shared import schema

    return bool(schema.ID_PATTERN.fullmatch(value)) and len(value) <= 40


@app.get("/recordings/<recording_id>/participants")
@tracer.capture_method(capture_response=False)
def participants(recording_id: str):
    recording_id = check_id(recording_id, "recording")
    found = service().index.participants(recording_id)
    if not found:
        _not_found(recording_id)
    count("QueryServed")
    return {"recording_id": recording_id, "participants": found}


@app.get("/recordings/<recording_id>/frames")
@tracer.capture_method(capture_response=False)
def frames(recording_id: str):
    recording_id = check_id(recording_id, "recording")
    params = app.current_event.query_string_parameters or {}
    unknown = sorted(set(params) - ALLOWED_FRAME_PARAMS)
    if unknown:
        raise QueryError(unknown[0], f"unknown parameter; use {', '.join(sorted(ALLOWED_FRAME_PARAMS))}",
                         reason="unknown_parameter")
    svc = service()
    page = svc.index.frames(
        recording_id,
        participant_id=params.get("participant"),
        frame_type=params.get("type"),
        since=params.get("since"),
        until=params.get("until"),
        limit=params.get("limit"),
        cursor=params.get("cursor"),
    )
    # An empty first page may still mean "no such recording": one more item read tells.
    if not page.items and "cursor" not in params and not svc.index.has_recording(recording_id):
        _not_found(recording_id)
    expiry = svc.settings.presign_expiry_seconds
    for item in page.items:
        item["url"] = presigned_get_url(svc.presigner, svc.settings.bucket, item["s3_key"], expiry)
    count("QueryServed")
    return {
        "recording_id": recording_id,
        "frames": page.items,
        "cursor": page.cursor,
        "url_expires_in": expiry,
    }


def _only(params: dict, allowed: frozenset) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise QueryError(unknown[0], f"unknown parameter; use {', '.join(sorted(allowed)) or 'none'}",
                         reason="unknown_parameter")


@app.get("/recordings/<recording_id>/timeline")
@tracer.capture_method(capture_response=False)
def timeline(recording_id: str):
    recording_id = check_id(recording_id, "recording")
    params = app.current_event.query_string_parameters or {}
    _only(params, frozenset({"events"}))
    index = service().index
    if params.get("events") not in (None, "true", "false"):
        raise QueryError("events", "must be true or false")
    body: dict = {"recording_id": recording_id}
    if params.get("events") == "true":
        body["events"] = index.participant_events(recording_id)
        found = body["events"]
    else:
        body["segments"] = found = index.speaker_timeline(recording_id)
        body["talk_ms"] = index.talk_time(recording_id, found)
    if not found and not index.has_recording(recording_id):
        _not_found(recording_id)
    count("QueryServed")
    return body


@app.get("/recordings/<recording_id>/transcript")
@tracer.capture_method(capture_response=False)
def transcript(recording_id: str):
    recording_id = check_id(recording_id, "recording")
    params = app.current_event.query_string_parameters or {}
    _only(params, ALLOWED_TRANSCRIPT_PARAMS)
    index = service().index
    found = index.transcript(recording_id, since=params.get("since"), until=params.get("until"))
    if not found and not index.has_recording(recording_id):
        _not_found(recording_id)
    count("QueryServed")
    return {"recording_id": recording_id, "utterances": found}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event, context):
    return app.resolve(event, context)
