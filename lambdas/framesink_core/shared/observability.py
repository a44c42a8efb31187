"""Powertools Logger, Metrics and Tracer shared by every adapter.

Metrics are EMF (CloudWatch parses them from the log stream). Dimensions are low-cardinality
only (reason, event name, frame type): ids go in log keys, never in metric dimensions.
"""

from __future__ import annotations

import json
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


# Long-running processes (the container receiver) count in memory instead: Powertools'
# add_metric costs ~0.1 ms per call at a few thousand calls a second (it formats the metric's
# accumulated values for a debug line each time, measured with py-spy, issue 25), so there a
# count is a dict update and flush_metrics() hands the totals to Powertools' serializer.
# Lambda handlers keep Powertools' own batch: @metrics.log_metrics flushes it.
SAMPLES_PER_LINE = 100  # EMF's limit of values per metric per line
_totals: dict[tuple[str, str], float] | None = None  # (name, unit) -> sum of Count/Bytes metrics
_samples: dict[tuple[str, str], list[float]] = {}  # (name, unit) -> values of the others (latencies)
SUMMED_UNITS = frozenset({MetricUnit.Count, MetricUnit.Bytes, "Count", "Bytes"})


def count_in_memory() -> None:
    """From now on count() accumulates in memory until flush_metrics() (the receiver)."""
    global _totals
    with _metrics_lock:
        if _totals is None:
            _totals = {}


def count(name: str, value: float = 1, unit: str = MetricUnit.Count) -> None:
    """A batched metric, flushed with the invocation (Lambda) or periodically (receiver).
    Counts and bytes are summed (CloudWatch's Sum is the same); other units (latencies) keep
    every value, so percentiles stay exact."""
    with _metrics_lock:
        if _totals is None:
            metrics.add_metric(name=name, unit=unit, value=value)
        elif unit in SUMMED_UNITS:
            key = (name, unit)
            _totals[key] = _totals.get(key, 0) + value
        else:
            _samples.setdefault((name, unit), []).append(value)


def _in_memory_lines() -> list[dict]:
    """The accumulated metrics as EMF documents (Powertools' serializer), emptied. Under the lock."""
    global _totals, _samples
    totals, samples = _totals, _samples
    _totals, _samples = {}, {}
    metric_set = {name: {"Unit": str(getattr(unit, "value", unit)), "StorageResolution": 60, "Value": [total]}
                  for (name, unit), total in totals.items()}
    lines = [metrics.serialize_metric_set(metrics=metric_set)] if metric_set else []
    for (name, unit), values in samples.items():
        for start in range(0, len(values), SAMPLES_PER_LINE):
            lines.append(metrics.serialize_metric_set(metrics={name: {
                "Unit": str(getattr(unit, "value", unit)), "StorageResolution": 60,
                "Value": values[start:start + SAMPLES_PER_LINE]}}))
    return lines


def flush_metrics() -> None:
    """Write the batched metrics as EMF lines now (no Lambda invocation ends in the container
    receiver). Nothing is written when the batch is empty."""
    disabled = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true"
    with _metrics_lock:
        lines = _in_memory_lines() if _totals is not None else []
        if metrics.metric_set:
            if disabled:
                metrics.clear_metrics()  # Powertools keeps the batch when disabled; drop it
            else:
                metrics.flush_metrics()
    if not disabled:
        for line in lines:
            print(json.dumps(line, separators=(",", ":")), flush=True)


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
