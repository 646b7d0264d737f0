"""Bad input on every field: a 422 with a stable code and a clear message, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import count_rows

RUN = "/tools/run_agent_task"
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
        pytest.param({"prompt": "x", "owner": "someone"}, "validation_error", "owner", id="unknown field"),
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
