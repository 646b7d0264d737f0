"""logfire for the process (traces, and the meter provider behind /metrics), and SQL spans.

Nothing leaves the machine without LOGFIRE_TOKEN (`send_to_logfire="if-token-present"`).
Metrics are OpenTelemetry instruments on logfire's meter provider, read for `/metrics` by a
Prometheus reader: one source of truth.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import logfire
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from app.telemetry.logs import keep_payloads_out_of_logs

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_configured = threading.Lock()
_done = False


def configure_observability(
    *, token: str | None, version: str, sample_rate: float = 1.0, environment: str | None = None
) -> None:
    """logfire for this process, once (tests and workers may build several apps)."""
    global _done
    with _configured:
        if _done:
            return
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        logfire.configure(
            send_to_logfire="if-token-present",
            token=token,
            service_name="agent-service",
            service_version=version,
            environment=environment,
            console=False,  # the console is stdlib logging at LOG_LEVEL (configure_logging)
            inspect_arguments=False,
            sampling=logfire.SamplingOptions(head=sample_rate),
            metrics=logfire.MetricsOptions(
                additional_readers=[PrometheusMetricReader()],
                views=[
                    View(instrument_name="otel.sdk.*", aggregation=DropAggregation()),
                    # Prometheus text format has no exponential histograms: classic buckets.
                    View(
                        instrument_type=_histogram_type(),
                        aggregation=ExplicitBucketHistogramAggregation(_LATENCY_BUCKETS),
                    ),
                ],
            ),
        )
        keep_payloads_out_of_logs()
        _done = True


def _histogram_type() -> Any:
    from opentelemetry.metrics import Histogram

    return Histogram


def trace_statement(record: Any) -> None:
    """asyncpg's query logger: a client span per statement with its SQL text (the storage layer's
    constant text), time and error type. Never its parameters. (OpenTelemetry's asyncpg
    instrumentation does not install beside logfire and fastmcp's pinned OpenTelemetry, so
    asyncpg's query logger feeds the spans instead.)"""
    end = time.time_ns()
    query = str(record.query)
    operation = query.lstrip().split(None, 1)[0].upper() if query.strip() else "QUERY"
    span = _tracer().start_span(
        f"postgresql {operation}",
        start_time=end - int(record.elapsed * 1e9),
        kind=SpanKind.CLIENT,
        attributes={"db.system": "postgresql", "db.operation": operation, "db.statement": query[:4000]},
    )
    if record.exception is not None:
        span.set_status(Status(StatusCode.ERROR, type(record.exception).__name__))
    span.end(end_time=end)


@functools.cache
def _tracer() -> Tracer:
    return logfire.DEFAULT_LOGFIRE_INSTANCE.config.get_tracer_provider().get_tracer("agent_service.db")
