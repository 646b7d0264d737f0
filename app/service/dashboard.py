"""The health page's figures: this process's Prometheus registry, summed into a few small tables.

The registry is the one `GET /metrics` exports (the same OpenTelemetry instruments): read here
with `REGISTRY.collect()`, so the page and a scraper never disagree. The figures count every
client's tasks, so they are for auditors and admins, like /metrics. Only documented series are
read, and each is summed over all labels but one (a model's or provider's name never appears).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry


@dataclass(frozen=True, slots=True)
class FigureTable:
    """One table of the page: a caption, and (label, value) rows."""

    caption: str
    rows: tuple[tuple[str, str], ...]


# (caption, sample name, the label the rows are by; None: one total)
_BY_LABEL: tuple[tuple[str, str, str | None], ...] = (
    ("Tasks finished by this process, by status", "agent_tasks_total", "status"),
    ("Audited reads by task id, by outcome", "agent_audited_reads_total", "outcome"),
    ("Requests refused by a per-key limit", "agent_throttled_requests_total", "limit"),
    ("Response cache look-ups, by result", "agent_cache_lookups_total", "result"),
    ("Purge runs, by outcome", "agent_purge_runs_total", "outcome"),
    ("Rows deleted by the purge, by table", "agent_purge_rows_deleted_total", "table"),
    ("Webhook delivery attempts, by result", "agent_webhook_attempts_total", "result"),
)


def _samples(registry: CollectorRegistry) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in registry.collect():
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def metric_tables(registry: CollectorRegistry = REGISTRY) -> list[FigureTable]:
    """The page's tables of this process's counters since it started."""
    sums: dict[tuple[str, str | None], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[str, float] = defaultdict(float)
    wanted = {name: label for _, name, label in _BY_LABEL}
    for name, labels, value in _samples(registry):
        totals[name] += value
        if name in wanted and (label := wanted[name]) is not None:
            sums[(name, label)][labels.get(label, "")] += value
    tables = [
        FigureTable(caption, tuple((key, _number(v)) for key, v in sorted(sums[(name, label)].items())))
        for caption, name, label in _BY_LABEL
    ]
    count, seconds = totals["agent_task_duration_seconds_count"], totals["agent_task_duration_seconds_sum"]
    tables.insert(
        1,
        FigureTable(
            "Task latency, submit to result",
            (
                ("tasks timed", _number(count)),
                ("mean seconds", f"{seconds / count:.3f}" if count else "none yet"),
            ),
        ),
    )
    tables.append(
        FigureTable(
            "Other figures",
            (
                ("webhook deliveries given up", _number(totals["agent_webhooks_failed_total"])),
                ("audit seals written", _number(totals["agent_audit_seals_total"])),
                ("database connections in use", _number(totals["agent_db_pool_connections_in_use"])),
            ),
        )
    )
    return tables
