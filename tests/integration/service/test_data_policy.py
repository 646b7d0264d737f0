"""Data policy: a `store: false` answer reaches its waiting caller and is written nowhere; a
key can force that (`store_output never`) and lower the retention ceiling (`max_retention_days`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.domain import Role, StoreOutput
from app.main import create_app
from tests.support.app import count_rows, key, running
from tests.support.at_rest import echo, every_byte_stored, forms, pg_dump
from tests.support.fake_openai import FakeOpenAI, Reply, completion
from tests.support.mcp import error_of, mcp_as
from tests.support.routes import GET, LIST, RUN
from tests.support.settings import make_settings

RETENTION_DAYS = 30


@pytest.fixture
def marker() -> str:
    return f"UNSTORED-MARKER-{uuid.uuid4().hex}"


@pytest.fixture
def provider() -> AsyncIterator[FakeOpenAI]:
    with FakeOpenAI(responder=echo).running() as fake:
        yield fake


@asynccontextmanager
async def gateway(
    database_url: str, fake: FakeOpenAI, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(
        database_url,
        openai_api_key="sk-test-not-a-real-key",
        openai_base_url=fake.base_url,
        default_model="openai:gpt-test",
        result_retention_days=RETENTION_DAYS,
        **overrides,
    )
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            yield app, http


def _days(answer: dict[str, Any]) -> float:
    kept = datetime.fromisoformat(answer["expires_at"]) - datetime.fromisoformat(answer["created_at"])
    return kept / timedelta(days=1)


# -- store: false -------------------------------------------------------------------------------


async def test_a_store_false_answer_reaches_its_caller_and_is_in_no_table_nor_dump(database_url, provider, db, marker):
    body = {"prompt": f"Summarise: {marker}", "context": {"ticket": marker}, "store": False}
    async with gateway(database_url, provider) as (app, http):
        alice = await key(app)
        ran = (await http.post(RUN, json=body, headers=alice.headers)).json()
        async with mcp_as(app.state.components.service, alice) as mcp:
            over_mcp = (await mcp.call_tool("run_agent_task", body)).structured_content
        read = (await http.get(GET.format(ran["task_id"]), headers=alice.headers)).json()
        listed = (await http.get(LIST, headers=alice.headers)).json()["items"]

    for answer in (ran, over_mcp):
        assert answer["status"] == "succeeded"
        assert marker in answer["output"], "the waiting caller gets the answer"
        assert answer["output_stored"] is False
        assert answer["context"] == {"ticket": marker}
    assert read["output"] is None
    assert read["output_stored"] is False
    assert read["context"] == {}
    assert read["usage"]["total_tokens"] is not None, "the row keeps its metadata"
    assert [item["output_stored"] for item in listed] == [False, False]
    row = await db.fetchrow("SELECT * FROM agent_task WHERE id = $1", uuid.UUID(ran["task_id"]))
    assert (row["output"], row["context"], row["output_stored"]) == (None, None, False)
    assert (row["status"], row["model"], row["prompt_hash"]) == ("succeeded", "openai:gpt-test", ran["prompt_hash"])
    stored, dumped = await every_byte_stored(db), pg_dump(database_url)
    assert ran["task_id"].encode() in dumped
    for form in forms(marker):
        assert form not in stored
        assert form not in dumped


async def test_a_store_false_answer_is_in_no_log_span_or_metric(database_url, provider, marker, caplog, capfd, spans):
    caplog.set_level(logging.DEBUG)
    async with gateway(database_url, provider, log_level="DEBUG") as (app, http):
        alice = await key(app)
        ran = (await http.post(RUN, json={"prompt": marker, "store": False}, headers=alice.headers)).json()
        auditor = await key(app, Role.AUDITOR)
        metrics_text = (await http.get("/metrics", headers=auditor.headers)).text

    assert marker in ran["output"]
    traced = " ".join(f"{s.name} {dict(s.attributes or {})!r}" for s in spans.get_finished_spans())
    assert "agent task" in traced
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    out, err = capfd.readouterr()
    assert "agent_tasks_total" in metrics_text
    for text in (traced, logged, metrics_text, out, err):
        assert marker not in text


async def test_a_store_false_answer_is_never_a_cache_source_nor_served_from_the_cache(database_url, provider, db):
    async with gateway(database_url, provider) as (app, http):
        alice = await key(app)
        unstored = (await http.post(RUN, json={"prompt": "q", "store": False}, headers=alice.headers)).json()
        stored = (await http.post(RUN, json={"prompt": "q"}, headers=alice.headers)).json()
        unstored_again = (await http.post(RUN, json={"prompt": "q", "store": False}, headers=alice.headers)).json()

    assert provider.count == 3, "each of them asked the provider"
    assert [t["cached"] for t in (unstored, stored, unstored_again)] == [False, False, False]
    assert unstored_again["output"] == stored["output"]
    copies = await db.fetchval("SELECT count(*) FROM agent_task WHERE cached")
    assert copies == 0


async def test_a_store_false_task_in_flight_is_not_followed_by_an_identical_stored_one(database_url, provider):
    provider.enqueue(Reply(body=completion(text="slow and unstored"), delay=0.5))
    async with gateway(database_url, provider) as (app, http):
        alice = await key(app)
        first = asyncio.create_task(http.post(RUN, json={"prompt": "q", "store": False}, headers=alice.headers))
        while provider.count == 0:
            await asyncio.sleep(0.01)
        second = (await http.post(RUN, json={"prompt": "q"}, headers=alice.headers)).json()
        answered_first = not first.done()  # a follower would have waited for the slow one
        unstored = (await first).json()

    assert provider.count == 2
    assert answered_first
    assert (unstored["output"], unstored["output_stored"]) == ("slow and unstored", False)
    assert second["cached"] is False
    assert second["output_stored"] is True


async def test_wait_false_with_store_false_is_422_store_required_and_writes_nothing(database_url, provider, db):
    async with gateway(database_url, provider) as (app, http):
        alice = await key(app)
        rest = await http.post(
            RUN, params={"wait": "false"}, json={"prompt": "q", "store": False}, headers=alice.headers
        )
        async with mcp_as(app.state.components.service, alice) as mcp:
            mcp_error = error_of(
                await mcp.call_tool(
                    "run_agent_task", {"prompt": "q", "store": False, "wait": False}, raise_on_error=False
                )
            )

    assert rest.status_code == 422
    assert rest.json()["code"] == "store_required"
    assert mcp_error["code"] == "store_required"
    assert provider.count == 0
    assert await count_rows(db, "agent_task") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'create'") == 0


async def test_an_idempotent_replay_of_a_store_false_task_reads_its_row_without_the_answer(database_url, provider):
    headers = {"Idempotency-Key": "once-only"}
    async with gateway(database_url, provider) as (app, http):
        alice = await key(app)
        body = {"prompt": "q", "store": False}
        first = await http.post(RUN, json=body, headers={**alice.headers, **headers})
        replay = await http.post(RUN, json=body, headers={**alice.headers, **headers})

    assert first.json()["output"] is not None
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["task_id"] == first.json()["task_id"]
    assert (replay.json()["output"], replay.json()["output_stored"]) == (None, False)
    assert provider.count == 1


# -- per-key policy -----------------------------------------------------------------------------


async def test_a_key_that_never_stores_makes_every_task_store_false(database_url, provider, db, marker):
    async with gateway(database_url, provider) as (app, http):
        private = await key(app, store_output=StoreOutput.NEVER)
        ran = (await http.post(RUN, json={"prompt": marker, "store": True}, headers=private.headers)).json()
        again = (await http.post(RUN, json={"prompt": marker}, headers=private.headers)).json()
        later = await http.post(RUN, params={"wait": "false"}, json={"prompt": "q"}, headers=private.headers)

    assert marker in ran["output"]
    assert (ran["output_stored"], again["output_stored"], again["cached"]) == (False, False, False)
    assert provider.count == 2
    assert later.status_code == 422
    assert later.json()["code"] == "store_required"
    for form in forms(marker):
        assert form not in await every_byte_stored(db)


async def test_a_key_set_to_never_store_stops_storing_from_its_next_request(database_url, provider):
    async with gateway(database_url, provider) as (app, http):
        alice = await key(app)
        before = (await http.post(RUN, json={"prompt": "one"}, headers=alice.headers)).json()
        await app.state.components.keys.set_limits(
            alice.key_id, rate_limit_per_minute=None, max_running_tasks=None, store_output=StoreOutput.NEVER
        )
        after = (await http.post(RUN, json={"prompt": "two"}, headers=alice.headers)).json()

    assert (before["output_stored"], after["output_stored"]) == (True, False)


async def test_a_keys_max_retention_days_is_its_ceiling_and_its_default(database_url, provider):
    async with gateway(database_url, provider) as (app, http):
        short = await key(app, max_retention_days=7)
        generous = await key(app, max_retention_days=90)  # above the server's: the server's ceiling holds
        by_default = (await http.post(RUN, json={"prompt": "a"}, headers=short.headers)).json()
        shorter = (await http.post(RUN, json={"prompt": "b", "retention_days": 2.5}, headers=short.headers)).json()
        too_long = await http.post(RUN, json={"prompt": "c", "retention_days": 10}, headers=short.headers)
        generous_default = (await http.post(RUN, json={"prompt": "d"}, headers=generous.headers)).json()
        past_server = await http.post(RUN, json={"prompt": "e", "retention_days": 60}, headers=generous.headers)

    assert _days(by_default) == pytest.approx(7, abs=0.01)
    assert _days(shorter) == pytest.approx(2.5, abs=0.01)
    assert too_long.status_code == 422
    assert too_long.json()["code"] == "retention_too_long"
    assert "at most 7 (this API key's max_retention_days)" in too_long.json()["message"]
    assert "10" not in too_long.json()["message"], "the message names the ceiling, not the value sent"
    assert _days(generous_default) == pytest.approx(RETENTION_DAYS, abs=0.01)
    assert past_server.json()["code"] == "retention_too_long"
    assert "RESULT_RETENTION_DAYS" in past_server.json()["message"]


async def test_over_mcp_a_key_that_never_stores_stores_nothing_and_keeps_its_retention_ceiling(app, db):
    """The key's data policy reaches MCP calls too (it once did not: MCP callers had the defaults)."""
    private = await key(app, store_output=StoreOutput.NEVER, max_retention_days=7)
    async with mcp_as(app.state.service, private) as mcp:
        ran = (await mcp.call_tool("run_agent_task", {"prompt": "hello"})).structured_content

    row = await db.fetchrow("SELECT output_stored, output, expires_at - created_at AS kept FROM agent_task")
    assert (ran["output_stored"], row["output_stored"], row["output"]) == (False, False, None)
    assert row["kept"].days == 7
