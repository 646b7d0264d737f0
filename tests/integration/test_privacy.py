"""Prompt privacy, proved: a unique marker sent as the prompt is found nowhere afterwards.

Not in any column of any table, not in any log record (every logger at DEBUG), not
on stdout or stderr, and not in any answer (success, validation error, provider error).
"""

from __future__ import annotations

import logging
import uuid

import httpx

from tests.support import mcp_tasks
from tests.support.fake_openai import Reply, completion, error_reply
from tests.support.mcp import mcp_as
from tests.support.privacy import everything_stored, scraper_headers, span_text
from tests.support.routes import RUN
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY


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
