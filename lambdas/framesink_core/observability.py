"""Powertools Logger, Metrics and Tracer shared by every adapter.

Metrics are EMF (CloudWatch parses them from the log stream). Dimensions are low-cardinality
only (reason, event name, frame type): ids go in log keys, never in metric dimensions.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "framesink")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "framesink")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def count(name: str, value: float = 1, unit: str = MetricUnit.Count) -> None:
    """A batched metric, flushed with the invocation (Lambda) or periodically (receiver)."""
    metrics.add_metric(name=name, unit=unit, value=value)


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
