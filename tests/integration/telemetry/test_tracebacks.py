"""No traceback reaches a log: an unexpected exception whose message quotes an argument (a database
error naming the model) while the prompt sits in the frames' local variables is logged by its type
name only, over REST and MCP, in every handler: ours, one a server installed before the app was
built, FastMCP's own, and in the spans."""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Iterator

import httpx
import logfire
import pytest

from app.telemetry.tracing import TypeOnlyErrorStatus
from tests.support.app import key, replica
from tests.support.mcp import mcp_as
from tests.support.routes import RUN

# A database that refuses every new task with an error quoting the model the caller chose: what any
# error of PostgreSQL's that repeats a value looks like to the service (unexpected, its text theirs).
REFUSE_TASKS = """
CREATE FUNCTION refuse_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused model %', NEW.model; END $$;
CREATE TRIGGER refuse_task BEFORE INSERT ON agent_task FOR EACH ROW EXECUTE FUNCTION refuse_task();
"""


@pytest.fixture
def marker() -> str:
    return f"TRACE-MARKER-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def server_handler() -> Iterator[io.StringIO]:
    """A handler on the root logger and on uvicorn's, as a server installs before it builds the app."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error"), logging.getLogger("fastmcp")]
    for logger in loggers:
        logger.addHandler(handler)
    yield output
    for logger in loggers:
        logger.removeHandler(handler)


async def test_an_unexpected_error_is_logged_by_its_type_only(database_url, db, marker, server_handler, capsys, spans):
    await db.execute(REFUSE_TASKS)
    task = {"prompt": f"the prompt {marker}", "model": f"offline:{marker}"}
    async with replica(database_url) as (app, _):
        caller = await key(app)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            rest = await http.post(RUN, json=task, headers=caller.headers)
        async with mcp_as(app.state.service, caller) as client:
            mcp = await client.call_tool("run_agent_task", task, raise_on_error=False)

    assert rest.status_code == 500
    assert rest.json()["code"] == "internal_error"
    assert mcp.is_error
    logged = server_handler.getvalue()
    printed = capsys.readouterr()
    everything = logged + printed.out + printed.err
    assert "RaiseError" in logged, "the type is named"
    assert "Error calling tool 'run_agent_task' (RaiseError)" in everything
    assert "Traceback" not in everything
    assert marker not in everything
    recorded = [
        (s.status.description, dict(s.attributes or {}), [(e.name, dict(e.attributes or {})) for e in s.events])
        for s in spans.get_finished_spans()
    ]
    assert ("exception", {"exception.type": "fastmcp.exceptions.ToolError"}) in [
        event for _, _, events in recorded for event in events
    ], "a span still says an exception happened, and its type"
    assert "Traceback" not in repr(recorded)
    assert marker not in repr(recorded)


async def test_a_failed_span_is_exported_with_the_exception_type_only(marker, spans):
    configured = logfire.DEFAULT_LOGFIRE_INSTANCE.config.additional_span_processors or ()
    [type_only] = [p for p in configured if isinstance(p, TypeOnlyErrorStatus)]
    with contextlib.suppress(KeyError), logfire.span("failing"):
        raise KeyError(marker)

    [span] = [s for s in spans.get_finished_spans() if s.name == "failing"]
    assert [dict(e.attributes or {}) for e in span.events] == [{"exception.type": "builtins.KeyError"}]
    type_only.on_end(span)  # what logfire's pipeline does to the copy it exports
    assert span.status.description == "KeyError"
