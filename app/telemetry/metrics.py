"""The service's metrics: OpenTelemetry instruments on logfire's meter provider.

Exported at GET /metrics (Prometheus text format) and, with LOGFIRE_TOKEN, to logfire.
Labels are bounded: statuses, error codes, channels, outcomes, tables, providers, and at
most MAX_MODEL_LABELS model names (callers choose model names; the rest count as "other").
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

import logfire
from opentelemetry.metrics import CallbackOptions, Observation

MAX_MODEL_LABELS = 100

TASKS = logfire.metric_counter(
    "agent_tasks", description="Tasks finished, by status, error code, provider, model, cache hit"
)
TASK_DURATION = logfire.metric_histogram("agent_task_duration", unit="s", description="Task latency, submit to result")
TOKENS = logfire.metric_counter("agent_tokens", description="Tokens used, by provider, model and kind")
CACHE_LOOKUPS = logfire.metric_counter("agent_cache_lookups", description="Response cache look-ups, by result")
AUDITED_READS = logfire.metric_counter("agent_audited_reads", description="Audited reads, by channel and outcome")
PURGE_RUNS = logfire.metric_counter("agent_purge_runs", description="Retention purge runs, by outcome")
PURGE_ROWS = logfire.metric_counter("agent_purge_rows_deleted", description="Rows deleted by the purge, by table")
THROTTLED = logfire.metric_counter(
    "agent_throttled_requests", description="Requests refused by a per-key limit, by limit (rate, running_tasks)"
)

_models: set[str] = set()
_models_lock = threading.Lock()
_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_gauge_lock = threading.Lock()
_gauge_registered = False


def model_label(model: str) -> str:
    """The model as a label, or "other" once MAX_MODEL_LABELS distinct models have been seen."""
    if model in _models:
        return model
    with _models_lock:
        if len(_models) < MAX_MODEL_LABELS:
            _models.add(model)
            return model
    return "other"


def task_finished(
    *,
    provider: str,
    model: str,
    status: str,
    error_code: str | None,
    cached: bool,
    seconds: float,
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> None:
    labels = {"provider": provider, "model": model_label(model)}
    TASKS.add(1, {**labels, "status": status, "error_code": error_code or "", "cached": str(cached).lower()})
    TASK_DURATION.record(seconds, {"provider": provider, "status": status})
    if prompt_tokens:
        TOKENS.add(prompt_tokens, {**labels, "kind": "prompt"})
    if completion_tokens:
        TOKENS.add(completion_tokens, {**labels, "kind": "completion"})


def watch_pool(database: Any) -> None:
    """Report a Database's connections in use (`pool_in_use`) as a gauge."""
    global _gauge_registered
    _pools.add(database)
    with _gauge_lock:
        if _gauge_registered:
            return
        _gauge_registered = True
    logfire.metric_gauge_callback(
        "agent_db_pool_connections_in_use", [_observe_pools], description="Database connections in use"
    )


def _observe_pools(options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(sum(db.pool_in_use for db in list(_pools)))
