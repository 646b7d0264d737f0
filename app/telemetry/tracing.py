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
from logfire.types import ExceptionCallbackHelper
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from app.telemetry import metrics
from app.telemetry.logs import keep_payloads_out_of_logs
from app.telemetry.metrics import LATENCY_BUCKETS

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
        from app.telemetry.prometheus import PrometheusReader

        logfire.configure(
            send_to_logfire="if-token-present",
            token=token,
            service_name="agent-service",
            service_version=version,
            environment=environment,
            console=False,  # the console is stdlib logging at LOG_LEVEL (configure_logging)
            inspect_arguments=False,
            sampling=logfire.SamplingOptions(head=sample_rate),
            advanced=logfire.AdvancedOptions(exception_callback=record_exception_type_only),
            additional_span_processors=[QueryStringOmitted(), TypeOnlyErrorStatus()],
            metrics=logfire.MetricsOptions(
                additional_readers=[PrometheusReader()],
                views=[
                    View(instrument_name="otel.sdk.*", aggregation=DropAggregation()),
                    # Prometheus text format has no exponential histograms: classic buckets.
                    View(
                        instrument_type=_histogram_type(),
                        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
                    ),
                ],
            ),
        )
        keep_payloads_out_of_logs()
        metrics.register_counters()
        _done = True


def record_exception_type_only(helper: ExceptionCallbackHelper) -> None:
    """An exception recorded on a span (ours, FastAPI's, FastMCP's, any library's) keeps its type
    only: its message and its stacktrace (with every chained exception's message) can quote the
    arguments, as a database error quoting a value does. The span's level is untouched."""
    helper.no_record_exception()
    exc = helper.exception
    helper.span.add_event("exception", {"exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}"})


class QueryStringOmitted(SpanProcessor):
    """A server span keeps the request's path, never its query string: FastAPI's telemetry records
    `url.query` (redacting only a few parameter names it knows), and a caller may put anything
    there, a prompt included (issue 12). The access log drops it likewise (access_log.py)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.attributes and "url.query" in span.attributes:
            span.set_attribute("url.query", OMITTED)


OMITTED = "[omitted]"


class TypeOnlyErrorStatus(SpanProcessor):
    """The status of a failed span, as exported, names the exception's type only.

    OpenTelemetry and logfire set it to `Type: message` after any hook has run, so it is cut down
    here, on the copy logfire's pipeline exports (processors given to logfire.configure receive
    that copy, before its exporters do): the type from the span's exception event, else the
    text before the first `: `. ReadableSpan has no way to change a status but its `_status`."""

    def on_end(self, span: ReadableSpan) -> None:
        status = span.status
        if status.status_code is not StatusCode.ERROR or not status.description:
            return
        recorded = [
            str(e.attributes["exception.type"])
            for e in span.events
            if e.attributes and "exception.type" in e.attributes
        ]
        kind = recorded[-1].rpartition(".")[2] if recorded else status.description.partition(": ")[0]
        span._status = Status(StatusCode.ERROR, kind)  # see the docstring


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
