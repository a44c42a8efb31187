"""Powertools Logger, Metrics and Tracer shared by every adapter.

Metrics are EMF (CloudWatch parses them from the log stream). Dimensions are low-cardinality
only (reason, event name, frame type): ids go in log keys, never in metric dimensions.
"""

from __future__ import annotations

import os
import threading

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "framesink")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "framesink")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Powertools' metric set is a plain dict: the container receiver adds to it from its store
# threads while its event loop flushes, so both go through this lock (uncontended in Lambda).
_metrics_lock = threading.Lock()


def count(name: str, value: float = 1, unit: str = MetricUnit.Count) -> None:
    """A batched metric, flushed with the invocation (Lambda) or periodically (receiver)."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


def flush_metrics() -> None:
    """Write the batched metrics as one EMF line now (no Lambda invocation ends in the
    container receiver). Nothing is written when the batch is empty."""
    with _metrics_lock:
        if not metrics.metric_set:
            return
        if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
            metrics.clear_metrics()  # Powertools keeps the batch when disabled; drop it
            return
        metrics.flush_metrics()


def count_with_dimension(name: str, dimension: str, label: str) -> None:
    """A metric with one dimension, written at once as its own EMF line.

    Used for rejections and ignored events, whose label must not leak onto the batch.
    """
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    with single_metric(
        name=name, unit=MetricUnit.Count, value=1, namespace=NAMESPACE, default_dimensions={"service": SERVICE}
    ) as metric:
        metric.add_dimension(name=dimension, value=label)
