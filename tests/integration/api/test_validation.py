"""Bad input on every field: a 422 with a stable code and a clear message, and nothing written."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from tests.support.app import count_rows
from tests.support.routes import AUDIT, LIST, RUN

TOO_BIG_CONTEXT = {"blob": "x" * (16 * 1024)}


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        pytest.param({}, "validation_error", "prompt", id="missing prompt"),
        pytest.param({"prompt": ""}, "validation_error", "prompt", id="empty prompt"),
        pytest.param({"prompt": " \n\t "}, "validation_error", "prompt", id="blank prompt"),
        pytest.param({"prompt": 42}, "validation_error", "prompt", id="prompt not a string"),
        pytest.param({"prompt": "x" * 32_001}, "prompt_too_long", None, id="prompt over MAX_PROMPT_CHARS"),
        pytest.param({"prompt": "x" * 1_000_001}, "validation_error", "prompt", id="prompt over the hard limit"),
        pytest.param({"prompt": "x", "context": TOO_BIG_CONTEXT}, "validation_error", "context", id="context too big"),
        pytest.param({"prompt": "x", "context": ["a"]}, "validation_error", "context", id="context not an object"),
        pytest.param({"prompt": "x", "context": "text"}, "validation_error", "context", id="context a string"),
        pytest.param({"prompt": "x", "template": "../etc/passwd"}, "validation_error", "template", id="template path"),
        pytest.param({"prompt": "x", "template": "summary"}, "unknown_template", None, id="template unknown"),
        pytest.param({"prompt": "x", "model": "gpt-4o"}, "unknown_model", None, id="model without provider"),
        pytest.param({"prompt": "x", "model": "nope:m"}, "unknown_model", None, id="model unknown provider"),
        pytest.param({"prompt": "x", "model": "m" * 201}, "validation_error", "model", id="model too long"),
        pytest.param({"prompt": "x", "params": {"temperature": 2.5}}, "validation_error", "params", id="temperature"),
        pytest.param({"prompt": "x", "params": {"max_tokens": 0}}, "validation_error", "params", id="max_tokens low"),
        pytest.param({"prompt": "x", "params": {"max_tokens": 100_001}}, "validation_error", "params", id="max_tokens"),
        pytest.param(
            {"prompt": "x", "params": {"max_tokens": 1.5}}, "validation_error", "params", id="max_tokens float"
        ),
        pytest.param({"prompt": "x", "params": {"top_p": -0.1}}, "validation_error", "params", id="top_p"),
        pytest.param({"prompt": "x", "params": {"seed": 1}}, "validation_error", "params", id="unknown param"),
        pytest.param({"prompt": "x", "params": {"temperature": "hot"}}, "validation_error", "params", id="temp str"),
        pytest.param({"prompt": "x", "cache": "yes"}, "validation_error", "cache", id="cache not a bool"),
        pytest.param({"prompt": "x", "cache": 1}, "validation_error", "cache", id="cache an int"),
        pytest.param({"prompt": "x", "retention_days": 0}, "validation_error", "retention_days", id="retention 0"),
        pytest.param({"prompt": "x", "retention_days": -1}, "validation_error", "retention_days", id="retention < 0"),
        pytest.param({"prompt": "x", "retention_days": "7"}, "validation_error", "retention_days", id="retention str"),
        pytest.param({"prompt": "x", "retention_days": 365}, "retention_too_long", None, id="retention too long"),
    ],
)
async def test_bad_task_input_is_422_and_writes_nothing(client, alice, db, body: dict[str, Any], code, field):
    response = await client.post(RUN, json=body, headers=alice.headers)

    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in error["message"]
        assert any(field in detail["loc"] for detail in error["details"])
    assert await count_rows(db, "agent_task") == 0
    assert await count_rows(db, "audit_event") == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{not json", "application/json", id="malformed JSON"),
        pytest.param(b"", "application/json", id="empty body"),
        pytest.param(b"[1, 2]", "application/json", id="array body"),
        pytest.param(b"prompt=hi", "application/x-www-form-urlencoded", id="form body"),
    ],
)
async def test_a_body_that_is_not_a_task_is_422(client, alice, db, content, content_type):
    response = await client.post(RUN, content=content, headers={**alice.headers, "Content-Type": content_type})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert await count_rows(db, "agent_task") == 0


@pytest.mark.parametrize("path", ["/resources/get_agent_result/not-a-uuid", "/resources/get_agent_result/1234"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_invalid_task_id_is_422_and_not_audited(client, alice, db, method, path):
    response = await client.request(method, path, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "task_id" in response.json()["message"]
    assert await count_rows(db, "audit_event") == 0


async def test_an_invalid_task_id_filter_on_the_audit_log_is_422(client, auditor):
    response = await client.get("/audit/events", params={"task_id": "nope"}, headers=auditor.headers)
    assert response.status_code == 422


async def test_errors_never_echo_the_input(client, alice):
    secret = "do-not-echo-" + "z" * 40
    responses = [
        await client.post(RUN, json={"prompt": secret * 1000}, headers=alice.headers),
        await client.post(RUN, json={"prompt": 7, "context": secret}, headers=alice.headers),
        await client.post(RUN, json={"prompt": secret, "params": {"temperature": secret}}, headers=alice.headers),
    ]
    for response in responses:
        assert response.status_code == 422
        assert "do-not-echo" not in response.text


# JSON bodies are strict: a value of the wrong JSON type is refused, never coerced (query
# parameters, which can only be text, are still parsed from text).
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"prompt": "x", "params": {"max_tokens": "5"}}, "max_tokens", id="max_tokens a string"),
        pytest.param({"prompt": "x", "params": {"max_tokens": 5.0}}, "max_tokens", id="max_tokens a float"),
        pytest.param({"prompt": "x", "params": {"max_tokens": True}}, "max_tokens", id="max_tokens a bool"),
        pytest.param({"prompt": "x", "params": {"temperature": "0.5"}}, "temperature", id="temperature a string"),
        pytest.param({"prompt": "x", "params": {"top_p": True}}, "top_p", id="top_p a bool"),
        pytest.param({"prompt": "x", "params": [1]}, "params", id="params an array"),
        pytest.param({"prompt": "x", "cache": "true"}, "cache", id="cache the string true"),
        pytest.param({"prompt": "x", "cache": 0}, "cache", id="cache zero"),
        pytest.param({"prompt": 1}, "prompt", id="prompt a number"),
        pytest.param({"prompt": ["x"]}, "prompt", id="prompt an array"),
        pytest.param({"prompt": "x", "model": 1}, "model", id="model a number"),
        pytest.param({"prompt": "x", "template": 1}, "template", id="template a number"),
        pytest.param({"prompt": "x", "retention_days": True}, "retention_days", id="retention_days a bool"),
        pytest.param({"prompt": "x", "retention_days": "1.5"}, "retention_days", id="retention_days a string"),
    ],
)
async def test_body_fields_of_the_wrong_json_type_are_refused(client, alice, db, body: dict[str, Any], field):
    response = await client.post(RUN, json=body, headers=alice.headers)

    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert any(field in detail["loc"] for detail in error["details"])
    assert await count_rows(db, "agent_task") == 0
    assert await count_rows(db, "audit_event") == 0


async def test_query_parameters_are_still_read_from_text(client, alice):
    response = await client.post(f"{RUN}?wait=false", json={"prompt": "x"}, headers=alice.headers)
    assert response.status_code == 202
    listed = await client.get("/resources/agent_results", params={"limit": "1"}, headers=alice.headers)
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 1


def nested(depth: int) -> dict[str, Any]:
    """A context object `depth` containers deep (itself the first)."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


# What PostgreSQL cannot store (U+0000; NaN and Infinity, which Python's JSON reader takes) or
# what is not Unicode (a lone surrogate, spelt with a \u escape), and context too deep to be
# answered back, are bad input: a 422 naming the field, not a 500 now or on every later read.
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"prompt": "x", "context": {"a\x00": 1}}, "context", id="NUL in a context key"),
        pytest.param({"prompt": "x", "context": {"a": [{"b": "\x00"}]}}, "context", id="NUL deep in context"),
        pytest.param({"prompt": "x", "model": "offline:a\x00b"}, "model", id="NUL in model"),
        pytest.param({"prompt": "x", "context": {"a": "\udc00"}}, "context", id="lone surrogate in context"),
        pytest.param({"prompt": "x", "model": "offline:\ud800"}, "model", id="lone surrogate in model"),
        pytest.param({"prompt": "hi \udc00 there"}, "prompt", id="lone surrogate in prompt"),
        pytest.param({"prompt": "x", "context": {"a": float("nan")}}, "context", id="NaN in context"),
        pytest.param({"prompt": "x", "context": {"a": [float("inf")]}}, "context", id="Infinity in context"),
        pytest.param({"prompt": "x", "params": {"temperature": float("nan")}}, "params", id="NaN temperature"),
        pytest.param({"prompt": "x", "context": nested(33)}, "context", id="context 33 levels deep"),
        pytest.param({"prompt": "x", "context": nested(300)}, "context", id="context 300 levels deep"),
    ],
)
async def test_text_the_database_cannot_hold_is_refused(client, alice, db, body: dict[str, Any], field):
    content = json.dumps(body)  # ASCII with \u escapes: the HTTP body itself is valid UTF-8
    headers = {**alice.headers, "Content-Type": "application/json"}
    response = await client.post(RUN, content=content, headers=headers)

    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    assert any(field in detail["loc"] for detail in error["details"])
    for echo in ("\\u0000", "\\udc00", "\\ud800", "leaf"):
        assert echo not in response.text  # the offending input is not echoed
    assert await count_rows(db, "agent_task") == 0


async def test_context_as_deep_as_allowed_is_stored_and_read_back(client, alice):
    context = nested(32)
    created = await client.post(RUN, json={"prompt": "x", "context": context}, headers=alice.headers)
    assert created.status_code == 200, created.text

    read = await client.get(f"/resources/get_agent_result/{created.json()['task_id']}", headers=alice.headers)
    listed = await client.get("/resources/agent_results", headers=alice.headers)
    assert read.status_code == 200
    assert read.json()["context"] == context
    assert listed.status_code == 200
    assert listed.json()["items"][0]["context"] == context


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_absurdly_nested_json_is_a_4xx_and_writes_nothing(client, alice, db, depth):
    body = '{"prompt": "x", "context": {"a": ' + "[" * depth + "]" * depth + "}}"
    answer = await client.post(RUN, content=body, headers={**alice.headers, "Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500
    assert await count_rows(db, "agent_task") == 0


# -- null, unknown names, forged cursors, unknown query parameters, trailing slashes ------------


async def test_null_for_every_optional_field_means_its_default(client, alice):
    """Strict-mode agent frameworks send every field, with null for the ones they leave unset."""
    nulls = {"context": None, "template": None, "model": None, "params": None, "cache": None, "retention_days": None}
    response = await client.post(RUN, json={"prompt": "hello", **nulls}, headers=alice.headers)

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["status"], result["context"], result["model"]) == ("succeeded", {}, "offline:echo")


async def test_an_unknown_field_is_refused_without_naming_it(client, alice, db):
    invented = "owner_SECRET_name"
    response = await client.post(RUN, json={"prompt": "x", invented: "someone"}, headers=alice.headers)

    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "validation_error"
    assert "unknown field" in error["message"]
    assert invented not in response.text
    assert "someone" not in response.text
    assert await count_rows(db, "agent_task") == 0


async def test_an_unknown_nested_field_is_refused_without_naming_it(client, alice):
    response = await client.post(RUN, json={"prompt": "x", "params": {"SECRET_seed": 1}}, headers=alice.headers)

    assert response.status_code == 422
    assert "SECRET" not in response.text
    assert ["body", "params"] in [detail["loc"] for detail in response.json()["details"]]


def _task_cursor(when: str) -> str:
    return base64.urlsafe_b64encode(f"{when}|{uuid.uuid4()}".encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(_task_cursor("9999-12-31T23:59:59-05:00"), id="year 9999"),
        pytest.param(_task_cursor("0001-01-01T00:00:00+05:00"), id="year 1"),
        pytest.param(_task_cursor("9999-12-31T23:59:59+00:00"), id="the last instant"),
        pytest.param("²", id="superscript two"),
    ],
)
async def test_a_forged_task_cursor_is_invalid_cursor(client, alice, cursor):
    response = await client.get(LIST, params={"cursor": cursor}, headers=alice.headers)

    assert (response.status_code, response.json()["code"]) == (422, "invalid_cursor")


@pytest.mark.parametrize("cursor", ["9223372036854775808", "9999999999999999999", "²", "١٢", "0", "-5", " 7"])
async def test_a_forged_audit_cursor_is_invalid_cursor(client, auditor, cursor):
    response = await client.get(AUDIT, params={"cursor": cursor}, headers=auditor.headers)

    assert (response.status_code, response.json()["code"]) == (422, "invalid_cursor")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", RUN), ("GET", LIST), ("GET", AUDIT), ("GET", "/retention"), ("GET", "/healthz")],
)
async def test_an_unknown_query_parameter_is_refused_without_naming_it(client, auditor, db, method, path):
    body = {"prompt": "x"} if method == "POST" else None
    response = await client.request(method, path, params={"prompt": "SECRET-QUERY"}, json=body, headers=auditor.headers)

    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    assert "unknown query parameter" in error["message"]
    assert "SECRET" not in response.text
    assert "prompt" not in response.text
    assert await count_rows(db, "agent_task") == 0


@pytest.mark.parametrize(("method", "path"), [("POST", "/mcp/"), ("GET", f"{LIST}/"), ("GET", "/healthz/")])
async def test_a_trailing_slash_is_not_redirected_to_the_callers_host(client, alice, method, path):
    response = await client.request(method, path, headers={**alice.headers, "Host": "evil.example"})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "location" not in response.headers
