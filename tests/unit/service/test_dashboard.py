"""The health page's figures: the Prometheus samples summed by one label, never a model's name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.service.dashboard import metric_tables


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    tasks = Counter("agent_tasks", "", ["status", "model"], registry=reg)
    tasks.labels("succeeded", "offline:echo").inc(3)
    tasks.labels("succeeded", "openai:gpt-secret-model").inc(2)
    tasks.labels("failed", "offline:echo").inc()
    duration = Histogram("agent_task_duration_seconds", "", ["provider"], registry=reg)
    duration.labels("offline").observe(0.5)
    duration.labels("offline").observe(1.5)
    Counter("agent_webhooks_failed", "", registry=reg).inc(4)
    Gauge("agent_db_pool_connections_in_use", "", registry=reg).set(2)
    return reg


def test_counters_are_summed_by_their_one_label() -> None:
    tables = {t.caption: dict(t.rows) for t in metric_tables(registry())}
    assert tables["Tasks finished by this process, by status"] == {"failed": "1", "succeeded": "5"}
    assert tables["Task latency, submit to result"] == {"tasks timed": "2", "mean seconds": "1.000"}
    assert tables["Other figures"]["webhook deliveries given up"] == "4"
    assert tables["Other figures"]["database connections in use"] == "2"
    assert tables["Purge runs, by outcome"] == {}  # nothing yet: the page says so


def test_no_model_or_provider_name_reaches_the_page() -> None:
    text = repr(metric_tables(registry()))
    assert "gpt-secret-model" not in text
    assert "offline" not in text


def test_an_empty_registry_reads_as_nothing_yet() -> None:
    tables = {t.caption: dict(t.rows) for t in metric_tables(CollectorRegistry())}
    assert tables["Task latency, submit to result"]["mean seconds"] == "none yet"
