"""Prompt privacy, proved: a unique marker sent as the prompt is found nowhere afterwards.

Not in any column of any table, not in any log record (every logger at DEBUG), not
on stdout or stderr, and not in any answer (success, validation error, provider error).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from app.domain import Role
from app.main import create_app
from app.telemetry.logs import PAYLOAD_LOGGERS
from tests.support import mcp_tasks
from tests.support.app import Caller, running
from tests.support.fake_openai import FakeOpenAI, Reply, completion, error_reply
from tests.support.mcp import mcp_as
from tests.support.routes import RUN
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY, make_settings


@pytest.fixture
def marker() -> str:
    return f"PRIVATE-MARKER-{uuid.uuid4().hex}"


async def everything_stored(conn: asyncpg.Connection) -> str:
    """Every row of every table in the database, as text."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    dumps = []
    for table in tables:
        rows = await conn.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')
        dumps += [r["row"] for r in rows]
    return "\n".join(dumps)


@pytest.fixture
def chatty_libraries() -> Iterator[None]:
    """The worst case: every library that can log payloads set to DEBUG before the app starts."""
    saved = {name: logging.getLogger(name).level for name in PAYLOAD_LOGGERS}
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
async def gateway(
    database_url, chatty_libraries
) -> AsyncIterator[tuple[httpx.AsyncClient, Caller, FakeOpenAI, object]]:
    with FakeOpenAI().running() as fake:
        settings = make_settings(
            database_url,
            openai_api_key="sk-test-not-a-real-key",
            openai_base_url=fake.base_url,
            provider_timeout_seconds=2,
            log_level="DEBUG",
        )
        async with running(create_app(settings)) as app:
            record, plain, _ = await app.state.components.keys.create("privacy", Role.CLIENT)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield http, Caller(record.id, plain, Role.CLIENT), fake, app.state.components


async def scraper_headers(service) -> dict[str, str]:
    """A key that may read /metrics (auditor or admin only)."""
    _, plain, _ = await service.keys.create("scraper", Role.AUDITOR)
    return {"Authorization": f"Bearer {plain}"}


def span_text(spans) -> str:
    """Every span and logfire log: names, attributes, events, status messages."""
    parts = []
    for span in spans.get_finished_spans():
        parts += [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
        parts += [f"{event.name} {dict(event.attributes or {})!r}" for event in span.events]
    return "\n".join(parts)


async def test_the_prompt_is_found_nowhere(gateway, db, marker, caplog, capfd, spans):
    caplog.set_level(logging.DEBUG)  # what LOG_LEVEL=DEBUG does: the root logger at DEBUG
    http, caller, fake, service = gateway
    prompt = f"Please keep this secret: {marker}"
    answers: list[str] = []

    async def post(body: dict[str, object]) -> httpx.Response:
        response = await http.post(RUN, json=body, headers=caller.headers)
        answers.append(response.text.replace(response.json().get("prompt_hash", "-"), ""))
        return response

    ok = await post({"prompt": prompt, "model": "offline:echo"})
    assert ok.json()["status"] == "succeeded"
    hit = await post({"prompt": prompt, "model": "offline:echo"})
    assert hit.json()["cached"] is True
    via_openai = await post({"prompt": prompt, "model": "openai:gpt-test"})
    assert via_openai.json()["status"] == "succeeded"
    fake.enqueue(Reply(400, {"error": {"message": f"cannot process {marker}", "code": "bad_request"}}))
    failed = await post({"prompt": prompt, "model": "openai:gpt-test", "cache": False})
    assert failed.json()["status"] == "failed"
    assert (await post({"prompt": prompt * 2000})).status_code == 422
    assert (await post({"prompt": prompt, "params": {"temperature": 9}})).status_code == 422
    assert (await post({"prompt": prompt, "model": "nowhere:x"})).status_code == 422
    assert (await post({"prompt": prompt, "retention_days": 999})).status_code == 422
    fake.enqueue(Reply(body=completion(f"never sent {marker}"), delay=10))  # cancelled while it runs
    slow = {"prompt": prompt, "model": "openai:gpt-test", "cache": False}
    pending = await http.post(RUN, params={"wait": "false"}, json=slow, headers=caller.headers)
    cancelled = await http.post(
        f"/resources/get_agent_result/{pending.json()['task_id']}/cancel", headers=caller.headers
    )
    assert cancelled.json()["status"] == "cancelled"
    answers += [r.text.replace(r.json()["prompt_hash"], "") for r in (pending, cancelled)]
    client_log = logging.getLogger("httpx")  # the test client logs its URLs; the service must not
    client_log.disabled = True
    try:
        in_query = await http.post(RUN, params={"prompt": prompt}, json={"prompt": "hi"}, headers=caller.headers)
    finally:
        client_log.disabled = False
    assert in_query.status_code == 422  # unknown query parameter; the access log is tests/system/test_transport
    answers.append(in_query.text)

    task_id = ok.json()["task_id"]
    answers.append((await http.get(f"/resources/get_agent_result/{task_id}", headers=caller.headers)).text)
    answers.append((await http.get("/resources/agent_results", headers=caller.headers)).text)

    async with mcp_as(service.service, caller) as mcp:
        for arguments in (
            {"prompt": prompt},
            {"prompt": prompt * 2000},
            {"prompt": prompt, "params": {"temperature": 9}},
            {"prompt": prompt, "context": {"blob": "x" * 17_000}},
        ):
            result = await mcp.call_tool("run_agent_task", arguments, raise_on_error=False)
            answers.append(str(result.content))
    async with mcp_as(service.service, caller, extensions=[mcp_tasks.TasksClient()]) as mcp:  # an MCP task
        handle = await mcp_tasks.start(mcp.session, {"prompt": prompt, "cache": False})
        polled = await mcp_tasks.finished(mcp.session, handle)
        assert polled.status == "completed"
        answers += [handle.model_dump_json(), polled.model_dump_json()]

    await db.execute("UPDATE agent_task SET expires_at = now() WHERE id = $1", uuid.UUID(task_id))
    purged = await service.purger.run()
    assert purged.deleted["agent_task"] == 1
    metrics_text = (await http.get("/metrics", headers=await scraper_headers(service))).text

    traced = span_text(spans)
    assert "agent task" in traced
    assert "retention purge" in traced
    assert "provider call" in traced  # the outgoing calls, including the one that failed
    assert marker not in traced
    assert "agent_tasks_total" in metrics_text
    assert marker not in metrics_text
    stored = await everything_stored(db)
    assert stored, "the database should hold tasks and audit events"
    assert marker not in stored
    assert all(marker not in answer for answer in answers)
    assert fake.requests, "the provider really was called"
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert logged, "logging at DEBUG should have produced records"
    assert marker not in logged
    out, err = capfd.readouterr()
    assert marker not in out
    assert marker not in err


async def test_secrets_are_never_logged_traced_or_stored(gateway, db, caplog, capfd, spans):
    caplog.set_level(logging.DEBUG)
    http, caller, _fake, service = gateway
    await http.post(RUN, json={"prompt": "hello", "model": "openai:gpt-test"}, headers=caller.headers)
    await http.post(RUN, json={"prompt": "hello", "model": "offline:echo"}, headers=caller.headers)
    await http.get("/resources/agent_results", headers=caller.headers)
    await http.get("/resources/agent_results", headers={"Authorization": "Bearer ask_" + "W" * 43})
    metrics_text = (await http.get("/metrics", headers=await scraper_headers(service))).text

    secrets = {
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "PROMPT_HASH_KEY": TEST_HASH_KEY,
        "AUDIT_SIGNING_KEY": TEST_SIGNING_KEY,
        "API key": caller.key,
        "wrong API key": "ask_" + "W" * 43,
    }
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    out, err = capfd.readouterr()
    stored = await everything_stored(db)
    for name, secret in secrets.items():
        for where, text in (
            ("logs", logged),
            ("output", out + err),
            ("spans", span_text(spans)),
            ("metrics", metrics_text),
            ("database", stored),
        ):
            assert secret not in text, f"{name} found in {where}"


async def test_a_provider_that_puts_the_prompt_in_its_error_code_leaks_nothing(
    gateway, db, marker, caplog, capfd, spans
):
    """A provider may put the prompt's first word where its short error code goes; a one-word
    prompt would then leak whole. Only documented codes are ever copied: the rest say `other`."""
    caplog.set_level(logging.DEBUG)
    http, caller, fake, _service = gateway
    word = marker.replace("-", "_")  # one word, shaped like an error code
    fake.enqueue(error_reply(400, code=word, type=word, message=f"{word} is not allowed"))
    fake.enqueue(*[error_reply(503, code=word, headers={"Retry-After": "0"})] * 4)  # retried, then given up
    body = {"prompt": word, "model": "openai:gpt-test", "cache": False}

    refused = await http.post(RUN, json=body, headers=caller.headers)
    retried = await http.post(RUN, json=body, headers=caller.headers)
    read_back = await http.get(f"/resources/get_agent_result/{retried.json()['task_id']}", headers=caller.headers)

    assert refused.json()["error"] == {"code": "provider_error", "message": "openai answered HTTP 400 (other)"}
    assert retried.json()["error"] == {
        "code": "provider_error",
        "message": "openai answered HTTP 503 (other); gave up after 4 attempts",
    }
    assert fake.count == 5, "the provider really was asked, and the 503s really were retried"
    retry_lines = [r.getMessage() for r in caplog.records if r.name == "app.llm.openai_compatible"]
    assert len(retry_lines) == 3
    assert all("(openai answered HTTP 503 (other))" in line for line in retry_lines)
    for answer in (refused, retried, read_back):
        assert word not in answer.text.replace(answer.json()["prompt_hash"], "")
    assert word not in await everything_stored(db)
    assert word not in "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert word not in span_text(spans)
    out, err = capfd.readouterr()
    assert word not in out + err


async def test_webhooks_carry_ids_only_and_the_signing_secret_is_never_in_the_clear(
    database_url, db, marker, caplog, capfd, spans, chatty_libraries
):
    """A task with a webhook, answered (by the provider and from the cache), failed and cancelled:
    neither the prompt nor the answer reaches the receiver, the outbox, a log, a span or a metric,
    and the key's signing secret is stored sealed only."""
    from tests.support.webhooks import Receiver

    caplog.set_level(logging.DEBUG)
    prompt = f"Please keep this secret: {marker}"
    with FakeOpenAI().running() as fake, Receiver().running() as receiver:
        settings = make_settings(
            database_url,
            openai_api_key="sk-test-not-a-real-key",
            openai_base_url=fake.base_url,
            log_level="DEBUG",
            webhook_allowed_hosts=["127.0.0.1"],
            webhook_poll_seconds=0.2,
            webhook_retry_seconds=0.1,
        )
        async with running(create_app(settings)) as app:
            components = app.state.components
            record, plain, secret = await components.keys.create("privacy-webhooks", Role.CLIENT)
            headers = {"Authorization": f"Bearer {plain}"}
            hook = {"prompt": prompt, "model": "openai:gpt-test", "webhook": receiver.url}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                fake.enqueue(Reply(body=completion(f"the answer {marker}")))
                await http.post(RUN, json=hook, headers=headers)
                await http.post(RUN, json=hook, headers=headers)  # a cache hit
                fake.enqueue(error_reply(400, message=f"cannot process {marker}"))
                await http.post(RUN, json={**hook, "cache": False}, headers=headers)
                fake.enqueue(Reply(body=completion(f"never {marker}"), delay=10))
                pending = await http.post(RUN, params={"wait": "false"}, json={**hook, "cache": False}, headers=headers)
                task_id = pending.json()["task_id"]
                await http.post(f"/resources/get_agent_result/{task_id}/cancel", headers=headers)
                received = await receiver.wait_for(4)
                # What the owner reads of the webhook: the address and the attempts, not the answer.
                answers = [(await http.get(f"/resources/get_agent_result/{task_id}/webhook", headers=headers)).text]
                metrics_text = (await http.get("/metrics", headers=await scraper_headers(components))).text

    assert secret is not None
    assert {r.verify(secret)["type"] for r in received} == {
        "agent_task.succeeded",
        "agent_task.failed",
        "agent_task.cancelled",
    }
    sent = "\n".join(r.body.decode() + repr(r.headers) for r in received)
    stored = await everything_stored(db)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    out, err = capfd.readouterr()
    for where, text in (
        ("webhooks sent", sent),
        ("database", stored),
        ("answers", "\n".join(answers)),
        ("logs", logged),
        ("output", out + err),
        ("spans", span_text(spans)),
        ("metrics", metrics_text),
    ):
        assert marker not in text, f"the marker found in {where}"
        assert secret not in text, f"the webhook secret found in {where}"
        assert secret.removeprefix("whsec_") not in text, f"the webhook secret found in {where}"
    assert await db.fetchval("SELECT count(*) FROM webhook_delivery WHERE owner_id = $1", record.id) == 4


async def test_a_streamed_prompt_and_answer_are_found_nowhere_but_in_the_stream(
    gateway, db, marker, caplog, capfd, spans
):
    """The marker in the prompt and in the pieces of the answer: the caller gets the pieces, and
    neither the rows, the logs (every payload logger at DEBUG), the spans nor the metrics hold it."""
    caplog.set_level(logging.DEBUG)
    http, caller, fake, service = gateway
    prompt = f"Please keep this secret: {marker}"
    body = {"prompt": prompt, "model": "openai:gpt-test"}
    fake.enqueue(Reply(chunks=["The ", marker[:20], marker[20:], " stays ", "between us"]))

    streamed = await http.post(RUN, params={"stream": "true"}, json=body, headers=caller.headers)
    from_cache = await http.post(RUN, params={"stream": "true"}, json=body, headers=caller.headers)
    fake.enqueue(Reply(chunks=[f"half of {marker}", " and more"], break_after=1))
    broken = await http.post(RUN, params={"stream": "true"}, json=body | {"cache": False}, headers=caller.headers)
    refused = await http.post(RUN, params={"stream": "true", "wait": "false"}, json=body, headers=caller.headers)

    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert marker[:20] in streamed.text, "the caller did get the answer"
    assert '"cached":true' in from_cache.text
    assert broken.text.rstrip().splitlines()[-1].startswith('data: {"code": "provider_error"')
    assert refused.status_code == 422
    assert marker not in refused.text
    assert marker not in broken.text.split("event: error")[-1]
    metrics_text = (await http.get("/metrics", headers=await scraper_headers(service))).text

    assert "provider call" in span_text(spans)
    assert marker not in span_text(spans)
    assert marker not in metrics_text
    assert marker not in await everything_stored(db)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert logged, "logging at DEBUG should have produced records"
    assert marker not in logged
    out, err = capfd.readouterr()
    assert marker not in out + err


async def test_the_console_shows_an_answer_only_on_its_audited_page(gateway, db, marker, caplog, capfd, spans):
    """The console (app.console): the marker in the prompt and the answer. The answer appears on the
    task's page, the one view that is an audited read, and nowhere else: not in the list, not on an
    error page (a marker put in a filter, a form or as the key is never echoed), nor in rows, logs or spans."""
    from tests.support.console import TASKS, sign_in, signed_in

    caplog.set_level(logging.DEBUG)
    http, caller, fake, _service = gateway
    fake.enqueue(Reply(body=completion(f"the answer is {marker}")))
    ran = await http.post(
        RUN, json={"prompt": f"Please keep this secret: {marker}", "model": "openai:gpt-test"}, headers=caller.headers
    )
    task_id = ran.json()["task_id"]

    client_log = logging.getLogger("httpx")  # the test client logs its URLs; the service must not
    client_log.disabled = True
    try:
        refused = await sign_in(http, marker)  # a "key" that is the marker
        await signed_in(http, caller.key)
        task_page = await http.get(f"{TASKS}/{task_id}")
        elsewhere = [
            refused,
            await http.get(TASKS),
            await http.get(TASKS, params={"task_id": marker}),
            await http.get(TASKS, params={"status": marker}),
            await http.get(f"{TASKS}/not-a-task"),  # (a path is a span's attribute: no place for a secret)
            await http.post(f"{TASKS}/{task_id}/holds", data={"reference": marker, "csrf": marker}),
            await http.get("/console/audit", params={"action": marker, "since": marker}),
            await http.get("/console/retention"),
            await http.get(TASKS, params={"model": marker * 40}),  # longer than a model's name
            await http.get(TASKS, params={"created_from": marker}),
            await http.get("/console/health"),
            await http.get("/console/keys"),  # a client: 403
            await http.get("/console/audit/export", params={"since": marker, "until": marker}),  # 403 first
        ]
        # An admin's pages (the keys, the health figures, the export and chain check) and their refusals.
        _, admin_key, _ = await _service.keys.create("privacy-admin", Role.ADMIN)
        admin_csrf = await signed_in(http, admin_key)
        as_admin = [
            await http.get(TASKS, params={"owner_id": marker}),
            await http.get("/console/keys"),
            await http.get(f"/console/keys/{caller.key_id}"),
            await http.get("/console/keys/not-a-key"),  # (a path is a span attribute, as above)
            await http.post("/console/keys", data={"csrf": admin_csrf, "name": "x", "role": marker}),
            await http.post("/console/keys", data={"csrf": admin_csrf, "name": "x", "rate_limit_per_minute": marker}),
            await http.post(f"/console/keys/{caller.key_id}/limits", data={"csrf": admin_csrf, "store_output": marker}),
            await http.post(f"/console/keys/{caller.key_id}/revoke", data={"csrf": admin_csrf, "confirm": marker}),
            await http.get("/console/health"),
            await http.get("/console/audit"),
            await http.get("/console/audit/verify"),
            await http.get("/console/audit/export", params={"since": marker, "until": marker}),
        ]
        export = await http.get("/console/audit/export", params={"since": "2020-01-01", "until": "2100-01-01"})
    finally:
        client_log.disabled = False

    assert marker in task_page.text, "the task's page shows the answer"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_event WHERE task_id = $1 AND action = 'read' AND channel = 'console'",
            uuid.UUID(task_id),
        )
        == 1
    )
    assert [answer.status_code for answer in elsewhere] == [
        401,
        200,
        422,
        422,
        404,
        403,
        422,
        200,
        422,
        422,
        200,
        403,
        403,
    ]
    assert [answer.status_code for answer in as_admin] == [422, 200, 200, 404, 422, 422, 422, 422, 200, 200, 200, 422]
    assert export.status_code == 200
    for answer in [*elsewhere, *as_admin, export]:
        assert marker not in answer.text
    assert marker not in await everything_stored(db)
    assert marker not in span_text(spans)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert marker not in logged
    out, err = capfd.readouterr()
    assert marker not in out + err


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
