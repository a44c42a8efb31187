"""Metrics counted in memory (the container receiver's mode, observability.count_in_memory):
counts and bytes summed, latencies kept value by value (so p50/p99 stay exact), written as
EMF lines of at most 100 values by Powertools' serializer, and nothing written twice."""

from __future__ import annotations

import json

from framesink_core.shared import observability


def emf(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_counts_are_summed_and_latencies_kept_per_value(monkeypatch, capsys):
    monkeypatch.setattr(observability, "_totals", {})  # the receiver's mode, undone after the test
    monkeypatch.setattr(observability, "_samples", {})
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    observability.metrics.clear_metrics()  # what earlier tests in this process left in Powertools' batch
    capsys.readouterr()
    for n in range(250):
        observability.count("FrameStored")
        observability.count("FrameBytes", 1000, "Bytes")
        observability.count("StoreLatency", float(n), "Milliseconds")
    assert capsys.readouterr().out == ""  # nothing written until the flush
    observability.flush_metrics()
    lines = emf(capsys.readouterr().out)
    totals = [line for line in lines if "FrameStored" in line]
    assert len(totals) == 1 and totals[0]["FrameStored"] == [250] and totals[0]["FrameBytes"] == [250_000]
    units = {m["Name"]: m["Unit"] for m in totals[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"FrameStored": "Count", "FrameBytes": "Bytes"}
    latencies = [line["StoreLatency"] for line in lines if "StoreLatency" in line]
    assert [len(v) for v in latencies] == [100, 100, 50]
    assert sorted(v for chunk in latencies for v in chunk) == [float(n) for n in range(250)]
    observability.flush_metrics()
    assert emf(capsys.readouterr().out) == []  # flushed once
