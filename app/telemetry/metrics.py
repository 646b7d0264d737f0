"""The service's metrics: OpenTelemetry instruments on logfire's meter provider.

Exported at GET /metrics (Prometheus text format) and, with LOGFIRE_TOKEN, to logfire.

Labels are bounded: statuses, error codes, channels, outcomes, tables, the configured providers,
and model names. Callers choose model names, so a model is labelled by its own name only if the
routing table knows it (an alias, an alias's target, the default model), or while its provider has
fewer than MODEL_LABELS_PER_PROVIDER other names labelled (first come); past that it counts as
`<provider>:other`. One client's junk names thus use up only their own provider's spare labels:
never a configured model's label, nor another provider's.

Every documented series (docs/operations.md, "Metrics") exists from start-up, at zero
(`register_routing`), so alerts built on `absent()` or `rate()` have something to look at.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import logfire
from opentelemetry.metrics import CallbackOptions, Observation

MODEL_LABELS_PER_PROVIDER = 10
OTHER = "other"

# The documented label values, created at zero at start-up (docs/operations.md lists them too).
TASK_STATUSES = ("succeeded", "failed", "cancelled")
TASK_ERROR_CODES = ("provider_error", "rate_limited", "timeout", "quota_exceeded", "invalid_output")
TOKEN_KINDS = ("prompt", "completion")
CACHE_RESULTS = ("hit", "miss", "in_flight", "bypass")
READ_CHANNELS = ("rest", "mcp")
READ_OUTCOMES = ("ok", "not_found", "expired", "denied")
THROTTLE_LIMITS = ("rate", "running_tasks", "budget")
PURGE_OUTCOMES = ("ok", "dry_run", "skipped", "error")
PURGE_TABLES = ("agent_task", "audit_event", "audit_seal")
# A webhook attempt's result: delivered, or the error it failed with (retried or not).
WEBHOOK_RESULTS = (
    "delivered",
    "http_status",
    "timeout",
    "connect_error",
    "dns_error",
    "refused_address",
    "redirect",
    "http_error",
    "secret_unavailable",
)

# Prometheus text format has no exponential histograms: classic buckets (see tracing's views).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TASK_DURATION_NAME = "agent_task_duration"
TASK_DURATION_DESCRIPTION = "Task latency, submit to result"

_counters: list[_Counter] = []


def register_counters() -> None:
    """Hand every counter of this module to the meter provider; once, after logfire is configured
    (`configure_observability`): a callback given before that is bound to the provider logfire
    replaces, and would never be called."""
    for counter in _counters:
        counter.register()


class _Counter:
    """A monotonic counter summed in-process, handed to OpenTelemetry when it collects (an
    observable counter: its callback reports the sums), in place of the SDK's `Counter`.

    Why: the SDK's `Counter.add` cleans and hashes the attributes and takes its locks on every
    call, about 8 us, and a finished task made five such calls (scripts/benchmicro.py measures
    both); this is one dict update under a lock. What /metrics and logfire see is unchanged: the
    same names and labels, cumulative sums per label set, series created by adding 0."""

    __slots__ = ("_lock", "_sums", "description", "name", "unit")

    def __init__(self, name: str, *, description: str, unit: str = "") -> None:
        self.name, self.description, self.unit = name, description, unit
        self._sums: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()
        _counters.append(self)

    def register(self) -> None:
        logfire.metric_counter_callback(
            self.name, callbacks=[self._observe], unit=self.unit, description=self.description
        )

    def add(self, amount: float, attributes: Mapping[str, str] | None = None) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = _key(attributes) if attributes else ()
        with self._lock:
            self._sums[key] = self._sums.get(key, 0) + amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sums = list(self._sums.items())
        return [Observation(value, dict(key)) for key, value in sums]


TASKS = _Counter("agent_tasks", description="Tasks finished, by status, error code, provider, model, cache hit")
TASK_DURATION = logfire.metric_histogram(TASK_DURATION_NAME, unit="s", description=TASK_DURATION_DESCRIPTION)
TOKENS = _Counter("agent_tokens", description="Tokens used, by provider, model and kind")
CACHE_LOOKUPS = _Counter("agent_cache_lookups", description="Response cache look-ups, by result")
AUDITED_READS = _Counter("agent_audited_reads", description="Audited reads, by channel and outcome")
PURGE_RUNS = _Counter("agent_purge_runs", description="Retention purge runs, by outcome")
PURGE_ROWS = _Counter("agent_purge_rows_deleted", description="Rows deleted by the purge, by table")
AUDIT_SEALS = _Counter("agent_audit_seals", description="Audit seals written (signed checkpoints)")
TASKS_CANCELLED = _Counter("agent_task_cancels", description="Tasks cancelled, by channel")
WEBHOOK_ATTEMPTS = _Counter(
    "agent_webhook_attempts", description="Webhook delivery attempts, by result (delivered or the error)"
)
WEBHOOKS_FAILED = _Counter("agent_webhooks_failed", description="Webhook deliveries given up after WEBHOOK_RETRY_HOURS")
# No `unit`: the Prometheus exporter would append it to the name (the name already says USD).
COST = _Counter(
    "agent_cost_usd", description="What provider calls cost, in US dollars (genai-prices), by provider and model"
)
THROTTLED = _Counter(
    "agent_throttled_requests",
    description="Requests refused by a per-key limit, by limit (rate, running_tasks, budget)",
)
# The instrument names of this module's counters: the scope that holds them is ours.
COUNTER_NAMES = frozenset(counter.name for counter in _counters)

_labels_lock = threading.Lock()
_known_models: frozenset[str] = frozenset()  # replaced whole, so readers need no lock
_spare_labels: dict[str, set[str]] = {}  # provider -> its unknown models that got a label
_duration_series: set[tuple[tuple[str, str], ...]] = set()
_series_since_ns = time.time_ns()
_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_gauge_lock = threading.Lock()
_gauge_registered = False


def register_routing(providers: Iterable[str], known_models: Iterable[str]) -> None:
    """The routing table's providers and the model names it knows: their labels are reserved, and
    every documented series is created at zero.

    Called for each set of components built (a process may build several, as the tests do): what
    they register adds up, bounded by their configurations.
    """
    global _known_models
    providers, known_models = list(providers), list(known_models)
    with _labels_lock:
        _known_models = _known_models | frozenset(known_models)
        for provider in providers:
            _spare_labels.setdefault(provider, set())
        for provider in providers:
            for status in TASK_STATUSES:
                _duration_series.add(_key({"provider": provider, "status": status}))
    for model in known_models:
        provider, colon, _ = model.partition(":")
        if colon and provider in providers:
            _create_task_series(provider, model)
    for result in CACHE_RESULTS:
        CACHE_LOOKUPS.add(0, {"result": result})
    for channel in READ_CHANNELS:
        for outcome in READ_OUTCOMES:
            AUDITED_READS.add(0, {"channel": channel, "outcome": outcome})
    for limit in THROTTLE_LIMITS:
        THROTTLED.add(0, {"limit": limit})
    for outcome in PURGE_OUTCOMES:
        PURGE_RUNS.add(0, {"outcome": outcome})
    for table in PURGE_TABLES:
        PURGE_ROWS.add(0, {"table": table})
    AUDIT_SEALS.add(0)
    for channel in READ_CHANNELS:
        TASKS_CANCELLED.add(0, {"channel": channel})
    for result in WEBHOOK_RESULTS:
        WEBHOOK_ATTEMPTS.add(0, {"result": result})
    WEBHOOKS_FAILED.add(0)


def _create_task_series(provider: str, model: str) -> None:
    labels = {"provider": provider, "model": model}
    for cached in ("false", "true"):
        TASKS.add(0, {**labels, "status": "succeeded", "error_code": "", "cached": cached})
    for code in TASK_ERROR_CODES:
        TASKS.add(0, {**labels, "status": "failed", "error_code": code, "cached": "false"})
    TASKS.add(0, {**labels, "status": "cancelled", "error_code": "cancelled", "cached": "false"})
    for kind in TOKEN_KINDS:
        TOKENS.add(0, {**labels, "kind": kind})
    COST.add(0.0, labels)


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def empty_duration_series() -> tuple[Mapping[str, str], ...]:
    """The task duration histogram's documented label sets (one per provider and status), which
    the Prometheus reader shows empty until a task fills them: OpenTelemetry cannot make an empty
    histogram point by itself."""
    with _labels_lock:
        return tuple(MappingProxyType(dict(key)) for key in sorted(_duration_series))


def series_since_ns() -> int:
    """When the zero series began (the start time of the empty histogram points)."""
    return _series_since_ns


def model_label(model: str) -> str:
    """The model as a label: its own name if known or among its provider's first
    MODEL_LABELS_PER_PROVIDER others, else `<provider>:other` (`other` for an unregistered provider)."""
    if model in _known_models:
        return model
    provider, colon, _ = model.partition(":")
    spare = _spare_labels.get(provider) if colon else None
    if spare is None:
        return OTHER
    if model in spare:
        return model
    with _labels_lock:
        if len(spare) < MODEL_LABELS_PER_PROVIDER:
            spare.add(model)
            return model
    return f"{provider}:{OTHER}"


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
    cost_usd: Decimal | None = None,
) -> None:
    labels = {"provider": provider, "model": model_label(model)}
    TASKS.add(1, {**labels, "status": status, "error_code": error_code or "", "cached": str(cached).lower()})
    TASK_DURATION.record(seconds, {"provider": provider, "status": status})
    if prompt_tokens:
        TOKENS.add(prompt_tokens, {**labels, "kind": "prompt"})
    if completion_tokens:
        TOKENS.add(completion_tokens, {**labels, "kind": "completion"})
    if cost_usd:  # unpriced (None) and free (0) calls add nothing
        COST.add(float(cost_usd), labels)


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
