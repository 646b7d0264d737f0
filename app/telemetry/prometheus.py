"""The Prometheus reader behind /metrics: OpenTelemetry's, plus the empty histogram series.

Counters are created at zero by adding 0 to them (`metrics.register_routing`), but OpenTelemetry
cannot make a histogram point without a measurement: until a task had finished,
`agent_task_duration_seconds` would be missing, and an alert built on `absent()` or `rate()`
would start out empty. So before each export this reader adds an empty point (every bucket 0,
sum 0) for each documented label set that has none yet. A real point replaces it at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ScopeMetrics,
)

from app.telemetry import metrics


class PrometheusReader(PrometheusMetricReader):
    """OpenTelemetry's Prometheus reader, with every documented series present from start-up."""

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if metrics_data is not None:
            metrics_data = with_empty_histograms(metrics_data, metrics.empty_duration_series())
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)


def with_empty_histograms(data: MetricsData, expected: Sequence[Mapping[str, str]]) -> MetricsData:
    """`data` with an empty task-duration point for each label set in `expected` that has none."""
    if not expected:
        return data
    return replace(
        data,
        resource_metrics=[
            replace(resource, scope_metrics=[_fill(scope, expected) for scope in resource.scope_metrics])
            for resource in data.resource_metrics
        ],
    )


def _fill(scope: ScopeMetrics, expected: Sequence[Mapping[str, str]]) -> ScopeMetrics:
    names = {metric.name for metric in scope.metrics}
    if not names & metrics.COUNTER_NAMES:
        return scope  # another library's scope
    duration = next((m for m in scope.metrics if m.name == metrics.TASK_DURATION_NAME), None)
    points = list(duration.data.data_points) if duration is not None and isinstance(duration.data, Histogram) else []
    present = {_key(point.attributes) for point in points}
    missing = [labels for labels in expected if _key(labels) not in present]
    if not missing:
        return scope
    now = time.time_ns()
    points += [_empty_point(labels, now) for labels in missing]
    if duration is not None and isinstance(duration.data, Histogram):
        filled = replace(duration, data=replace(duration.data, data_points=points))
        return replace(scope, metrics=[filled if m is duration else m for m in scope.metrics])
    created = Metric(
        name=metrics.TASK_DURATION_NAME,
        description=metrics.TASK_DURATION_DESCRIPTION,
        unit="s",
        data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
    )
    return replace(scope, metrics=[*scope.metrics, created])


def _empty_point(labels: Mapping[str, str], now: int) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=dict(labels),
        start_time_unix_nano=metrics.series_since_ns(),
        time_unix_nano=now,
        count=0,
        sum=0,
        bucket_counts=[0] * (len(metrics.LATENCY_BUCKETS) + 1),
        explicit_bounds=list(metrics.LATENCY_BUCKETS),
        min=math.inf,
        max=-math.inf,
    )


def _key(attributes: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (attributes or {}).items()))
