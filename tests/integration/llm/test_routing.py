"""Routing: `provider:model`, aliases (MODEL_ALIASES) and the default model, through the REST API."""

from __future__ import annotations

from tests.support.fake_openai import FakeOpenAI
from tests.support.providers import run_task, serve
from tests.support.routes import RUN

ALIASES = {"fast": "offline:quick", "counted": "example:big"}


async def test_an_alias_runs_its_target_and_the_row_keeps_the_resolved_model(database_url, db):
    async with serve(database_url, model_aliases=ALIASES) as (http, caller):
        result = await run_task(http, caller, model="fast")
        read = await http.get(f"/resources/get_agent_result/{result['task_id']}", headers=caller.headers)
        listed = await http.get("/resources/agent_results", headers=caller.headers)

    assert result["status"] == "succeeded"
    assert result["model"] == "offline:quick"
    assert "[offline provider, model quick]" in result["output"]
    assert read.json()["model"] == "offline:quick"
    assert [item["model"] for item in listed.json()["items"]] == ["offline:quick"]
    assert await db.fetchval("SELECT model FROM agent_task") == "offline:quick"


async def test_an_alias_may_name_a_plugin_provider(database_url):
    async with serve(database_url, model_aliases=ALIASES) as (http, caller):
        result = await run_task(http, caller, model="counted")

    assert (result["model"], result["output"]) == ("example:big", "example provider: 2 words")


async def test_an_alias_may_name_an_endpoint(database_url):
    with FakeOpenAI().running() as fake:
        endpoints = [{"name": "local", "base_url": fake.base_url}]
        async with serve(database_url, provider_endpoints=endpoints, model_aliases={"llama": "local:llama3"}) as (
            http,
            caller,
        ):
            result = await run_task(http, caller, model="llama")

    assert (result["status"], result["model"]) == ("succeeded", "local:llama3")
    assert fake.requests[0]["model"] == "llama3"


async def test_the_default_model_may_be_an_alias(database_url, db):
    async with serve(database_url, model_aliases=ALIASES, default_model="counted") as (http, caller):
        result = await run_task(http, caller)

    assert result["model"] == "example:big"
    assert await db.fetchval("SELECT model FROM agent_task") == "example:big"


async def test_provider_model_names_still_route_directly_when_aliases_exist(database_url):
    async with serve(database_url, model_aliases=ALIASES) as (http, caller):
        result = await run_task(http, caller, model="offline:echo")

    assert result["model"] == "offline:echo"


UNKNOWN = [
    ("smart", "unknown model:"),  # never the name the caller made up
    ("nowhere:x", "unknown provider (before the ':')"),
    ("offline:", "the model is missing"),
    ("offline", "unknown model:"),  # a provider without a model
]


async def test_an_unknown_model_is_a_422_that_names_the_choices(database_url, db):
    async with serve(database_url, model_aliases=ALIASES) as (http, caller):
        for model, named in UNKNOWN:
            response = await http.post(RUN, json={"prompt": "x", "model": model}, headers=caller.headers)

            assert response.status_code == 422, model
            body = response.json()
            assert body["code"] == "unknown_model"
            assert named in body["message"]
            assert body["message"].endswith("providers: example, offline; aliases: counted, fast")

    assert await db.fetchval("SELECT count(*) FROM agent_task") == 0


async def test_without_aliases_the_message_says_so(database_url):
    async with serve(database_url) as (http, caller):
        response = await http.post(RUN, json={"prompt": "x", "model": "smart"}, headers=caller.headers)

    assert response.json()["message"].endswith("providers: example, offline; aliases: none configured")
