"""The sealed audit trail over REST: the public key, the seals, and an export that verifies offline
with that key alone, and fails on any one-byte change."""

from __future__ import annotations

import json

import pytest

from app.access.signing import AuditVerifier
from app.service.export import verify_export
from tests.support.routes import RUN

WINDOW = {"since": "2026-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}


def lines_of(content: bytes) -> list[bytes]:
    return content.splitlines(keepends=True)


@pytest.fixture
async def sealed(client, alice, app_components):
    """A few audited operations, sealed."""
    for prompt in ("one", "two"):
        created = (await client.post(RUN, json={"prompt": prompt}, headers=alice.headers)).json()
        await client.get(f"/resources/get_agent_result/{created['task_id']}", headers=alice.headers)
    await app_components.trail.seal()


async def test_an_export_verifies_offline_with_the_served_public_key(client, auditor, sealed):
    pem = (await client.get("/audit/public-key", headers=auditor.headers)).content
    response = await client.get("/audit/export", params=WINDOW, headers=auditor.headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = lines_of(response.content)
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds == ["header", "event", "event", "event", "event", "seal", "manifest"]
    check = verify_export(lines, AuditVerifier.from_pem(pem))
    assert check.ok, check.reason
    assert (check.events, check.seals) == (4, 1)
    events = [json.loads(line)["event"] for line in lines[1:5]]
    assert {e["action"] for e in events} == {"create", "read"}
    assert "one" not in response.text  # never a task's contents
    assert "prompt" not in response.text


@pytest.mark.parametrize("where", ["header", "event", "seal", "manifest"])
async def test_a_one_byte_change_anywhere_makes_the_check_fail_and_name_the_line(client, auditor, sealed, where):
    pem = (await client.get("/audit/public-key", headers=auditor.headers)).content
    lines = lines_of((await client.get("/audit/export", params=WINDOW, headers=auditor.headers)).content)
    index = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == where)
    line = bytearray(lines[index])
    at = line.index(b'"type"') - 2 if where != "header" else line.index(b"created_at") + 15
    line[at] = ord("1") if line[at] != ord("1") else ord("2")  # one digit of a value
    lines[index] = bytes(line)

    check = verify_export(lines, AuditVerifier.from_pem(pem))
    assert not check.ok
    # A changed event or seal is named by its line; a changed header, by the manifest that signed it.
    assert check.line == (len(lines) if where == "header" else index + 1), check


async def test_an_export_cut_short_fails(client, auditor, sealed):
    pem = (await client.get("/audit/public-key", headers=auditor.headers)).content
    lines = lines_of((await client.get("/audit/export", params=WINDOW, headers=auditor.headers)).content)
    check = verify_export(lines[:-1], AuditVerifier.from_pem(pem))
    assert (check.ok, check.reason) == (False, "the manifest is missing (the export is cut short)")


async def test_an_export_is_audited_with_its_window(client, auditor, db):
    await client.get("/audit/export", params=WINDOW, headers=auditor.headers)
    event = await db.fetchrow(
        "SELECT actor_id, channel, outcome, detail FROM audit_event WHERE action = 'audit_export'"
    )
    assert (event["actor_id"], event["channel"], event["outcome"]) == (auditor.key_id, "rest", "ok")
    assert event["detail"] == {"since": "2026-01-01T00:00:00.000000Z", "until": "2100-01-01T00:00:00.000000Z"}


@pytest.mark.parametrize(
    "params",
    [{"since": "yesterday", "until": "2100-01-01T00:00:00Z"}, {"since": "2100-01-01", "until": "2026-01-01"}, {}],
)
async def test_a_bad_window_is_a_422_with_our_error_body(client, auditor, params):
    response = await client.get("/audit/export", params=params, headers=auditor.headers)
    assert response.status_code == 422
    assert response.json()["code"] in {"validation_error", "invalid_input"}


async def test_the_seals_are_listed_newest_first_for_auditors(client, auditor, alice, sealed, app_components):
    await client.get("/resources/agent_results", headers=alice.headers)
    await app_components.trail.seal()
    page = (await client.get("/audit/seals", params={"limit": 1}, headers=auditor.headers)).json()
    [newest] = page["items"]
    assert newest["id"] == 2
    assert page["next_cursor"] == "2"
    [oldest] = (await client.get("/audit/seals", params={"cursor": "2"}, headers=auditor.headers)).json()["items"]
    assert newest["previous_digest"] == oldest["digest"]
    assert (await client.get("/audit/seals", headers=alice.headers)).status_code == 403
