"""The OpenAI-compatible provider, against a local OpenAI-compatible server over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.domain import Role
from app.main import create_app
from tests.support.app import Caller, running
from tests.support.fake_openai import Reply, completion
from tests.support.routes import RUN
from tests.support.settings import make_settings


@pytest.fixture
async def gateway(database_url, fake_openai) -> AsyncIterator[tuple[httpx.AsyncClient, Caller]]:
    settings = make_settings(
        database_url,
        openai_api_key="sk-test-not-a-real-key",
        openai_base_url=fake_openai.base_url,
        default_model="openai:gpt-test",
        provider_timeout_seconds=1.5,
    )
    async with running(create_app(settings)) as app:
        record, plain, _ = await app.state.components.keys.create("tester", Role.CLIENT)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, Caller(record.id, plain, Role.CLIENT)


async def test_a_completion_is_stored_with_its_usage(gateway, fake_openai):
    http, caller = gateway
    fake_openai.enqueue(Reply(body=completion("Paris.", prompt_tokens=11, completion_tokens=3)))

    response = await http.post(
        RUN,
        json={"prompt": "Capital of France?", "params": {"temperature": 0.1, "max_tokens": 20}},
        headers=caller.headers,
    )

    result = response.json()
    assert result["status"] == "succeeded"
    assert result["output"] == "Paris."
    assert result["model"] == "openai:gpt-test"
    assert result["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14, "cost_usd": None}
    sent = fake_openai.requests[-1]
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert (sent["temperature"], sent["max_tokens"]) == (0.1, 20)
    assert "top_p" not in sent


async def test_the_offline_provider_stays_available_by_name(gateway, fake_openai):
    http, caller = gateway
    response = await http.post(RUN, json={"prompt": "hi", "model": "offline:echo"}, headers=caller.headers)
    assert response.json()["model"] == "offline:echo"
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("replies", "code"),
    [
        pytest.param(
            [
                Reply(
                    429,
                    {
                        "error": {
                            "message": "You exceeded your current quota",
                            "type": "insufficient_quota",
                            "code": "insufficient_quota",
                        }
                    },
                )
            ]
            * 3,
            "quota_exceeded",
            id="insufficient quota",
        ),
        pytest.param([Reply(500, {"error": {"message": "boom"}})] * 3, "provider_error", id="persistent 500"),
        pytest.param([Reply(raw=b"{this is not json")] * 3, "provider_error", id="malformed JSON"),
        pytest.param([Reply(delay=5)] * 3, "timeout", id="provider hangs"),
        pytest.param(
            [Reply(400, {"error": {"message": "bad", "code": "context_length_exceeded"}})], "provider_error", id="400"
        ),
    ],
)
async def test_a_provider_failure_is_a_stored_failed_task_with_a_stable_code(gateway, fake_openai, db, replies, code):
    http, caller = gateway
    fake_openai.enqueue(*replies)

    response = await http.post(RUN, json={"prompt": "hello"}, headers=caller.headers)

    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "failed"
    assert result["output"] is None
    assert result["error"]["code"] == code
    row = await db.fetchrow("SELECT status, error_code, completed_at FROM agent_task")
    assert (row["status"], row["error_code"]) == ("failed", code)
    assert row["completed_at"] is not None


async def test_a_provider_error_message_never_repeats_what_the_provider_said(gateway, fake_openai):
    http, caller = gateway
    marker = "PROMPT-ECHO-7f3a"
    fake_openai.enqueue(Reply(400, {"error": {"message": f"Your prompt '{marker}' is invalid", "code": "bad_prompt"}}))

    response = await http.post(RUN, json={"prompt": marker}, headers=caller.headers)

    assert response.json()["error"] == {"code": "provider_error", "message": "openai answered HTTP 400 (other)"}
    assert marker not in response.text.replace(response.json()["prompt_hash"], "")
