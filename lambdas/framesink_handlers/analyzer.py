"""Any kit analyzer as a Lambda function (framesink_core/analyze/kit.py, docs/analyzers.md).

Deployed by the ``analyzers`` setting (infra/analyzers.py): the analyzer's directory is the
root of its own asset beside framesink_core, ``FRAMESINK_ANALYZER`` names its function
(``module:function``) and ``FRAMESINK_ANALYZER_NAME`` its results' name. A rule on the frame
bus invokes it asynchronously per frame event (retried twice, then a dead-letter queue that
alarms); a result it returns is written beside the frame.
"""

import os
from functools import lru_cache

from framesink_core.analyze.kit import Context, Runner, load

from ._runtime import logger, metrics, service, tracer


@lru_cache(maxsize=1)
def _runner(svc) -> Runner:
    name, fn = load(os.environ["FRAMESINK_ANALYZER"])
    return Runner(os.environ.get("FRAMESINK_ANALYZER_NAME") or name, fn, Context.of_service(svc))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict, context):
    outcome = _runner(service()).handle_event(event)
    return {"status": outcome.status, "reason": outcome.reason}
