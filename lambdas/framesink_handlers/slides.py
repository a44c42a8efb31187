"""The slide analyzer (framesink_core/analyze/slides.py), an analyzer of the kit
(framesink_core/analyze/kit.py) that writes its own ``SLIDE#`` items (``framesink slides``).

Deployed with ``-c analyzer=slides``: a rule on the frame bus sends each stored screenshare
frame's event here (an asynchronous invoke: Lambda retries twice, then the event goes to a
dead-letter queue that alarms). Locally, `framesink local` feeds it the same events from an
SQS queue. Your own analyzer needs no handler of its own: framesink_handlers/analyzer.py runs
any kit function (docs/analyzers.md).
"""

from functools import lru_cache

from framesink_core.analyze import slides
from framesink_core.analyze.kit import Context, Runner
from framesink_core.shared.observability import count

from ._runtime import logger, metrics, service, tracer


@lru_cache(maxsize=1)
def _runner(svc) -> Runner:  # one per Service: a rebuilt Service (new settings) gets a new one
    return Runner("slides", slides.analyze, Context.of_service(svc), store_results=False)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    count("AnalyzerEvent")
    outcome = _runner(service()).handle_event(event)
    if outcome.result is not None:
        count("SlideDetected")
        logger.info("slide", extra={"distance": outcome.result["distance"],
                                    "repeat_of_ms": outcome.result["repeat_of_ms"]})
    return {"slide": outcome.result is not None}
