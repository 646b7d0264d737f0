"""The native providers (Anthropic, Gemini, Groq, Mistral, Cohere, Bedrock through pydantic-ai), end to
end: a task submitted over REST, run against a real server speaking the vendor's API, its result or its
typed error stored.

- Anthropic: the `fakellm` package's `/v1/messages` server (a real peer, in a subprocess), configured
  by the short form (`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`).
- Every vendor: `tests/support/fake_vendors.py`, each vendor's wire format on loopback, configured as
  `PROVIDER_ENDPOINTS` entries with a `kind`. Queued errors show one error policy for all of them.

Nothing of ours is patched: the SDKs, pydantic-ai and the service run as in production.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from tests.support.fake_openai import TcpFault
from tests.support.fake_vendors import MODELS, VENDORS, VendorReply, endpoint
from tests.support.fakellm import FakeLLM
from tests.support.providers import run_task, serve
from tests.support.routes import RUN

SECRET = "kumquat-zeppelin-4471"  # in prompts and provider error texts: it must come back nowhere


def anthropic_at(fakellm: FakeLLM, **overrides: Any) -> dict[str, Any]:
    return {"anthropic_api_key": "sk-ant-test", "anthropic_base_url": fakellm.base_url} | overrides


async def stream_task(http: Any, caller: Any, **task: Any) -> list[tuple[str, Any]]:
    response = await http.post(
        RUN, params={"stream": "true"}, json={"prompt": "hello there", "cache": False} | task, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


# -- Anthropic, against fakellm -----------------------------------------------------------------


async def test_an_anthropic_task_succeeds_against_fakellm_and_is_stored_with_usage_and_cost(database_url, fakellm, db):
    async with serve(database_url, **anthropic_at(fakellm)) as (http, caller):
        result = await run_task(
            http, caller, prompt=f"Capital of France? {SECRET}", model="anthropic:claude-sonnet-4-5"
        )
        read = (await http.get(f"/resources/get_agent_result/{result['task_id']}", headers=caller.headers)).json()

    assert result["status"] == "succeeded", result
    assert result["output"].startswith("[mock response for claude-sonnet-4-5, fingerprint ")
    assert result["model"] == "anthropic:claude-sonnet-4-5"
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    prices = calc_price(
        Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    )
    assert usage["cost_usd"] == pytest.approx(float(prices.total_price))
    assert read["output"] == result["output"]
    assert await db.fetchval("SELECT model FROM agent_task") == "anthropic:claude-sonnet-4-5"
    assert fakellm.count >= 1


async def test_an_anthropic_task_streams_its_answer_piece_by_piece(database_url, fakellm):
    async with serve(database_url, **anthropic_at(fakellm)) as (http, caller):
        events = await stream_task(http, caller, model="anthropic:claude-sonnet-4-5")

    names = [name for name, _ in events]
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert (names[0], names[-1]) == ("task", "result")
    assert len(deltas) > 3, "fakellm streams word by word"
    final = events[-1][1]
    assert final["status"] == "succeeded"
    assert final["output"] == "".join(deltas)
    assert final["output"].startswith("[mock response for claude-sonnet-4-5")


@pytest.mark.parametrize(
    ("status", "code", "attempts"),
    [
        pytest.param(429, "rate_limited", 3, id="429 is rate_limited, retried"),
        pytest.param(529, "provider_error", 3, id="529 overloaded, retried"),
        pytest.param(500, "provider_error", 3, id="500, retried"),
        pytest.param(400, "provider_error", 1, id="400, not retried"),
    ],
)
async def test_anthropic_failures_from_fakellm_end_the_task_with_a_typed_error(
    database_url, fakellm, status, code, attempts
):
    fakellm.fail("claude-broken", status, message=f"cannot process {SECRET}")
    async with serve(database_url, **anthropic_at(fakellm)) as (http, caller):
        before = fakellm.count
        result = await run_task(http, caller, prompt=SECRET, model="anthropic:claude-broken")

    assert result["status"] == "failed"
    assert result["error"]["code"] == code
    assert f"HTTP {status}" in result["error"]["message"]
    assert fakellm.count - before == attempts  # max_retries is 2 (tests/support/providers.FAST)
    assert SECRET not in json.dumps(result)


# -- every vendor, against its wire format --------------------------------------------------------


@pytest.mark.parametrize("kind", VENDORS)
async def test_every_vendor_answers_whole_and_streamed(database_url, vendors, vendor_settings, kind):
    async with serve(database_url, **vendor_settings) as (http, caller):
        whole = await run_task(http, caller, model=f"{kind}-test:{MODELS[kind]}")
        vendors.enqueue(VendorReply(pieces=["Once", " upon", " a tïme 🐉"], prompt_tokens=11, completion_tokens=3))
        events = await stream_task(http, caller, model=f"{kind}-test:{MODELS[kind]}")

    assert whole["status"] == "succeeded", whole
    assert whole["output"] == "Paris."
    assert (whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"]) == (7, 2)
    assert whole["usage"]["cost_usd"] > 0, "priced as the vendor"
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert deltas == ["Once", " upon", " a tïme 🐉"]
    final = events[-1][1]
    assert (final["status"], final["output"]) == ("succeeded", "Once upon a tïme 🐉")
    assert (final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"]) == (11, 3)
    sent_vendor, sent = vendors.requests[0]
    assert sent_vendor == kind
    assert "hello there" in json.dumps(sent)


# The same failure, in each vendor's own words, is the same task error.
FAILURES = [
    pytest.param(VendorReply(429, headers={"retry-after": "0"}), "rate_limited", 3, id="429"),
    pytest.param(VendorReply(503, headers={"retry-after": "0"}), "provider_error", 3, id="503"),
    pytest.param(VendorReply(400), "provider_error", 1, id="400"),
    pytest.param(VendorReply(401), "provider_error", 1, id="401"),
    pytest.param(VendorReply(402), "quota_exceeded", 1, id="402"),
]


@pytest.mark.parametrize("kind", VENDORS)
@pytest.mark.parametrize(("reply", "code", "attempts"), FAILURES)
async def test_every_vendor_maps_failures_to_the_same_typed_errors(
    database_url, vendors, vendor_settings, kind, reply, code, attempts
):
    reply.message = f"cannot process {SECRET}"
    vendors.enqueue(*[reply] * attempts)
    async with serve(database_url, **vendor_settings) as (http, caller):
        result = await run_task(http, caller, prompt=SECRET, model=f"{kind}-test:{MODELS[kind]}")

    assert result["status"] == "failed", result
    assert result["error"]["code"] == code, result["error"]
    assert vendors.count == attempts, "the SDK's own retries are off: each attempt is ours"
    assert SECRET not in json.dumps(result)


async def test_anthropic_overloaded_and_billing_errors_map_as_documented(database_url, vendors, vendor_settings):
    vendors.enqueue(VendorReply(529, code="overloaded_error", headers={"retry-after": "0"}), VendorReply())
    vendors.enqueue(VendorReply(400, code="billing_error", message="Your credit balance is too low"))
    async with serve(database_url, **vendor_settings) as (http, caller):
        recovered = await run_task(http, caller, model="anthropic-test:claude-sonnet-4-5")
        broke = await run_task(http, caller, model="anthropic-test:claude-sonnet-4-5")

    assert recovered["status"] == "succeeded"
    assert broke["error"] == {
        "code": "quota_exceeded",
        "message": "anthropic-test reports the account's quota is exhausted",
    }
    assert vendors.count == 3


async def test_a_documented_error_code_is_repeated_and_the_rest_say_other(database_url, vendors, vendor_settings):
    vendors.enqueue(VendorReply(400, code="invalid_request_error"), VendorReply(400, code=SECRET.replace("-", "_")))
    async with serve(database_url, **vendor_settings) as (http, caller):
        documented = await run_task(http, caller, model="anthropic-test:claude-sonnet-4-5")
        made_up = await run_task(http, caller, model="anthropic-test:claude-sonnet-4-5")

    assert documented["error"]["message"] == "anthropic-test answered HTTP 400 (invalid_request_error)"
    assert made_up["error"]["message"] == "anthropic-test answered HTTP 400 (other)"


@pytest.mark.parametrize("kind", ["anthropic", "google", "mistral", "bedrock"])
async def test_a_stream_dropped_mid_answer_fails_without_a_retry(database_url, vendors, vendor_settings, kind):
    vendors.enqueue(VendorReply(pieces=["half", " of it", " never"], break_after=2))
    async with serve(database_url, **vendor_settings) as (http, caller):
        events = await stream_task(http, caller, model=f"{kind}-test:{MODELS[kind]}")

    assert [data["text"] for name, data in events if name == "delta"] == ["half", " of it"]
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == "provider_error"
    assert vendors.count == 1


async def test_a_silent_vendor_times_out_and_an_absent_one_could_not_be_reached(database_url, monkeypatch):
    monkeypatch.setenv("NATIVE_TEST_KEY", "k")
    with TcpFault("hang").running() as hang, TcpFault("reset").running() as reset:
        endpoints = [
            endpoint("anthropic", hang.base_url.removesuffix("/v1")) | {"name": "silent"},
            endpoint("google", reset.base_url.removesuffix("/v1")) | {"name": "absent"},
        ]
        async with serve(database_url, provider_endpoints=endpoints) as (http, caller):
            silent = await run_task(http, caller, model="silent:claude-sonnet-4-5")
            absent = await run_task(http, caller, model="absent:gemini-2.5-flash")

    assert silent["error"]["code"] == "timeout"
    assert silent["error"]["message"].startswith("silent did not answer within 0.5 s")
    assert absent["error"]["code"] == "provider_error"
    assert absent["error"]["message"].startswith("absent ")
    assert (hang.connections, reset.connections) == (3, 3)  # each retried under the one policy


# -- discovery ------------------------------------------------------------------------------------


async def test_the_catalog_shows_each_native_kind_over_rest_and_mcp_and_nothing_secret(
    database_url, vendors, vendor_settings
):
    from app.domain import Role
    from tests.support.app import key, replica
    from tests.support.mcp import mcp_as

    settings = vendor_settings | {"anthropic_api_key": "sk-ant-never-shown", "default_provider": "anthropic"}
    async with replica(database_url, **settings) as (app, http):
        caller = await key(app, Role.CLIENT)
        rest = await http.get("/models", headers=caller.headers)
        async with mcp_as(app.state.service, caller) as mcp:
            result = await mcp.call_tool("list_models", {})

    streaming = {"streaming": True, "structured_output": True, "tools": False}
    providers = {p["name"]: p for p in rest.json()["providers"]}
    assert providers["anthropic"] == {"name": "anthropic", "kind": "anthropic", "capabilities": streaming}
    for kind in VENDORS:
        assert providers[f"{kind}-test"] == {"name": f"{kind}-test", "kind": kind, "capabilities": streaming}
    assert rest.json()["default_provider"] == "anthropic"
    assert result.structured_content == rest.json()
    for secret in ("sk-ant-never-shown", "test-key-not-real", "AKIDNOTAREALKEY", "127.0.0.1", "http"):
        assert secret not in rest.text


async def test_a_bare_name_runs_on_a_native_default_provider(database_url, fakellm):
    async with serve(database_url, **anthropic_at(fakellm, default_provider="anthropic")) as (http, caller):
        result = await run_task(http, caller, model="claude-haiku-4-5")

    assert (result["status"], result["model"]) == ("succeeded", "anthropic:claude-haiku-4-5")
    assert result["output"].startswith("[mock response for claude-haiku-4-5")


@pytest.mark.parametrize("kind", ["anthropic", "cohere", "bedrock"])
async def test_a_stream_that_fails_before_its_first_piece_is_retried(database_url, vendors, vendor_settings, kind):
    vendors.enqueue(VendorReply(503, headers={"retry-after": "0"}), VendorReply(pieces=["second", " time"]))
    async with serve(database_url, **vendor_settings) as (http, caller):
        events = await stream_task(http, caller, model=f"{kind}-test:{MODELS[kind]}")

    assert [data["text"] for name, data in events if name == "delta"] == ["second", " time"]
    assert events[-1][1]["status"] == "succeeded"
    assert vendors.count == 2


@pytest.mark.parametrize("kind", ["anthropic", "google", "groq"])
async def test_a_wait_longer_than_a_minute_is_not_waited_for(database_url, vendors, vendor_settings, kind):
    vendors.enqueue(VendorReply(429, headers={"retry-after": "120"}))
    async with serve(database_url, **vendor_settings) as (http, caller):
        result = await run_task(http, caller, model=f"{kind}-test:{MODELS[kind]}")

    assert result["error"] == {
        "code": "rate_limited",
        "message": f"{kind}-test is rate limiting requests (HTTP 429, Retry-After 120 s)",
    }
    assert vendors.count == 1


@pytest.mark.parametrize("kind", ["anthropic", "google", "bedrock"])
async def test_a_native_stream_stopped_early_hangs_up_on_the_vendor(vendors, kind):
    import asyncio
    import time

    from app.llm.base import CompletionRequest, Message, stream_completion
    from app.llm.native import NativeProvider
    from app.llm.native_models import Credentials

    credentials = Credentials(
        api_key=None if kind == "bedrock" else "k",
        base_url=vendors.base_url,
        region="us-east-1",
        aws_access_key_id="AKIDNOTAREALKEY",
        aws_secret_access_key="not-a-real-secret",
    )
    provider = NativeProvider(kind, kind, credentials, request_timeout_seconds=5, max_retries=0)  # type: ignore[arg-type]
    vendors.enqueue(VendorReply(pieces=["first", " second", " third"], piece_delay=0.5))
    pieces: list[str] = []
    request = CompletionRequest(MODELS[kind], (Message("user", "tell me a story"),))
    call = asyncio.create_task(stream_completion(provider, request, pieces.append))
    deadline = time.monotonic() + 5
    while not pieces and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    deadline = time.monotonic() + 5
    while not vendors.hang_ups and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await provider.aclose()

    assert pieces == ["first"]
    assert vendors.hang_ups == 1
