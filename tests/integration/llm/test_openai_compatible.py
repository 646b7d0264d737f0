"""The OpenAI-compatible provider's resilience, and named OpenAI-compatible endpoints, over real HTTP
end to end: retries and the waits a provider asks for, bounded attempts and deadlines, a stable
error code for each failure, retries logged without the prompt.

The service runs with its REST API in process; the provider is `tests/support/fake_openai.py`,
a real OpenAI-compatible server on loopback, so retries, waits and timeouts are what
the SDK and tenacity really do on the wire. Nothing of ours is patched.
"""

from __future__ import annotations

import email.utils
import logging
import time
import uuid

import pytest

from app.devdb.cluster import free_port
from tests.support.fake_openai import Reply, completion, error_reply
from tests.support.providers import openai_at, run_task, serve
from tests.support.routes import RUN

QUOTA = {
    "error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}
}


# -- success ----------------------------------------------------------------------------------


async def test_a_completion_is_stored_with_its_usage_in_one_request(database_url, fake_openai, db):
    fake_openai.enqueue(Reply(body=completion("Paris.", prompt_tokens=11, completion_tokens=3)))
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        result = await run_task(http, caller, prompt="Capital of France?")

    assert result["status"] == "succeeded"
    assert (result["output"], result["model"]) == ("Paris.", "openai:gpt-test")
    assert result["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14, "cost_usd": None}
    assert fake_openai.count == 1
    assert fake_openai.headers[0]["authorization"] == "Bearer sk-test-not-a-real-key"
    row = await db.fetchrow("SELECT status, model, total_tokens FROM agent_task")
    assert tuple(row) == ("succeeded", "openai:gpt-test", 14)


# -- retried, then successful ------------------------------------------------------------------


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        pytest.param(lambda: {"Retry-After": "1"}, 0.95, 1.45, id="Retry-After seconds"),
        # Shorter than the shortest backoff (0.5 s): the header, not the backoff, set the wait.
        pytest.param(lambda: {"retry-after-ms": "150"}, 0.14, 0.45, id="retry-after-ms"),
        # HTTP dates have whole seconds: 2 s from now is between 1 and 2 s away.
        pytest.param(lambda: {"Retry-After": _http_date(2)}, 0.95, 2.45, id="Retry-After HTTP date"),
    ],
)
async def test_a_429_is_retried_after_the_wait_the_provider_asked_for(database_url, fake_openai, headers, low, high):
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        fake_openai.enqueue(Reply(429, {"error": {"code": "rate_limit_exceeded"}}, headers=headers()))
        result = await run_task(http, caller)

    assert result["status"] == "succeeded"
    assert fake_openai.count == 2
    assert low <= fake_openai.gaps()[0] <= high


async def test_retryable_statuses_are_retried(database_url, fake_openai):
    statuses = [408, 409, 500, 502, 503, 504]
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        for status in statuses:
            fake_openai.enqueue(Reply(status, {"error": {"code": "busy"}}, headers={"Retry-After": "0"}))
            result = await run_task(http, caller)
            assert result["status"] == "succeeded", status

    assert fake_openai.count == 2 * len(statuses)


async def test_an_attempt_that_times_out_is_retried(database_url, fake_openai):
    fake_openai.enqueue(Reply(delay=3))
    async with serve(database_url, **openai_at(fake_openai, provider_request_timeout_seconds=0.3)) as (http, caller):
        started = time.monotonic()
        result = await run_task(http, caller)
        elapsed = time.monotonic() - started

    assert result["status"] == "succeeded"
    assert fake_openai.count == 2
    assert elapsed < 2.5  # 0.3 s attempt, at most 1 s of backoff, then an instant answer


async def test_a_connection_dropped_mid_answer_is_retried(database_url, fake_openai):
    fake_openai.enqueue(Reply(drop=True))
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        result = await run_task(http, caller)

    assert result["status"] == "succeeded"
    assert fake_openai.count == 2


# -- failures: bounded, and each with its stable code --------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_a_persistent_500_gives_up_after_the_bounded_attempts(database_url, fake_openai, db, max_retries):
    fake_openai.enqueue(*[Reply(500, {"error": {"message": "boom"}})] * 10)
    settings = openai_at(fake_openai, provider_max_retries=max_retries)
    async with serve(database_url, **settings) as (http, caller):
        result = await run_task(http, caller)

    attempts = max_retries + 1
    assert fake_openai.count == attempts
    assert result["status"] == "failed"
    suffix = f"; gave up after {attempts} attempts" if attempts > 1 else ""
    assert result["error"] == {"code": "provider_error", "message": f"openai answered HTTP 500{suffix}"}
    row = await db.fetchrow("SELECT status, error_code FROM agent_task")
    assert tuple(row) == ("failed", "provider_error")


async def test_persistent_rate_limiting_ends_rate_limited(database_url, fake_openai):
    fake_openai.enqueue(*[Reply(429, {"error": {"code": "rate_limit_exceeded"}}, headers={"Retry-After": "0"})] * 5)
    async with serve(database_url, **openai_at(fake_openai, provider_max_retries=1)) as (http, caller):
        result = await run_task(http, caller)

    assert fake_openai.count == 2
    assert result["error"]["code"] == "rate_limited"


async def test_a_retry_after_longer_than_the_budget_is_not_waited_for(database_url, fake_openai):
    fake_openai.enqueue(Reply(429, {"error": {"code": "rate_limit_exceeded"}}, headers={"Retry-After": "3600"}))
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        started = time.monotonic()
        result = await run_task(http, caller)
        elapsed = time.monotonic() - started

    assert fake_openai.count == 1
    assert elapsed < 1
    assert result["error"] == {
        "code": "rate_limited",
        "message": "openai is rate limiting requests (HTTP 429, Retry-After 3600 s)",
    }


@pytest.mark.parametrize(
    "budget",
    [
        pytest.param({"provider_retry_max_seconds": 1.0}, id="PROVIDER_RETRY_MAX_SECONDS"),
        # No wait may end past the whole call's deadline: the task fails with the provider's answer.
        pytest.param({"provider_retry_max_seconds": 60, "provider_timeout_seconds": 1.0}, id="whole-call deadline"),
    ],
)
async def test_the_retry_budget_bounds_the_attempts(database_url, fake_openai, budget):
    # Each 503 asks for 0.3 s; a budget of 1 s leaves room for 3 or 4 attempts, not 11.
    fake_openai.enqueue(*[error_reply(503, type="overloaded_error", headers={"Retry-After": "0.3"})] * 20)
    settings = openai_at(fake_openai, provider_max_retries=10, **budget)
    async with serve(database_url, **settings) as (http, caller):
        started = time.monotonic()
        result = await run_task(http, caller)
        elapsed = time.monotonic() - started

    assert result["error"]["code"] == "provider_error"
    assert result["error"]["message"].startswith("openai answered HTTP 503 (overloaded_error); gave up after")
    assert 3 <= fake_openai.count <= 4
    assert elapsed < 1.6


async def test_every_attempt_timing_out_ends_timeout(database_url, fake_openai):
    fake_openai.enqueue(*[Reply(delay=3)] * 2)
    settings = openai_at(fake_openai, provider_request_timeout_seconds=0.3, provider_max_retries=1)
    async with serve(database_url, **settings) as (http, caller):
        result = await run_task(http, caller)

    assert fake_openai.count == 2
    assert result["error"] == {
        "code": "timeout",
        "message": "openai did not answer within 0.3 s; gave up after 2 attempts",
    }


async def test_the_whole_call_is_bounded_whatever_the_retry_settings(database_url, fake_openai):
    # One attempt may take 5 s, but the whole call only 1 s: the service's deadline ends it.
    fake_openai.enqueue(*[Reply(delay=3)] * 10)
    settings = openai_at(
        fake_openai,
        provider_timeout_seconds=1.0,
        provider_request_timeout_seconds=5,
        provider_max_retries=10,
        provider_retry_max_seconds=60,
    )
    async with serve(database_url, **settings) as (http, caller):
        started = time.monotonic()
        result = await run_task(http, caller)
        elapsed = time.monotonic() - started

    assert result["error"]["code"] == "timeout"
    assert 0.9 < elapsed < 2
    assert fake_openai.count == 1


async def test_insufficient_quota_is_one_request_and_quota_exceeded(database_url, fake_openai):
    # Even with a Retry-After: an exhausted quota does not come back in seconds.
    fake_openai.enqueue(*[Reply(429, QUOTA, headers={"Retry-After": "0"})] * 3)
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        result = await run_task(http, caller)

    assert fake_openai.count == 1
    assert result["error"] == {"code": "quota_exceeded", "message": "openai reports the account's quota is exhausted"}


async def test_other_client_errors_are_not_retried(database_url, fake_openai):
    statuses = [400, 401, 403, 404, 422]
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        for status in statuses:
            fake_openai.enqueue(*[Reply(status, {"error": {"message": "no", "code": "nope"}})] * 3)
            result = await run_task(http, caller)
            assert result["error"] == {"code": "provider_error", "message": f"openai answered HTTP {status} (other)"}
            fake_openai.replies.clear()

    assert fake_openai.count == len(statuses)


MALFORMED = [
    (Reply(raw=b"{this is not json"), "openai sent an answer that is not valid JSON"),
    (Reply(body={"object": "list", "data": []}), "openai sent an answer that is not a valid chat completion"),
    (
        Reply(raw=b"<html>busy</html>", headers={"content-type": "text/html"}),
        "openai sent an answer that is not a valid chat completion",
    ),
    (Reply(body=completion() | {"choices": []}), "openai returned no text"),
]


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        pytest.param(error_reply(400, "context_length_exceeded"), " (context_length_exceeded)", id="OpenAI code"),
        pytest.param(error_reply(400, type="invalid_request_error"), " (invalid_request_error)", id="OpenAI type"),
        pytest.param(
            error_reply(401, "invalid_api_key", type="invalid_request_error"), " (invalid_api_key)", id="code first"
        ),
        pytest.param(error_reply(400, "made_up_code", type="not_found_error"), " (not_found_error)", id="listed type"),
        pytest.param(error_reply(404, type="not_found_error"), " (not_found_error)", id="Anthropic type"),
        pytest.param(error_reply(400, 400, type="BadRequestError"), " (BadRequestError)", id="vLLM"),
        pytest.param(error_reply(400, "summarize"), " (other)", id="a word of the prompt"),
        pytest.param(error_reply(400, "Invalid_API_Key"), " (other)", id="listed codes match exactly"),
        pytest.param(error_reply(400, 1234), " (other)", id="not a string"),
        pytest.param(error_reply(400), "", id="no code at all"),
    ],
)
async def test_only_documented_error_codes_are_repeated(database_url, fake_openai, reply, detail):
    fake_openai.enqueue(reply)
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        result = await run_task(http, caller, prompt="summarize")

    assert result["error"] == {"code": "provider_error", "message": f"openai answered HTTP {reply.status}{detail}"}


async def test_a_malformed_answer_is_a_provider_error_and_not_retried(database_url, fake_openai):
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        for reply, message in MALFORMED:
            fake_openai.enqueue(reply, reply, reply)
            result = await run_task(http, caller)
            assert result["error"] == {"code": "provider_error", "message": message}
            fake_openai.replies.clear()

    assert fake_openai.count == len(MALFORMED)


async def test_connection_refused_is_a_provider_error(database_url):
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    settings = {"openai_base_url": nobody, "default_model": "openai:m", "provider_max_retries": 1}
    async with serve(database_url, **settings) as (http, caller):
        result = await run_task(http, caller)

    assert result["status"] == "failed"
    assert result["error"] == {
        "code": "provider_error",
        "message": "openai could not be reached; gave up after 2 attempts",
    }


async def test_retries_are_logged_without_the_prompt_or_the_providers_text(database_url, fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    marker = f"MARKER-{uuid.uuid4().hex}"
    fake_openai.enqueue(
        Reply(503, {"error": {"message": f"cannot do {marker}", "code": "x"}}, headers={"Retry-After": "0"})
    )
    async with serve(database_url, **openai_at(fake_openai)) as (http, caller):
        result = await run_task(http, caller, prompt=marker)

    assert result["status"] == "succeeded"
    retries = [r for r in caplog.records if r.name == "app.llm.openai_compatible"]
    assert [r.levelno for r in retries] == [logging.WARNING]
    assert "attempt 1 failed (openai answered HTTP 503 (other))" in retries[0].getMessage()
    assert all(marker not in r.getMessage() for r in caplog.records)


# -- named OpenAI-compatible endpoints -------------------------------------------------------------


async def test_a_named_endpoint_serves_its_models_with_its_own_key(database_url, fake_openai, db, monkeypatch):
    monkeypatch.setenv("LOCAL_LLM_KEY", "local-key-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")  # read by the SDK when given no key
    endpoints = [
        {"name": "local", "base_url": fake_openai.base_url, "api_key_env": "LOCAL_LLM_KEY"},
        {"name": "keyless", "base_url": fake_openai.base_url},
    ]
    async with serve(database_url, provider_endpoints=endpoints) as (http, caller):
        first = await run_task(http, caller, model="local:llama3")
        second = await run_task(http, caller, model="keyless:qwen")
        not_configured = await http.post(RUN, json={"prompt": "x", "model": "openai:m"}, headers=caller.headers)

    assert (first["status"], first["model"], first["output"]) == ("succeeded", "local:llama3", "Paris.")
    assert second["model"] == "keyless:qwen"
    assert [r["model"] for r in fake_openai.requests] == ["llama3", "qwen"]
    assert fake_openai.headers[0]["authorization"] == "Bearer local-key-123"
    assert fake_openai.headers[1]["authorization"] == "Bearer not-needed"
    assert not_configured.status_code == 422
    models = await db.fetch("SELECT model FROM agent_task ORDER BY created_at")
    assert [r["model"] for r in models] == ["local:llama3", "keyless:qwen"]


async def test_a_named_endpoint_fails_with_its_own_name(database_url, fake_openai):
    fake_openai.enqueue(Reply(400, {"error": {"message": "no", "code": "model_not_found"}}))
    endpoints = [{"name": "vllm", "base_url": fake_openai.base_url}]
    async with serve(database_url, provider_endpoints=endpoints) as (http, caller):
        result = await run_task(http, caller, model="vllm:nope")

    assert result["error"] == {"code": "provider_error", "message": "vllm answered HTTP 400 (model_not_found)"}
