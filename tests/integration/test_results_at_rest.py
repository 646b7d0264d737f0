"""Answers sealed at rest, proved: a marker the provider puts in its answer is in no byte of
any table, of `pg_dump`, of the audit seals or of an audit export, while its owner reads it back;
moved ciphertext does not open."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.domain import Role
from app.main import create_app
from tests.support.app import Caller, running
from tests.support.at_rest import echo, every_byte_stored, forms, pg_dump
from tests.support.fake_openai import FakeOpenAI
from tests.support.mcp import mcp_as
from tests.support.routes import RUN
from tests.support.settings import make_settings


@pytest.fixture
def marker() -> str:
    return f"ANSWER-MARKER-{uuid.uuid4().hex}"


@pytest.fixture
async def gateway(database_url) -> AsyncIterator[tuple[httpx.AsyncClient, Caller, Any]]:
    with FakeOpenAI(responder=echo).running() as fake:
        settings = make_settings(database_url, openai_api_key="sk-test-not-a-real-key", openai_base_url=fake.base_url)
        async with running(create_app(settings)) as app:
            record, plain, _ = await app.state.components.keys.create("at-rest", Role.CLIENT)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield http, Caller(record.id, plain, Role.CLIENT), app.state.components


async def test_an_answer_that_quotes_the_prompt_is_in_no_table_and_no_dump(gateway, db, database_url, marker):
    http, caller, components = gateway
    body = {"prompt": f"Summarise: {marker}", "model": "openai:gpt-test", "context": {"ticket": marker}}
    ran = await http.post(RUN, json=body, headers=caller.headers)
    assert ran.json()["status"] == "succeeded"
    assert marker in ran.json()["output"]
    copy = await http.post(RUN, json=body, headers=caller.headers)  # a cache hit: sealed again for its row
    assert copy.json()["cached"] is True
    async with mcp_as(components.service, caller) as mcp:  # the same over MCP
        await mcp.call_tool("run_agent_task", {**body, "cache": False})

    for task in (ran.json(), copy.json()):
        read = await http.get(f"/resources/get_agent_result/{task['task_id']}", headers=caller.headers)
        assert marker in read.json()["output"], "the owner reads the answer back"
        assert read.json()["context"] == {"ticket": marker}
    _, auditor, _ = await components.keys.create("auditor", Role.AUDITOR)
    await components.trail.seal()
    audit_views = b""
    for path in (
        "/audit/events",
        "/audit/seals",
        "/audit/export?since=2026-01-01T00:00:00Z&until=2100-01-01T00:00:00Z",
    ):
        audit_views += (await http.get(path, headers={"Authorization": f"Bearer {auditor}"})).content
    assert b'"type":"manifest"' in audit_views.replace(b" ", b"")
    stored, dumped = await every_byte_stored(db), pg_dump(database_url)
    assert b"agent_task" in dumped
    assert ran.json()["task_id"].encode() in dumped
    for form in forms(marker):
        assert form not in stored
        assert form not in dumped
        assert form not in audit_views


async def test_a_ciphertext_moved_to_another_row_does_not_open(gateway, db):
    http, caller, _ = gateway
    first = (await http.post(RUN, json={"prompt": "one", "cache": False}, headers=caller.headers)).json()
    second = (await http.post(RUN, json={"prompt": "two", "cache": False}, headers=caller.headers)).json()
    await db.execute(
        "UPDATE agent_task SET output = (SELECT output FROM agent_task WHERE id = $1) WHERE id = $2",
        uuid.UUID(first["task_id"]),
        uuid.UUID(second["task_id"]),
    )
    read = await http.get(f"/resources/get_agent_result/{second['task_id']}", headers=caller.headers)
    assert read.status_code == 200
    assert read.json()["output"] is None
    assert read.json()["error"]["code"] == "result_unreadable"
    untouched = await http.get(f"/resources/get_agent_result/{first['task_id']}", headers=caller.headers)
    assert untouched.json()["output"] == first["output"]
