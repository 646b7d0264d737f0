"""Structured output (`response_format`) over REST and MCP, against the local OpenAI-compatible
server: native and prompted requests, validation, re-asks, `invalid_output`, the bounds' 422s,
and the schema as part of the cache key and the request hash."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from app.domain import Role
from tests.support.app import count_rows, key, replica
from tests.support.fake_openai import Reply, completion
from tests.support.mcp import error_of, mcp_as
from tests.support.providers import openai_at, serve
from tests.support.routes import GET, RUN

KG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string", "enum": ["person", "organization", "place"]},
                },
                "required": ["id", "type"],
                "additionalProperties": False,
            },
        },
        "relations": {"type": "array", "items": {"$ref": "#/$defs/relation"}},
    },
    "required": ["entities", "relations"],
    "additionalProperties": False,
    "$defs": {
        "relation": {
            "type": "object",
            "properties": {"source": {"type": "string"}, "target": {"type": "string"}, "label": {"type": "string"}},
            "required": ["source", "target", "label"],
            "additionalProperties": False,
        }
    },
}
KG_FORMAT = {"type": "json_schema", "json_schema": {"name": "kg_extraction", "schema": KG_SCHEMA, "strict": True}}
KG_ANSWER = {
    "entities": [{"id": "Ada Lovelace", "type": "person"}, {"id": "London", "type": "place"}],
    "relations": [{"source": "Ada Lovelace", "target": "London", "label": "born_in"}],
}
# Valid JSON that breaks the schema: `type` is not one of the enum's.
OFF_SCHEMA = {"entities": [{"id": "Ada", "type": "robot"}], "relations": []}


def answer(value: Any) -> Reply:
    return Reply(body=completion(value if isinstance(value, str) else json.dumps(value)))


async def post(http: httpx.AsyncClient, caller: Any, **task: Any) -> httpx.Response:
    body = {"prompt": "Extract the entities: Ada Lovelace was born in London.", "cache": False} | task
    return await http.post(RUN, json=body, headers=caller.headers)


# -- answered ---------------------------------------------------------------------------------


async def test_a_schema_goes_natively_to_the_provider_and_the_answer_comes_back_parsed(database_url, fake, db):
    fake.enqueue(answer(KG_ANSWER))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        created = (await post(http, caller, response_format=KG_FORMAT)).json()
        read = (await http.get(GET.format(created["task_id"]), headers=caller.headers)).json()

    assert created["status"] == "succeeded", created
    assert created["output_json"] == KG_ANSWER
    assert json.loads(created["output"]) == KG_ANSWER
    assert read["output_json"] == KG_ANSWER
    sent = fake.requests[-1]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "kg_extraction", "schema": KG_SCHEMA, "strict": True},
    }
    assert [m["role"] for m in sent["messages"]] == ["user"]  # native: nothing added to the prompt
    row = await db.fetchrow("SELECT response_format, output FROM agent_task")
    assert row["response_format"] == "json_schema"
    assert b"Lovelace" not in row["output"]  # sealed at rest, like every answer


async def test_a_plain_task_is_unchanged(database_url, fake, db):
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        plain = (await post(http, caller)).json()
        text = (await post(http, caller, response_format={"type": "text"})).json()

    assert plain["output"] == "Paris."
    assert plain["output_json"] is None
    assert text["output"] == "Paris."
    assert text["output_json"] is None
    assert all("response_format" not in sent for sent in fake.requests)
    assert await db.fetchval("SELECT count(*) FROM agent_task WHERE response_format IS NULL") == 2


async def test_json_object_asks_for_any_object_and_refuses_other_json(database_url, fake):
    fake.enqueue(answer([1, 2]), answer({"any": "object"}))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        result = (await post(http, caller, response_format={"type": "json_object"})).json()

    assert result["output_json"] == {"any": "object"}
    first = fake.requests[0]
    assert first["response_format"] == {"type": "json_object"}
    # OpenAI's json_object mode needs the messages to name JSON: the system message does.
    assert first["messages"][0]["role"] == "system"
    assert "JSON object" in first["messages"][0]["content"]


async def test_an_endpoint_without_native_support_is_asked_in_the_system_message(database_url, fake):
    endpoints = [{"name": "plain", "base_url": fake.base_url, "structured_output": False}]
    fake.enqueue(answer(f"```json\n{json.dumps(KG_ANSWER)}\n```"))  # a fence, as prompted models like to add
    async with serve(database_url, provider_endpoints=endpoints) as (http, caller):
        result = (await post(http, caller, model="plain:m", response_format=KG_FORMAT)).json()
        catalog = (await http.get("/models", headers=caller.headers)).json()

    assert result["status"] == "succeeded"
    assert result["output_json"] == KG_ANSWER
    assert result["output"] == json.dumps(KG_ANSWER)  # the JSON text, without the fence
    sent = fake.requests[-1]
    assert "response_format" not in sent
    system, user = sent["messages"]
    assert system["role"] == "system"
    assert "kg_extraction" in system["content"]
    assert json.loads(system["content"].split("\n", 1)[1]) == KG_SCHEMA
    assert user["role"] == "user"
    capabilities = {p["name"]: p["capabilities"]["structured_output"] for p in catalog["providers"]}
    assert capabilities == {"example": False, "offline": False, "plain": False}


async def test_a_templated_system_message_gets_the_instructions_appended(database_url, fake):
    endpoints = [{"name": "plain", "base_url": fake.base_url, "structured_output": False}]
    fake.enqueue(answer(KG_ANSWER))
    async with serve(database_url, provider_endpoints=endpoints) as (http, caller):
        result = await post(http, caller, model="plain:m", template="summarize", response_format=KG_FORMAT)

    assert result.status_code == 200, result.text
    messages = fake.requests[-1]["messages"]
    assert [m["role"] for m in messages].count("system") == 1
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].endswith(json.dumps(KG_SCHEMA, separators=(",", ":")))


# -- re-asked ---------------------------------------------------------------------------------


async def test_an_invalid_answer_is_asked_again_with_what_was_wrong(database_url, fake):
    fake.enqueue(answer("Sure! Here are the entities."), answer(KG_ANSWER))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        result = (await post(http, caller, response_format=KG_FORMAT)).json()

    assert result["status"] == "succeeded"
    assert result["output_json"] == KG_ANSWER
    assert fake.count == 2
    again = fake.requests[1]["messages"]
    assert [m["role"] for m in again] == ["user", "assistant", "user"]
    assert again[1]["content"] == "Sure! Here are the entities."
    assert "not JSON" in again[2]["content"]
    # Every attempt's tokens (the fake's completions: 7 + 2 each).
    assert result["usage"]["total_tokens"] == 18
    assert result["usage"]["prompt_tokens"] == 14


async def test_an_answer_that_never_validates_fails_invalid_output_and_keeps_no_text(database_url, fake, db):
    fake.enqueue(answer(OFF_SCHEMA), answer(OFF_SCHEMA))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        result = (await post(http, caller, response_format=KG_FORMAT)).json()

    assert result["status"] == "failed"
    assert result["error"]["code"] == "invalid_output"
    assert "enum" in result["error"]["message"]
    assert "2 attempt" in result["error"]["message"]
    assert "robot" not in json.dumps(result)
    assert result["output"] is None
    assert result["output_json"] is None
    assert result["usage"]["total_tokens"] == 18
    assert fake.count == 2  # STRUCTURED_OUTPUT_RETRIES=1: one re-ask
    reask = fake.requests[1]["messages"][-1]["content"]
    assert "$.entities[0].type" in reask
    assert "enum" in reask
    assert "robot" not in reask
    row = await db.fetchrow("SELECT output, error_code FROM agent_task")
    assert (row["output"], row["error_code"]) == (None, "invalid_output")


async def test_structured_output_retries_bounds_the_re_asks(database_url, fake):
    fake.enqueue(*(answer("no") for _ in range(4)))
    async with serve(database_url, **openai_at(fake), structured_output_retries=0) as (http, caller):
        none = (await post(http, caller, response_format=KG_FORMAT)).json()
    async with serve(database_url, **openai_at(fake), structured_output_retries=2) as (http, caller):
        two = (await post(http, caller, response_format=KG_FORMAT)).json()

    assert none["error"]["code"] == two["error"]["code"] == "invalid_output"
    assert fake.count == 1 + 3


# -- refused ----------------------------------------------------------------------------------

MARKER = "SCHEMA-MARKER-7f3a"


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": MARKER}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def _with(schema: Any, **spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema} | spec}


BAD_FORMATS = {
    "unknown type": ({"type": f"yaml{MARKER}"}, "type must be one of"),
    "unknown field": ({"type": "json_object", MARKER: 1}, "unknown field"),
    "json_schema missing": ({"type": "json_schema"}, "json_schema must be an object"),
    "name missing": ({"type": "json_schema", "json_schema": {"schema": {}}}, "name must match"),
    "bad name": (_with({}, name=f"kg extraction {MARKER}"), "name must match"),
    "long name": (_with({}, name="n" * 65), "name must match"),
    "unknown json_schema field": (_with({}, **{MARKER: True}), "takes only name, schema"),
    "schema not an object": (_with([MARKER]), "must be a JSON object"),
    "bad strict": (_with({}, strict=MARKER), "strict must be"),
    "too large": (_with({"type": "string", "description": MARKER * 4000}), "the limit is 65536"),
    "too deep": (_with(_deep(32)), "more than 32 levels deep"),
    "unknown keyword": (_with({"type": "object", MARKER: {}}), "outside the allowed list"),
    "not allowed keyword": (_with({"allOf": [{"description": MARKER}]}), "outside the allowed list"),
    "remote $ref": (_with({"$ref": f"https://example.com/{MARKER}"}), "$ref must point inside"),
    "dangling $ref": (_with({"$ref": f"#/$defs/{MARKER}"}), "points at nothing"),
    "bad pattern": (_with({"type": "string", "pattern": f"({MARKER}"}), "not a valid regular expression"),
    "not JSON Schema": (_with({"type": MARKER}), "not a valid JSON Schema"),
    "subschema not an object": (_with({"items": MARKER}), "every subschema"),
}


@pytest.mark.parametrize(("response_format", "rule"), BAD_FORMATS.values(), ids=BAD_FORMATS.keys())
async def test_every_bound_is_a_422_that_names_the_rule_and_writes_nothing(client, alice, db, response_format, rule):
    response = await post(client, alice, response_format=response_format)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_response_format"
    assert rule in body["message"]
    assert MARKER not in response.text
    assert await count_rows(db, "agent_task") == 0
    assert await count_rows(db, "audit_event") == 0


async def test_a_schema_at_the_bounds_is_taken(database_url, fake):
    fake.enqueue(answer([["x"]]))
    at_the_limit = {"type": "array", "items": _deep(30)["items"]}  # 32 levels, counting the root
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        response = await post(http, caller, response_format=_with(at_the_limit, name="a" * 64))

    assert response.status_code == 200, response.text


# -- cached and replayed ----------------------------------------------------------------------


async def test_the_schema_is_part_of_the_cache_key(database_url, fake):
    other = _with({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    fake.enqueue(answer(KG_ANSWER), answer({"n": 1}))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        first = (await post(http, caller, response_format=KG_FORMAT, cache=True)).json()
        different = (await post(http, caller, response_format=other, cache=True)).json()
        plain = (await post(http, caller, cache=True)).json()
        again = (await post(http, caller, response_format=KG_FORMAT, cache=True)).json()

    assert (first["cached"], different["cached"], plain["cached"]) == (False, False, False)
    assert different["output_json"] == {"n": 1}
    assert plain["output_json"] is None
    assert again["cached"] is True
    assert again["output_json"] == KG_ANSWER  # a cache hit reads as structured too
    assert fake.count == 3


async def test_an_idempotency_key_conflicts_when_the_schema_differs(database_url, fake):
    fake.enqueue(answer(KG_ANSWER))
    other = _with({"type": "object"})
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        headers = caller.headers | {"Idempotency-Key": "kg-1"}
        body = {"prompt": "Extract.", "response_format": KG_FORMAT}
        first = await http.post(RUN, json=body, headers=headers)
        replayed = await http.post(RUN, json=body, headers=headers)
        conflict = await http.post(RUN, json=body | {"response_format": other}, headers=headers)

    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["output_json"] == first.json()["output_json"] == KG_ANSWER
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"


async def test_a_not_stored_structured_answer_is_parsed_from_memory(database_url, fake, db):
    fake.enqueue(answer(KG_ANSWER))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        result = (await post(http, caller, response_format=KG_FORMAT, store=False)).json()

    assert result["output_json"] == KG_ANSWER
    assert await db.fetchval("SELECT output FROM agent_task") is None


async def test_a_single_flight_follower_reads_the_leaders_answer_as_structured(database_url, fake):
    fake.enqueue(Reply(body=completion(json.dumps(KG_ANSWER)), delay=0.3))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        leader, follower = await asyncio.gather(
            post(http, caller, response_format=KG_FORMAT, cache=True),
            post(http, caller, response_format=KG_FORMAT, cache=True),
        )

    assert leader.json()["output_json"] == follower.json()["output_json"] == KG_ANSWER
    assert fake.count == 1


# -- streamed ---------------------------------------------------------------------------------


def events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = [line.partition(":") for line in block.splitlines() if line and not line.startswith(":")]
        lines = {name: value.removeprefix(" ") for name, _, value in fields}
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


async def test_a_stream_sends_the_pieces_and_a_parsed_result(database_url, fake):
    text = json.dumps(KG_ANSWER)
    fake.enqueue(Reply(chunks=[text[:10], text[10:]]))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        body = {"prompt": "Extract.", "response_format": KG_FORMAT}
        streamed = await http.post(RUN, params={"stream": "true"}, json=body, headers=caller.headers)

    names = [name for name, _ in events(streamed.text)]
    assert names == ["task", "delta", "delta", "result"]
    assert events(streamed.text)[-1][1]["output_json"] == KG_ANSWER
    assert fake.requests[-1]["response_format"]["type"] == "json_schema"


async def test_a_streamed_answer_that_does_not_validate_ends_with_invalid_output_and_no_re_ask(database_url, fake):
    fake.enqueue(Reply(chunks=["not", " json"]))
    async with serve(database_url, **openai_at(fake)) as (http, caller):
        body = {"prompt": "Extract.", "response_format": KG_FORMAT}
        streamed = await http.post(RUN, params={"stream": "true"}, json=body, headers=caller.headers)

    name, data = events(streamed.text)[-1]
    assert (name, data["code"]) == ("error", "invalid_output")
    assert fake.count == 1  # the pieces were sent: a re-ask would send a second answer after them


# -- over MCP ---------------------------------------------------------------------------------


async def test_mcp_takes_a_response_format_and_answers_output_json(database_url, fake, db):
    fake.enqueue(answer(KG_ANSWER), answer(OFF_SCHEMA), answer(OFF_SCHEMA))
    settings = openai_at(fake)
    async with replica(database_url, **settings) as (app, _):
        caller = await key(app, Role.CLIENT)
        async with mcp_as(app.state.components.service, caller) as mcp:
            ok = await mcp.call_tool("run_agent_task", {"prompt": "Extract.", "response_format": KG_FORMAT})
            failed = await mcp.call_tool(
                "run_agent_task", {"prompt": "Extract.", "response_format": KG_FORMAT, "cache": False}
            )
            refused = await mcp.call_tool(
                "run_agent_task",
                {"prompt": "x", "response_format": _with({"allOf": [{"description": MARKER}]})},
                raise_on_error=False,
            )

    assert ok.structured_content["output_json"] == KG_ANSWER
    assert failed.structured_content["status"] == "failed"
    assert failed.structured_content["error"]["code"] == "invalid_output"
    assert error_of(refused)["code"] == "invalid_response_format"
    assert MARKER not in str(refused.content)
    assert await count_rows(db, "agent_task") == 2


async def test_a_prompted_provider_that_answers_no_json_fails_invalid_output(client, alice):
    result = (await post(client, alice, model="offline:echo", response_format={"type": "json_object"})).json()

    assert result["status"] == "failed"
    assert result["error"]["code"] == "invalid_output"


def test_the_kg_example_of_the_docs_is_a_valid_format() -> None:
    from app.llm.structured import parse_response_format

    parsed = parse_response_format(KG_FORMAT)
    assert parsed is not None
    assert parsed.name == "kg_extraction"
