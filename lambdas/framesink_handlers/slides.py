"""The example analyzer: subscribe, read the frame, write your result beside it.

Copy this file to build your own (docs/live-feed.md, "Write your own analyzer"). Deployed with
``-c analyzer=slides``: a rule on the frame bus sends each stored screenshare frame's event
here (an asynchronous invoke: Lambda retries twice, then the event goes to a dead-letter
queue that alarms). Locally, `framesink local` feeds it the same events from an SQS queue.

1. Subscribe: the event names the frame's object (framesink_core.read.feed.FrameRef.from_event).
2. Read the frame: one S3 GetObject (the role may read recordings/ and nothing else).
3. Write the result beside it: an item in the recording's partition of the index
   (``SLIDE#<relms10>#<pid>``), which ``framesink slides`` and ``framesink recording`` list.
   Use your own prefix for your own results; the key makes a redelivered event idempotent.
"""

from functools import lru_cache

from botocore.exceptions import ClientError

from framesink_core.analyze.slides import SlideAnalyzer
from framesink_core.read.feed import FrameRef
from framesink_core.shared.objects import object_missing
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer


def analyzer() -> SlideAnalyzer:
    return _analyzer(service())


@lru_cache(maxsize=1)
def _analyzer(svc) -> SlideAnalyzer:  # one per Service: a rebuilt Service (new settings) gets a new one
    return SlideAnalyzer(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb,
                         frame_expiry_days=svc.settings.frame_expiry_days)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    count("AnalyzerEvent")
    ref = FrameRef.from_event(event)
    if ref is None or ref.bucket != service().settings.bucket:
        count_with_dimension("AnalyzerSkipped", "reason", "not_a_frame")
        logger.warning("not a frame event", extra={"reason": "not_a_frame", "detail_type": event.get("detail-type")})
        return {"slide": False}
    logger.append_keys(recording_id=ref.recording_id, participant_id=ref.participant_id, relative_ms=ref.relative_ms)
    try:
        slide = analyzer().analyze(ref)
    except ClientError as exc:
        if not object_missing(exc):
            raise  # S3 or DynamoDB failing: Lambda retries the event, then the dead-letter queue
        # Deleted after its event was sent (framesink delete, expiry): nothing to analyze, and
        # the events behind it go on.
        count_with_dimension("AnalyzerSkipped", "reason", "deleted")
        logger.warning("frame not analyzed", extra={"reason": "deleted", "detail": "the frame no longer exists"})
        return {"slide": False}
    except (OSError, ValueError, SyntaxError) as exc:  # a frame Pillow cannot decode: skip it, say why
        count_with_dimension("AnalyzerSkipped", "reason", "undecodable")
        logger.warning("frame not analyzed", extra={"reason": "undecodable", "detail": str(exc)[:200]})
        return {"slide": False}
    if slide is not None:
        count("SlideDetected")
        logger.info("slide", extra={"distance": slide.distance, "repeat_of_ms": slide.repeat_of_ms})
    return {"slide": slide is not None}
