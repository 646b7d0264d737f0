"""The service with a provider configuration, its REST API in process, and a client key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.domain import Role
from app.main import create_app
from tests.support.app import Caller, running
from tests.support.fake_openai import FakeOpenAI
from tests.support.routes import RUN
from tests.support.settings import make_settings

# Small and fast: one attempt may take 0.5 s, the whole call 5 s.
FAST = {
    "provider_timeout_seconds": 5.0,
    "provider_request_timeout_seconds": 0.5,
    "provider_max_retries": 2,
    "provider_retry_max_seconds": 4.0,
}


@asynccontextmanager
async def serve(database_url: str, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Caller]]:
    """The service with these settings, its REST API, and a client key."""
    settings = make_settings(database_url, **(FAST | overrides))
    async with running(create_app(settings)) as app:
        record, plain, _ = await app.state.components.keys.create("provider-tests", Role.CLIENT)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, Caller(record.id, plain, Role.CLIENT)


def openai_at(fake: FakeOpenAI, **overrides: Any) -> dict[str, Any]:
    return {
        "openai_api_key": "sk-test-not-a-real-key",
        "openai_base_url": fake.base_url,
        "default_model": "openai:gpt-test",
    } | overrides


async def run_task(http: httpx.AsyncClient, caller: Caller, **task: Any) -> dict[str, Any]:
    """POST a task (the response cache off: every test counts real provider calls)."""
    response = await http.post(RUN, json={"prompt": "hello there", "cache": False} | task, headers=caller.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
