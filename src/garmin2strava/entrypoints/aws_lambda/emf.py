"""Metrics in CloudWatch embedded metric format: one JSON line on stdout per call.

CloudWatch Logs turns each line into metrics (no PutMetricData call, no permission,
no latency); the line stays readable in the log group. Format:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import TextIO

__all__ = ["NAMESPACE", "emit_metrics"]

NAMESPACE = "garmin2strava"


def emit_metrics(
    metrics: Mapping[str, float],
    *,
    dimensions: Mapping[str, str],
    unit: str = "Count",
    namespace: str = NAMESPACE,
    stream: TextIO | None = None,
    timestamp_ms: int | None = None,
) -> None:
    """Print one EMF line: every metric in `metrics`, under one set of dimensions."""
    if not metrics:
        return
    line: dict[str, object] = {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name in sorted(metrics)],
                }
            ],
        },
        **dict(dimensions),
        **dict(metrics),
    }
    out = stream or sys.stdout
    out.write(json.dumps(line, separators=(",", ":")) + "\n")
    out.flush()


def counter_deltas(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """MirrorStats counters grown since `before`, as metric names ("events_received"
    becomes "EventsReceived")."""
    return {
        "".join(part.title() for part in name.split("_")): float(value - before.get(name, 0))
        for name, value in after.items()
        if value != before.get(name, 0)
    }
