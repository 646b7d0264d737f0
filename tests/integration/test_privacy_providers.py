"""Prompt privacy across providers: structured output (a schema and a JSON answer) and every
native provider kind with tracing on leak the marker nowhere.
"""

from __future__ import annotations

import logging

import httpx

from app.domain import Role
from app.main import create_app
from tests.support.app import running
from tests.support.fake_openai import Reply, completion
from tests.support.mcp import mcp_as
from tests.support.privacy import everything_stored, scraper_headers, span_text
from tests.support.routes import RUN
from tests.support.settings import make_settings


async def test_a_schema_and_a_structured_answer_are_found_nowhere_but_in_the_answer(
    gateway, db, marker, caplog, capfd, spans
):
    """Structured output: the marker in a schema's description (sent to the provider, never stored)
    and in the JSON answer (sealed, like any answer). A success, a cache hit, a re-ask that ends
    `invalid_output`, a stream, a refused schema and an MCP call: neither rows, logs, spans,
    metrics nor any error answer hold it."""
    import json

    caplog.set_level(logging.DEBUG)
    http, caller, fake, service = gateway
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "description": f"the {marker}"}},
        "required": ["name"],
    }
    structured = {"type": "json_schema", "json_schema": {"name": "secretive", "schema": schema}}
    body = {"prompt": "Who is it?", "model": "openai:gpt-test", "response_format": structured}
    answer = json.dumps({"name": marker})
    off_schema = json.dumps({"nom": marker})
    fake.enqueue(Reply(body=completion(answer)), Reply(body=completion(off_schema)), Reply(body=completion(off_schema)))

    ok = await http.post(RUN, json=body, headers=caller.headers)
    hit = await http.post(RUN, json=body, headers=caller.headers)
    failed = await http.post(RUN, json=body | {"cache": False}, headers=caller.headers)
    fake.enqueue(Reply(chunks=[f'{{"nom": "{marker[:10]}', f'{marker[10:]}"}}']))
    streamed = await http.post(RUN, params={"stream": "true"}, json=body | {"cache": False}, headers=caller.headers)
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"description": marker}}}}
    refused = await http.post(RUN, json=body | {"response_format": bad}, headers=caller.headers)
    async with mcp_as(service.service, caller) as mcp:
        fake.enqueue(Reply(body=completion(off_schema)), Reply(body=completion(off_schema)))
        mcp_failed = await mcp.call_tool("run_agent_task", body | {"cache": False})
        mcp_refused = await mcp.call_tool("run_agent_task", body | {"response_format": bad}, raise_on_error=False)
    metrics_text = (await http.get("/metrics", headers=await scraper_headers(service))).text

    assert ok.json()["output_json"] == {"name": marker}, "the caller did get the answer"
    assert hit.json()["cached"] is True
    assert failed.json()["error"]["code"] == "invalid_output"
    assert streamed.text.rstrip().splitlines()[-1].startswith('data: {"code": "invalid_output"')
    assert refused.json()["code"] == "invalid_response_format"
    assert mcp_failed.structured_content["error"]["code"] == "invalid_output"
    assert mcp_refused.is_error
    assert all(marker not in m["content"] for m in fake.requests[0]["messages"])  # native: in the schema only
    assert "provider call" in span_text(spans)
    assert marker in json.dumps(fake.requests[0]["response_format"]), "the provider did get the schema"
    errors = [
        failed.text,
        streamed.text.split("event: error")[-1],
        refused.text,
        str(mcp_failed.content),
        str(mcp_refused.content),
    ]
    for where, text in (
        ("errors", "\n".join(errors)),
        ("database", await everything_stored(db)),
        ("spans", span_text(spans)),
        ("metrics", metrics_text),
        ("logs", "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)),
    ):
        assert marker not in text, f"the marker found in {where}"
    out, err = capfd.readouterr()
    assert marker not in out + err


async def test_every_native_provider_kind_leaks_nothing_with_tracing_on(
    database_url, db, marker, caplog, capfd, spans, chatty_libraries, monkeypatch, tmp_path
):
    """Anthropic (fakellm, a real peer), Gemini, Groq, Mistral, Cohere and Bedrock (their wire formats on
    loopback), traced: answers, streams and errors with the marker in the prompt, the answer, the
    provider's error text and its error code. The worst case is set up first: pydantic-ai told to
    instrument every model with content, the SDKs' own telemetry asked for with content (Anthropic's,
    Mistral's). Our calls turn both off, so no span, log, row, metric or answer holds the marker."""
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings

    from tests.support.fake_vendors import VENDORS, FakeVendors, VendorReply
    from tests.support.fakellm import FakeLLM

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", "content")
    monkeypatch.setenv("MISTRAL_SDK_TELEMETRY", "global")
    monkeypatch.setenv("NATIVE_PRIVACY_KEY", "test-key-not-real")
    models = {
        "anthropic": "claude-sonnet-4-5",
        "google": "gemini-2.5-flash",
        "groq": "llama-3.3-70b-versatile",
        "mistral": "mistral-large-latest",
        "cohere": "command-r-plus",
        "bedrock": "anthropic.claude-3-5-sonnet-20240620-v1:0",
    }
    prompt = f"Please keep this secret: {marker}"
    word = marker.replace("-", "_")
    errors: list[str] = []  # what callers got back of the failures: never the marker
    Agent.instrument_all(InstrumentationSettings(include_content=True))
    try:
        with FakeVendors().running() as vendors, FakeLLM(tmp_path).running() as fakellm:
            fakellm.fail("claude-refuses", 400, message=f"cannot process {marker}")
            endpoints = [
                {"name": f"{kind}-p", "kind": kind, "base_url": vendors.base_url}
                | ({"region": "us-east-1"} if kind == "bedrock" else {"api_key_env": "NATIVE_PRIVACY_KEY"})
                for kind in VENDORS
            ]
            settings = make_settings(
                database_url,
                anthropic_api_key="sk-ant-test-not-real",
                anthropic_base_url=fakellm.base_url,
                provider_endpoints=endpoints,
                aws_access_key_id="AKIDNOTAREALKEY",
                aws_secret_access_key="not-a-real-secret",
                provider_max_retries=1,
                provider_timeout_seconds=5,
                log_level="DEBUG",
            )
            async with running(create_app(settings)) as app:
                _, plain, _ = await app.state.components.keys.create("privacy-native", Role.CLIENT)
                headers = {"Authorization": f"Bearer {plain}"}
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:

                    async def post(model: str, **params: str) -> str:
                        body = {"prompt": prompt, "model": model, "cache": False}
                        response = await http.post(RUN, params=params, json=body, headers=headers)
                        return response.text

                    by_fakellm = [
                        await post("anthropic:claude-sonnet-4-5"),
                        await post("anthropic:claude-sonnet-4-5", stream="true"),
                        await post("anthropic:claude-refuses"),
                    ]
                    errors.append(by_fakellm[2])
                    for kind in VENDORS:
                        model = f"{kind}-p:{models[kind]}"
                        vendors.enqueue(VendorReply(pieces=["The ", marker, " stays"]))
                        assert '"status":"succeeded"' in await post(model)
                        vendors.enqueue(VendorReply(pieces=["The ", marker[:20], marker[20:], " stays"]))
                        streamed = await post(model, stream="true")
                        assert marker[:20] in streamed, "the caller did get the answer"
                        vendors.enqueue(VendorReply(400, code=word, message=f"cannot process {marker}"))
                        errors.append(await post(model))
                        vendors.enqueue(
                            *[VendorReply(503, code=word, message=marker, headers={"retry-after": "0"})] * 2
                        )
                        errors.append(await post(model))
                        vendors.enqueue(VendorReply(pieces=[f"half of {marker}", " and more"], break_after=1))
                        broken = await post(model, stream="true")
                        errors.append(broken.split("event: error")[-1])
                    metrics_text = (
                        await http.get("/metrics", headers=await scraper_headers(app.state.components))
                    ).text
    finally:
        Agent.instrument_all(False)

    assert '"status":"succeeded"' in by_fakellm[0]
    assert '"code":"provider_error"' in by_fakellm[2]
    assert vendors.count == len(VENDORS) * 6
    traced = span_text(spans)
    for name in ("anthropic", *(f"{kind}-p" for kind in VENDORS)):
        assert f"provider call {name}" in traced, name
    assert marker not in traced
    assert word not in traced
    assert marker not in metrics_text
    assert len(errors) == 1 + 3 * len(VENDORS)
    assert all('"provider_error"' in error for error in errors)
    assert all(marker not in error and word not in error for error in errors)
    stored = await everything_stored(db)
    assert marker not in stored
    assert word not in stored
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert logged
    assert marker not in logged
    assert word not in logged
    out, err = capfd.readouterr()
    assert marker not in out + err
    for secret in ("sk-ant-test-not-real", "test-key-not-real", "not-a-real-secret"):  # the vendors' keys
        for where, text in (("logs", logged), ("spans", traced), ("database", stored), ("output", out + err)):
            assert secret not in text, f"a vendor key found in {where}"
