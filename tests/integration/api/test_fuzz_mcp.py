"""Fuzzing the MCP tools' arguments, and every listing's cursor, on a real PostgreSQL.

Each tool's own `inputSchema` (what `tools/list` shows a client) is turned into an operation of
a small OpenAPI document, so schemathesis generates valid arguments and invalid ones from it
(its public API: no second generator of our own). Every call goes through an MCP client to the
server. An answer must be a result, or a tool error in the REST error contract: JSON with a
stable `code` and a `message`, never an internal error, and never a string the caller sent (an
agent framework feeds the error back to the model and into its traces).

Cursors are fuzzed apart: generated text rarely decodes, so forged cursors are also made the
way the service makes real ones (any date, any offset, any id; any integer, any digits), and
must be answered 200 or 422 `invalid_cursor` on REST and MCP alike.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok

from app.service.pagination import encode_task_cursor
from app.storage import tasks
from tests.support.app import Caller
from tests.support.mcp import mcp_as
from tests.support.routes import AUDIT, LIST, RUN
from tests.support.storage import actor, new_task

EXAMPLES = 40  # per tool and generation mode; derandomized, so every run sends the same calls
AUDITOR_TOOLS = {"search_tasks_by_prompt"}
CODE = re.compile(r"^[a-z][a-z_]*$")
# A generated string this long that shows up in an error was echoed, not a coincidence.
ECHO_MIN_CHARS = 10

COLLECT = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _as_openapi(tools: list[Any]) -> dict[str, Any]:
    """One POST operation per tool, its request body the tool's input schema."""
    paths = {
        f"/{tool.name}": {
            "post": {
                "operationId": tool.name,
                "requestBody": {"required": True, "content": {"application/json": {"schema": tool.input_schema}}},
                "responses": {"200": {"description": "a result or a tool error"}},
            }
        }
        for tool in tools
    }
    return {"openapi": "3.1.0", "info": {"title": "MCP tools", "version": "1"}, "paths": paths}


def _examples(operation: Any, mode: GenerationMode) -> list[Any]:
    """Generated argument objects (hypothesis runs synchronously; the calls come after)."""
    bodies: list[Any] = []

    @COLLECT
    @given(case=operation.as_strategy(generation_mode=mode))
    def collect(case: Case) -> None:
        bodies.append(case.body)

    collect()
    return [body for body in bodies if isinstance(body, dict)]  # tools/call takes an object


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _check_error(text: str, arguments: dict[str, Any], schema_text: str) -> str:
    error = json.loads(text)  # not JSON: FastMCP's masked text of an unexpected exception
    assert set(error) <= {"code", "message", "details"}, error
    assert {"code", "message"} <= set(error), error
    assert CODE.match(error["code"]), error
    assert error["code"] != "internal_error", error
    # The stable code is ours, not the input: a fuzzed "validation" is no echo of `validation_error`.
    without_code = text.replace(error["code"], "")
    for sent in _strings(arguments):
        if len(sent) >= ECHO_MIN_CHARS and sent not in schema_text:
            assert sent not in without_code, f"the error echoes {sent!r}"
    return str(error["code"])


async def test_every_tool_survives_fuzzed_arguments_and_answers_in_the_error_contract(
    app_service, alice: Caller, auditor: Caller, db: asyncpg.Connection
) -> None:
    async with mcp_as(app_service, alice) as mcp:
        tools = await mcp.list_tools()
    schema = schemathesis.openapi.from_dict(_as_openapi(tools))
    operations = {result.ok().label.removeprefix("POST /"): result.ok() for result in schema.get_all_operations()
                  if isinstance(result, Ok)}  # fmt: skip
    assert set(operations) == {tool.name for tool in tools}, "schemathesis understands every tool's schema"

    async with mcp_as(app_service, alice) as mcp:
        existing = [(await mcp.call_tool("run_agent_task", {"prompt": "fuzz"})).structured_content["task_id"]
                    for _ in range(3)]  # one each for the read, the erasure and the webhook  # fmt: skip
    # A task still running (as a replica would leave it, its lease current), for the cancel.
    running = new_task(alice.key_id, context=None, lease_seconds=3600)
    await tasks.insert_task(db, running, actor(alice.key_id))

    answers: dict[str, Counter[str]] = {name: Counter() for name in operations}
    for tool in tools:
        schema_text = json.dumps(tool.input_schema)
        caller = auditor if tool.name in AUDITOR_TOOLS else alice
        async with mcp_as(app_service, caller) as mcp:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                examples = _examples(operations[tool.name], mode)
                if mode is GenerationMode.POSITIVE and "task_id" in tool.input_schema["properties"]:
                    # so a real task is read, erased or cancelled, not only 422s
                    examples.append(
                        {"task_id": str(running.id) if tool.name == "cancel_agent_task" else existing.pop()}
                    )
                for arguments in examples:
                    result = await mcp.call_tool(tool.name, arguments, raise_on_error=False)
                    if result.is_error:
                        [block] = result.content
                        code = _check_error(block.text, arguments, schema_text)
                        answers[tool.name][f"{mode.value} {code}"] += 1
                    else:
                        answers[tool.name][f"{mode.value} ok"] += 1

    print()
    for name, counts in sorted(answers.items()):
        print(f"  {name}: {dict(sorted(counts.items()))}")
    for name, counts in answers.items():
        assert any(outcome == "positive ok" for outcome in counts), f"{name} never succeeded"
        assert any(outcome.startswith("negative ") and not outcome.endswith(" ok") for outcome in counts), (
            f"{name} never refused an argument"
        )


# -- forged cursors ---------------------------------------------------------------------------

_OFFSETS = st.builds(timezone, st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                                             max_value=timedelta(hours=23, minutes=59)))  # fmt: skip
_TASK_CURSORS = st.builds(
    encode_task_cursor, st.datetimes(timezones=st.one_of(st.just(UTC), _OFFSETS)), st.uuids()
)  # every date Python has, including years 1 and 9999: only the issued range may pass
_INT_CURSORS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.text(alphabet=string.digits + "²³¹٣۴߅१০੬૭୮௯౦೧൨๓໔༥၆႗០᠑", min_size=1, max_size=25),
)
CURSORS = st.one_of(_TASK_CURSORS, _INT_CURSORS)


def _cursors() -> list[str]:
    found: list[str] = []

    @COLLECT
    @given(cursor=CURSORS)
    def collect(cursor: str) -> None:
        found.append(cursor)

    collect()
    return found


@pytest.fixture
async def a_page_of_tasks(client, alice: Caller) -> None:
    for _ in range(3):
        assert (await client.post(RUN, json={"prompt": "fuzz", "cache": False}, headers=alice.headers)).is_success


@pytest.mark.usefixtures("a_page_of_tasks")
async def test_forged_cursors_are_422_invalid_cursor_everywhere(client, app_service, alice, auditor) -> None:
    cursors = _cursors()
    seen: Counter[str] = Counter()
    for cursor in cursors:
        rest = [
            await client.get(LIST, params={"cursor": cursor}, headers=alice.headers),
            await client.get(AUDIT, params={"cursor": cursor}, headers=auditor.headers),
            await client.post("/audit/prompt-search", params={"cursor": cursor}, json={"prompt": "fuzz"},
                              headers=auditor.headers),
        ]  # fmt: skip
        for response in rest:
            assert response.status_code in (200, 422), (cursor, response.status_code)
            if response.status_code == 422:
                assert response.json()["code"] in ("invalid_cursor", "validation_error"), cursor
            seen[str(response.status_code)] += 1
    async with mcp_as(app_service, auditor) as mcp:
        for cursor in cursors:
            for tool, arguments in (("list_agent_results", {}), ("search_tasks_by_prompt", {"prompt": "fuzz"})):
                result = await mcp.call_tool(tool, {**arguments, "cursor": cursor}, raise_on_error=False)
                if result.is_error:
                    assert json.loads(result.content[0].text)["code"] == "invalid_cursor", cursor
                seen["mcp error" if result.is_error else "mcp ok"] += 1
    assert seen["422"], seen
    assert seen["mcp error"], seen
