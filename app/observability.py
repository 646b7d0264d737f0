"""Logs, traces and metrics through logfire, private by default.

Nothing leaves the machine without LOGFIRE_TOKEN (`send_to_logfire="if-token-present"`).
Metrics are OpenTelemetry instruments on logfire's meter provider, read for `/metrics`
by a Prometheus reader: one source of truth. No prompt, message, request body, tool
argument or SQL parameter is ever put in a log record, span attribute or metric label.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

import logfire
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View

# Libraries that log request payloads at DEBUG: FastMCP logs tool arguments, the MCP
# SDK logs raw JSON-RPC messages, the OpenAI SDK logs request options (the messages).
# They never go below INFO, whatever LOG_LEVEL says; tests/test_privacy.py proves it.
PAYLOAD_LOGGERS = ("fastmcp", "mcp", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "sse_starlette")

# The current request's id (set by the API's middleware), for log records and audit rows.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_configured = threading.Lock()
_done = False


def keep_payloads_out_of_logs() -> None:
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


class RequestIdFilter(logging.Filter):
    """Puts the request id on every log record, so log lines, spans and audit rows line up."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler, logfire.LogfireLoggingHandler()]
    root.setLevel(level)
    keep_payloads_out_of_logs()


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
