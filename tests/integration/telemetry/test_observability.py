"""Metrics at /metrics move after real requests; tasks and purges get spans; health checks do not."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.domain import Role
from tests.support.app import key, replica
from tests.support.routes import RUN


async def scrape(client, caller) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers=caller.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all((k, v) in sample_labels for k, v in labels.items())
    )


async def test_metrics_need_a_key(client):
    assert (await client.get("/metrics")).status_code == 401


async def test_metrics_move_after_real_requests(client, alice, auditor, app_components, db):
    before = await scrape(client, auditor)
    created = (await client.post(RUN, json={"prompt": "metrics please"}, headers=alice.headers)).json()
    await client.post(RUN, json={"prompt": "metrics please"}, headers=alice.headers)  # a cache hit
    await client.get(f"/resources/get_agent_result/{created['task_id']}", headers=alice.headers)
    await client.get(f"/resources/get_agent_result/{uuid.uuid4()}", headers=alice.headers)
    await db.execute("UPDATE agent_task SET expires_at = now() - interval '1 second'")
    await app_components.purger.run()
    after = await scrape(client, auditor)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("agent_tasks_total", status="succeeded", provider="offline", cached="false") == 1
    assert moved("agent_tasks_total", status="succeeded", cached="true") == 1
    assert moved("agent_tokens_total", provider="offline", kind="prompt") == created["usage"]["prompt_tokens"]
    assert moved("agent_task_duration_seconds_count", provider="offline") == 2  # the hit is a task too
    assert moved("agent_cache_lookups_total", result="hit") == 1
    assert moved("agent_cache_lookups_total", result="miss") == 1
    assert moved("agent_audited_reads_total", channel="rest", outcome="ok") == 1
    assert moved("agent_audited_reads_total", channel="rest", outcome="not_found") == 1
    assert moved("agent_purge_runs_total", outcome="ok") == 1
    assert moved("agent_purge_rows_deleted_total", table="agent_task") == 2
    assert any(name == "agent_db_pool_connections_in_use" for name, _ in after)


async def test_a_task_gets_a_span_with_its_figures_and_no_prompt(client, alice, spans):
    created = (await client.post(RUN, json={"prompt": "span this"}, headers=alice.headers)).json()

    task_spans = [s for s in spans.get_finished_spans() if s.name.startswith("agent task") and s.attributes]
    [span] = [s for s in task_spans if s.attributes.get("task_id") == created["task_id"]]
    attributes = dict(span.attributes)
    assert attributes["owner_key_id"] == str(alice.key_id)
    assert attributes["model"] == "offline:echo"
    assert attributes["status"] == "succeeded"
    assert attributes["cached"] is False
    assert attributes["prompt_tokens"] == created["usage"]["prompt_tokens"]
    assert attributes["latency_s"] > 0
    assert "span this" not in str(attributes)


async def test_a_purge_gets_a_span(app_components, spans):
    await app_components.purger.run()
    [span] = [s for s in spans.get_finished_spans() if s.name == "retention purge"]
    assert span.attributes["outcome"] == "ok"
    assert span.attributes["deleted.agent_task"] == 0


async def test_health_checks_are_not_traced_but_requests_are(client, alice, spans):
    await client.get("/healthz")
    await client.get("/readyz")
    await client.get("/resources/agent_results", headers=alice.headers)
    names = [s.name for s in spans.get_finished_spans()]
    assert not any("healthz" in n or "readyz" in n for n in names)
    assert any("/resources/agent_results" in n for n in names)


async def test_one_request_id_ties_the_answer_the_audit_row_and_the_trace(client, alice, db, spans):
    created = (await client.post(RUN, json={"prompt": "tie"}, headers=alice.headers)).json()
    response = await client.get(f"/resources/get_agent_result/{created['task_id']}", headers=alice.headers)
    request_id = response.headers["x-request-id"]

    audited = await db.fetchval("SELECT request_id FROM audit_event WHERE action = 'read'")
    traced = [s for s in spans.get_finished_spans() if (s.attributes or {}).get("request_id") == request_id]
    assert audited == request_id
    assert traced, "a span of this request carries its id"


async def test_junk_model_names_crowd_out_neither_known_models_nor_other_providers(database_url, fake_openai):
    tag = uuid.uuid4().hex[:8]
    lab = f"lab{tag}"  # a provider of its own: no other test has used its labels
    routing = {
        "model_aliases": {"house": f"offline:house-{tag}"},
        "default_model": f"offline:main-{tag}",
        "provider_endpoints": [{"name": lab, "base_url": fake_openai.base_url}],
    }
    async with replica(database_url, **routing) as (app, http):
        junk, other, scraper = await key(app), await key(app), await key(app, Role.AUDITOR)
        for start in range(0, 300, 20):
            await asyncio.gather(
                *(
                    http.post(RUN, json={"prompt": "x", "model": f"offline:junk-{tag}-{i}"}, headers=junk.headers)
                    for i in range(start, start + 20)
                )
            )
        for model in ("house", None, f"{lab}:llama3"):
            response = await http.post(RUN, json={"prompt": "real", "model": model}, headers=other.headers)
            assert response.json()["status"] == "succeeded"
        samples = await scrape(http, scraper)

    labels = {dict(sample_labels)["model"] for name, sample_labels in samples if name == "agent_tasks_total"}
    assert {f"offline:house-{tag}", f"offline:main-{tag}", f"{lab}:llama3"} <= labels
    junk_labels = {label for label in labels if label.startswith(f"offline:junk-{tag}")}
    assert len(junk_labels) <= 10  # a provider's unknown models: at most 10 labels, then `offline:other`
    assert total(samples, "agent_tasks_total", model="offline:other") >= 300 - len(junk_labels)


async def test_the_purge_metric_counts_rows_deleted(client, auditor, app_components, db, make_caller):
    caller = await make_caller(Role.CLIENT)
    for i in range(3):
        await client.post(RUN, json={"prompt": f"p{i}", "retention_days": 1e-6}, headers=caller.headers)
    before = await scrape(client, auditor)
    await db.execute("UPDATE agent_task SET expires_at = now() - $1::interval", timedelta(seconds=1))
    await app_components.purger.run()
    after = await scrape(client, auditor)
    deleted = total(after, "agent_purge_rows_deleted_total", table="agent_task") - total(
        before, "agent_purge_rows_deleted_total", table="agent_task"
    )
    assert deleted == 3
    assert re.search(
        r"agent_purge_runs_total\{[^}]*outcome=\"ok\"", (await client.get("/metrics", headers=auditor.headers)).text
    )


async def test_sql_statements_are_traced_without_their_parameters(client, alice, spans):
    created = (
        await client.post(RUN, json={"prompt": "sql", "context": {"ticket": "T-991"}}, headers=alice.headers)
    ).json()
    await client.get(f"/resources/get_agent_result/{created['task_id']}", headers=alice.headers)

    db_spans = [s for s in spans.get_finished_spans() if s.name.startswith("postgresql ")]
    statements = [s.attributes["db.statement"] for s in db_spans]
    assert any("INSERT INTO audit_event" in text and "agent_task" in text for text in statements)
    assert all(s.attributes["db.system"] == "postgresql" for s in db_spans)
    everything = repr([dict(s.attributes) for s in db_spans])
    assert created["task_id"] not in everything
    assert "T-991" not in everything
    assert str(alice.key_id) not in everything


DOCS = Path(__file__).resolve().parents[3] / "docs" / "operations.md"


def documented_series() -> dict[str, dict[str, list[str]]]:
    """The metrics table of docs/operations.md: each metric's sample name, and its labels with the
    values listed in parentheses (`outcome` (`ok`, `error`))."""
    section = DOCS.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    series = {}
    for row in re.finditer(r"^\| `(agent_\w+)`( \(histogram\))? \|([^|]*)\|", section, re.MULTILINE):
        name = row[1] + ("_count" if row[2] else "")
        labels = re.finditer(r"`(\w+)`(?: \(([^)]*)\))?", row[3])
        series[name] = {label[1]: re.findall(r"`(\w+)`", label[2] or "") for label in labels}
    return series


async def test_every_documented_series_exists_from_start_up_at_zero(database_url, fake_openai):
    lab = f"lab{uuid.uuid4().hex[:8]}"  # a provider nobody has used: its series can only be the zeros
    endpoints = [{"name": lab, "base_url": fake_openai.base_url}]
    async with replica(database_url, provider_endpoints=endpoints, default_model=f"{lab}:main") as (app, http):
        samples = await scrape(http, await key(app, Role.AUDITOR))

    documented = documented_series()
    assert len(documented) >= 9, "the docs' metrics table was not found"
    for name, labels in documented.items():
        assert any(sample == name for sample, _ in samples), f"{name} is missing"
        for label, values in labels.items():
            for value in values:
                assert any(sample == name and (label, value) in sample_labels for sample, sample_labels in samples), (
                    f"{name}{{{label}={value!r}}} is missing"
                )
    # Earlier tests in this process may have moved the shared series; this provider's are fresh.
    fresh = {series: value for series, value in samples.items() if ("provider", lab) in series[1]}
    assert {name for name, _ in fresh} >= {
        "agent_tasks_total",
        "agent_tokens_total",
        "agent_task_duration_seconds_count",
    }
    assert set(fresh.values()) == {0}
    failed = {"provider": lab, "model": f"{lab}:main", "status": "failed", "error_code": "timeout", "cached": "false"}
    assert any(name == "agent_tasks_total" and set(failed.items()) <= set(labels) for name, labels in fresh)
