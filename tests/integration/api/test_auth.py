"""Bearer authentication on every protected route; keys are stored hashed."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from app.domain import Role
from tests.support.app import count_rows

TASK = str(uuid.uuid4())
PROTECTED = [
    ("POST", "/tools/run_agent_task", {"prompt": "hello"}),
    ("GET", f"/resources/get_agent_result/{TASK}", None),
    ("GET", "/resources/agent_results", None),
    ("DELETE", f"/resources/get_agent_result/{TASK}", None),
    ("GET", "/audit/events", None),
]
BAD_HEADERS = {
    "no header": {},
    "empty bearer": {"Authorization": "Bearer "},
    "other scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "unknown key": {"Authorization": "Bearer ask_" + "A" * 43},
    "not a key": {"Authorization": "Bearer hello"},
    "oversized": {"Authorization": "Bearer ask_" + "A" * 5000},
}


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
@pytest.mark.parametrize("headers", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
async def test_protected_routes_refuse_missing_or_unknown_keys(client, db, method, path, body, headers):
    response = await client.request(method, path, json=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"
    assert await count_rows(db, "agent_task") == 0
    assert await count_rows(db, "audit_event") == 0


async def test_a_revoked_key_stops_working_at_once(client, app_components, alice):
    assert (await client.get("/resources/agent_results", headers=alice.headers)).status_code == 200
    await app_components.keys.revoke(alice.key_id)
    assert (await client.get("/resources/agent_results", headers=alice.headers)).status_code == 401


async def test_keys_are_stored_hashed_and_listed_without_the_key(app_components, db):
    record, plain, _ = await app_components.keys.create("reporting", Role.AUDITOR)

    stored = await db.fetchrow("SELECT * FROM api_key WHERE id = $1", record.id)
    assert stored["key_hash"] == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in str(dict(stored))
    assert plain.startswith(stored["key_prefix"])
    listed = await app_components.keys.list()
    assert [k.name for k in listed] == ["reporting"]


async def test_a_cached_key_is_still_refused_after_revocation_in_the_same_process(settings):
    from app.service.wiring import Components

    service = Components(settings.model_copy(update={"auth_cache_seconds": 60}))
    await service.start()
    try:
        record, plain, _ = await service.keys.create("cached", Role.CLIENT)
        assert (await service.keys.authenticate(plain)).key_id == record.id
        await service.keys.revoke(record.id)
        with pytest.raises(Exception, match="unknown or revoked"):
            await service.keys.authenticate(plain)
    finally:
        await service.stop()
