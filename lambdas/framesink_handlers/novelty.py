"""Novelty: each stored frame's change score and ``novel`` flag (framesink_core/analyze/novelty.py).

A rule on the frame bus sends every "Frame Stored" event here (an asynchronous invoke: Lambda
retries twice, then the event waits in a dead-letter queue that alarms). The function flags
the frame's index item and publishes "Frame Scored" on the same bus, which consumers of novel
frames subscribe to. Locally, `framesink local` feeds it the same events from an SQS queue.
"""

from functools import lru_cache

from botocore.exceptions import ClientError

from framesink_core.analyze.novelty import NoveltyScorer
from framesink_core.ingest.outlet import FRAME_STORED
from framesink_core.read.feed import FrameRef
from framesink_core.shared.objects import object_missing
from framesink_core.shared.observability import count, count_with_dimension

from ._runtime import logger, metrics, service, tracer


@lru_cache(maxsize=1)
def _scorer(svc) -> NoveltyScorer:  # one per Service: a rebuilt Service (new settings) gets a new one
    s = svc.settings
    return NoveltyScorer(s.bucket, s.table, svc.s3, svc.dynamodb, svc.outlet, threshold=s.novelty_threshold,
                         heartbeat_seconds=s.novelty_heartbeat_seconds, frame_expiry_days=s.frame_expiry_days)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    ref = FrameRef.from_event(event)
    if ref is None or event.get("detail-type") != FRAME_STORED or ref.bucket != service().settings.bucket:
        count_with_dimension("NoveltySkipped", "reason", "not_a_frame")
        logger.warning("not a frame event", extra={"reason": "not_a_frame", "detail_type": event.get("detail-type")})
        return {"novel": None}
    logger.append_keys(recording_id=ref.recording_id, participant_id=ref.participant_id, relative_ms=ref.relative_ms,
                       frame_type=ref.frame_type)
    try:
        score = _scorer(service()).score(ref)
    except ClientError as exc:
        if not object_missing(exc):
            raise  # S3 or DynamoDB failing: Lambda retries the event, then the dead-letter queue
        count_with_dimension("NoveltySkipped", "reason", "deleted")
        logger.warning("frame not scored", extra={"reason": "deleted", "detail": "the frame no longer exists"})
        return {"novel": None}
    except (OSError, ValueError, SyntaxError) as exc:  # a frame Pillow cannot decode: skip it, say why
        count_with_dimension("NoveltySkipped", "reason", "undecodable")
        logger.warning("frame not scored", extra={"reason": "undecodable", "detail": str(exc)[:200]})
        return {"novel": None}
    if score.novel:
        count("NovelFrame")
    return {"novel": score.novel, "change_score": score.change, "reason": score.reason}
