"""Novelty: each stored frame's change score and ``novel`` flag (framesink_core/analyze/novelty.py),
an analyzer of the kit (framesink_core/analyze/kit.py) that keeps its own state.

A rule on the frame bus sends every "Frame Stored" event here (an asynchronous invoke: Lambda
retries twice, then the event waits in a dead-letter queue that alarms). The function flags
the frame's index item and publishes "Frame Scored" on the same bus, which consumers of novel
frames subscribe to. Locally, `framesink local` feeds it the same events from an SQS queue.
"""

from functools import lru_cache

from framesink_core.analyze import novelty
from framesink_core.analyze.kit import Context, Runner
from framesink_core.ingest.outlet import FRAME_STORED
from framesink_core.shared.observability import count

from ._runtime import logger, metrics, service, tracer


@lru_cache(maxsize=1)
def _runner(svc) -> Runner:  # one per Service: a rebuilt Service (new settings) gets a new one
    return Runner("novelty", novelty.score, Context.of_service(svc), store_results=False, metric_prefix="Novelty")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    # "Frame Stored" only: scoring a "Frame Scored" event would loop.
    outcome = _runner(service()).handle_event(event, detail_types=(FRAME_STORED,))
    if outcome.result is None:
        return {"novel": None}
    if outcome.result["novel"]:
        count("NovelFrame")
    return {"novel": outcome.result["novel"], "change_score": outcome.result["change_score"],
            "reason": outcome.result["novel_reason"]}
