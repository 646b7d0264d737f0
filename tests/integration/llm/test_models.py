"""Bare model names (DEFAULT_PROVIDER), the model catalog (`GET /models`, MCP `list_models`) and
the cost of each task (genai-prices), against the local OpenAI-compatible server."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from app.domain import Role
from tests.support.app import key, replica
from tests.support.fake_openai import Reply, completion
from tests.support.mcp import mcp_as
from tests.support.providers import openai_at, run_task, serve
from tests.support.routes import RUN
from tests.support.settings import UNUSED_DB, make_settings

MARKER = "zebra-quartz-7719"  # a prompt word that must appear nowhere but in the request


# -- bare names ---------------------------------------------------------------------------------


async def test_a_bare_name_runs_on_the_default_provider(database_url, fake, db):
    async with serve(database_url, **openai_at(fake), default_provider="openai") as (http, caller):
        result = await run_task(http, caller, model="gpt-4o")

    assert (result["status"], result["model"]) == ("succeeded", "openai:gpt-4o")
    assert fake.requests[-1]["model"] == "gpt-4o"
    assert await db.fetchval("SELECT model FROM agent_task") == "openai:gpt-4o"


async def test_a_bare_name_may_hold_a_colon_when_no_provider_is_named_before_it(database_url, fake):
    endpoints = [{"name": "ollama", "base_url": fake.base_url}]
    async with serve(database_url, provider_endpoints=endpoints, default_provider="ollama") as (http, caller):
        tagged = await run_task(http, caller, model="llama3.2:8b")  # `llama3.2` names no provider
        named = await run_task(http, caller, model="offline:echo")  # `offline` does

    assert tagged["model"] == "ollama:llama3.2:8b"
    assert fake.requests[-1]["model"] == "llama3.2:8b"
    assert named["model"] == "offline:echo"


async def test_an_alias_wins_over_the_default_provider(database_url, fake):
    settings = openai_at(fake, default_provider="openai", model_aliases={"gpt-4o": "offline:pinned"})
    async with serve(database_url, **settings) as (http, caller):
        result = await run_task(http, caller, model="gpt-4o")

    assert result["model"] == "offline:pinned"
    assert fake.requests == []


async def test_without_a_default_provider_a_bare_name_is_a_422_that_says_what_would_work(database_url, fake, db):
    async with serve(database_url, **openai_at(fake), model_aliases={"fast": "openai:gpt-4o-mini"}) as (http, caller):
        response = await http.post(RUN, json={"prompt": "x", "model": "gpt-4o"}, headers=caller.headers)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "unknown_model"
    assert "gpt-4o" not in body["message"], "never the name the caller sent"
    assert "DEFAULT_PROVIDER" in body["message"]
    assert body["message"].endswith("providers: example, offline, openai; aliases: fast")
    assert await db.fetchval("SELECT count(*) FROM agent_task") == 0


def test_a_default_provider_that_names_nothing_stops_the_start():
    from app.main import create_app

    with pytest.raises(ValueError, match="DEFAULT_PROVIDER 'nowhere' names no provider"):
        create_app(make_settings(UNUSED_DB, default_provider="nowhere"))


async def test_the_default_model_may_be_bare_with_a_default_provider(database_url, fake):
    async with serve(database_url, **openai_at(fake, default_model="gpt-4o-mini"), default_provider="openai") as (
        http,
        caller,
    ):
        result = await run_task(http, caller)

    assert result["model"] == "openai:gpt-4o-mini"


# -- the catalog --------------------------------------------------------------------------------

CATALOG_SETTINGS = {
    "openai_api_key": "sk-test-secret-key-never-shown",
    "default_model": "fast",
    "default_provider": "openai",
    "model_aliases": {"fast": "openai:gpt-4o-mini", "local": "ollama:llama3.2"},
}


async def test_the_catalog_names_providers_kinds_capabilities_aliases_and_defaults(database_url, fake):
    # Credentials in the URL and the key: none of it may appear in the answer.
    secret_url = fake.base_url.replace("http://", "http://user:hunter2@")
    endpoints = [{"name": "ollama", "base_url": secret_url}]
    settings = CATALOG_SETTINGS | {"openai_base_url": fake.base_url, "provider_endpoints": endpoints}
    async with serve(database_url, **settings) as (http, caller):
        response = await http.get("/models", headers=caller.headers)
        anonymous = await http.get("/models")

    assert response.status_code == 200
    # OpenAI-compatible endpoints take a response_format natively; the others are prompted for it.
    streaming = {"streaming": True, "structured_output": True, "tools": False}
    whole = {"streaming": False, "structured_output": False, "tools": False}
    assert response.json() == {
        "providers": [
            {"name": "example", "kind": "plugin", "capabilities": whole},
            {"name": "offline", "kind": "offline", "capabilities": whole},
            {"name": "ollama", "kind": "openai", "capabilities": streaming},
            {"name": "openai", "kind": "openai", "capabilities": streaming},
        ],
        "aliases": [
            {"name": "fast", "target": "openai:gpt-4o-mini"},
            {"name": "local", "target": "ollama:llama3.2"},
        ],
        "default_model": "openai:gpt-4o-mini",
        "default_provider": "openai",
    }
    for secret in ("hunter2", "sk-test-secret", "127.0.0.1", "http"):
        assert secret not in response.text
    assert anonymous.status_code == 401


async def test_the_mcp_tool_answers_what_rest_does(database_url, fake):
    endpoints = [{"name": "ollama", "base_url": fake.base_url}]
    settings = CATALOG_SETTINGS | {"openai_base_url": fake.base_url, "provider_endpoints": endpoints}
    async with replica(database_url, **settings) as (app, http):
        caller = await key(app, Role.CLIENT)
        rest = (await http.get("/models", headers=caller.headers)).json()
        async with mcp_as(app.state.service, caller) as mcp:
            result = await mcp.call_tool("list_models", {})
            tools = {tool.name: tool for tool in await mcp.list_tools()}

    assert result.structured_content == rest
    assert tools["list_models"].annotations.read_only_hint is True


# -- cost ---------------------------------------------------------------------------------------


def expected_cost(model: str, prompt: int, completion_tokens: int) -> float:
    price = calc_price(Usage(input_tokens=prompt, output_tokens=completion_tokens), model, provider_id="openai")
    return float(Decimal(price.total_price).quantize(Decimal("1e-12")))


async def scrape_cost(http, auditor, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get("/metrics", headers=auditor.headers)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agent_cost_usd_total" and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_known_model_is_priced_in_the_result_the_row_and_the_metrics(database_url, fake, db, caplog):
    fake.enqueue(
        Reply(body=completion("Paris.", model="gpt-4o-mini-2024-07-18", prompt_tokens=1000, completion_tokens=500))
    )
    async with replica(database_url, **openai_at(fake)) as (app, http):
        caller, auditor = await key(app), await key(app, Role.AUDITOR)
        before = await scrape_cost(http, auditor, provider="openai", model="openai:gpt-4o-mini")
        with caplog.at_level(logging.DEBUG):
            result = await run_task(http, caller, model="openai:gpt-4o-mini", prompt=f"capital {MARKER}?")
        after = await scrape_cost(http, auditor, provider="openai", model="openai:gpt-4o-mini")

    cost = expected_cost("gpt-4o-mini", 1000, 500)
    assert cost > 0
    assert result["usage"] == {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500, "cost_usd": cost}
    assert float(await db.fetchval("SELECT cost_usd FROM agent_task")) == cost
    assert after - before == pytest.approx(cost)
    assert MARKER not in caplog.text


async def test_an_unknown_model_costs_null_and_moves_no_cost_metric(database_url, fake, db):
    async with replica(database_url, **openai_at(fake)) as (app, http):
        caller, auditor = await key(app), await key(app, Role.AUDITOR)
        before = await scrape_cost(http, auditor, provider="openai")
        result = await run_task(http, caller, model="openai:no-such-model-anywhere")
        after = await scrape_cost(http, auditor, provider="openai")

    assert result["usage"]["cost_usd"] is None
    assert result["usage"]["total_tokens"] == 9
    assert await db.fetchval("SELECT cost_usd FROM agent_task") is None
    assert after == before


async def test_an_endpoint_serving_a_model_nobody_prices_is_unpriced(database_url, fake):
    endpoints = [{"name": "ollama", "base_url": fake.base_url}]
    async with serve(database_url, provider_endpoints=endpoints) as (http, caller):
        result = await run_task(http, caller, model="ollama:llama3.2")

    assert result["usage"]["cost_usd"] is None


async def test_the_offline_provider_and_a_cache_hit_cost_nothing(database_url, fake):
    fake.enqueue(Reply(body=completion("Paris.", prompt_tokens=1000, completion_tokens=500)))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        offline = await run_task(http, caller, model="offline:echo")
        body = {"prompt": "capital of France?", "model": "openai:gpt-4o"}
        first = (await http.post(RUN, json=body, headers=caller.headers)).json()
        hit = (await http.post(RUN, json=body, headers=caller.headers)).json()

    assert offline["usage"]["cost_usd"] == 0.0
    assert first["usage"]["cost_usd"] == expected_cost("gpt-4o", 1000, 500)
    assert hit["cached"] is True
    assert hit["usage"] == first["usage"] | {"cost_usd": 0.0}


async def test_a_streamed_task_is_priced_too(database_url, fake):
    fake.enqueue(Reply(chunks=["Par", "is."]))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        response = await http.post(
            f"{RUN}?stream=true", json={"prompt": "capital?", "model": "openai:gpt-4o-mini"}, headers=caller.headers
        )
        task_id = response.text.split('"task_id":"', 1)[1].split('"', 1)[0]
        read = (await http.get(f"/resources/get_agent_result/{task_id}", headers=caller.headers)).json()

    assert read["usage"]["cost_usd"] == expected_cost("gpt-4o-mini", 7, 2)
