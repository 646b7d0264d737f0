"""The repository against a real PostgreSQL: audited statements, outcomes, expiry, paging."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from app.access.hashing import hash_api_key
from app.domain import Actor, AuditOutcome, Channel, NewTask, Role, TaskOutcome, TaskStatus
from app.storage import audit as audit_sql
from app.storage import keys as key_sql
from app.storage import tasks as task_sql
from tests.conftest import count_rows


async def make_key(db: asyncpg.Connection, role: Role = Role.CLIENT) -> uuid.UUID:
    key = await key_sql.insert_api_key(
        db, name=f"k-{uuid.uuid4().hex[:6]}", role=role, key_hash=hash_api_key(uuid.uuid4().hex), key_prefix="ask_x"
    )
    return key.id


def new_task(owner: uuid.UUID, retention_seconds: float = 3600, **overrides: Any) -> NewTask:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner_id": owner,
        "status": TaskStatus.RUNNING,
        "model": "offline:echo",
        "template": None,
        "prompt_hash": "ab" * 32,
        "prompt_hash_key_id": "k1",
        "context": {"a": 1},
        "params": {},
        "retention_seconds": retention_seconds,
    }
    values.update(overrides)
    return NewTask(**values)


def actor(key_id: uuid.UUID, role: Role = Role.CLIENT) -> Actor:
    return Actor(key_id, role, Channel.REST, "req-1")


async def outcomes(db: asyncpg.Connection, action: str) -> list[str]:
    rows = await db.fetch("SELECT outcome FROM audit_event WHERE action = $1 ORDER BY id", action)
    return [r["outcome"] for r in rows]


async def test_inserting_a_task_records_its_create_event_in_the_same_statement(db):
    owner = await make_key(db)
    task = await task_sql.insert_task(db, new_task(owner), actor(owner))

    assert task.status == "running"
    assert task.context == {"a": 1}
    event = await db.fetchrow("SELECT actor_id, action, task_id, outcome, request_id FROM audit_event")
    assert dict(event) == {
        "actor_id": owner,
        "action": "create",
        "task_id": task.id,
        "outcome": "ok",
        "request_id": "req-1",
    }


async def test_completing_a_task_stores_its_result(db):
    owner = await make_key(db)
    task = await task_sql.insert_task(db, new_task(owner), actor(owner))
    done = await task_sql.complete_task(
        db,
        task.id,
        TaskOutcome(TaskStatus.SUCCEEDED, output="42", prompt_tokens=1, completion_tokens=2, total_tokens=3),
    )
    assert done is not None
    assert (done.status, done.output, done.total_tokens) == ("succeeded", "42", 3)
    assert done.completed_at is not None


async def test_completing_an_erased_task_finds_nothing(db):
    assert await task_sql.complete_task(db, uuid.uuid4(), TaskOutcome(TaskStatus.FAILED)) is None


@pytest.mark.parametrize(
    ("reader", "retention", "expected"),
    [
        ("owner", 3600, AuditOutcome.OK),
        ("other", 3600, AuditOutcome.DENIED),
        ("anyone", 3600, AuditOutcome.OK),  # auditors and admins: no owner filter
        ("owner", -1, AuditOutcome.EXPIRED),
        ("anyone", -1, AuditOutcome.EXPIRED),
    ],
)
async def test_an_audited_read_returns_the_task_only_when_visible_and_records_why(db, reader, retention, expected):
    owner, other = await make_key(db), await make_key(db)
    task = await task_sql.insert_task(db, new_task(owner, retention_seconds=retention), actor(owner))
    owner_filter = {"owner": owner, "other": other, "anyone": None}[reader]

    found = await audit_sql.read_task_audited(db, task.id, owner_filter, actor(other))

    assert found.outcome is expected
    assert (found.task is not None) == (expected is AuditOutcome.OK)
    if found.task is not None:
        assert found.task.id == task.id
    assert await outcomes(db, "read") == [expected.value]


async def test_reading_an_unknown_task_is_audited_as_not_found(db):
    reader = await make_key(db)
    found = await audit_sql.read_task_audited(db, uuid.uuid4(), reader, actor(reader))
    assert (found.outcome, found.task) == (AuditOutcome.NOT_FOUND, None)
    assert await outcomes(db, "read") == ["not_found"]


async def test_a_read_never_succeeds_without_its_audit_row(db):
    owner = await make_key(db)
    task = await task_sql.insert_task(db, new_task(owner), actor(owner))
    await db.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit store failing'; END $$
        LANGUAGE plpgsql;
        CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    with pytest.raises(asyncpg.RaiseError, match="audit store failing"):
        await audit_sql.read_task_audited(db, task.id, owner, actor(owner))


async def test_an_audited_delete_erases_only_what_the_caller_may_erase(db):
    owner, other = await make_key(db), await make_key(db)
    task = await task_sql.insert_task(db, new_task(owner), actor(owner))

    assert await audit_sql.delete_task_audited(db, task.id, other, actor(other)) is AuditOutcome.DENIED
    assert await count_rows(db, "agent_task") == 1
    assert await audit_sql.delete_task_audited(db, task.id, owner, actor(owner)) is AuditOutcome.OK
    assert await count_rows(db, "agent_task") == 0
    assert await audit_sql.delete_task_audited(db, task.id, owner, actor(owner)) is AuditOutcome.NOT_FOUND
    assert await outcomes(db, "delete") == ["denied", "ok", "not_found"]


async def test_listing_shows_only_the_owners_live_tasks_and_pages(db):
    owner, other = await make_key(db), await make_key(db)
    live = [await task_sql.insert_task(db, new_task(owner), actor(owner)) for _ in range(5)]
    await task_sql.insert_task(db, new_task(owner, retention_seconds=-1), actor(owner))
    await task_sql.insert_task(db, new_task(other), actor(other))

    first = await audit_sql.list_tasks_audited(db, owner, before=None, limit=3, actor=actor(owner))
    cursor = (first[-1].created_at, first[-1].id)
    second = await audit_sql.list_tasks_audited(db, owner, before=cursor, limit=3, actor=actor(owner))

    newest_first = sorted(live, key=lambda t: (t.created_at, t.id), reverse=True)
    assert [t.id for t in first + second] == [t.id for t in newest_first]
    assert await outcomes(db, "list") == ["ok", "ok"]


async def test_audit_events_list_newest_first_and_reading_them_is_recorded(db):
    owner = await make_key(db, Role.AUDITOR)
    task = await task_sql.insert_task(db, new_task(owner), actor(owner))
    await audit_sql.read_task_audited(db, task.id, None, actor(owner))

    events = await audit_sql.list_audit_events_audited(
        db, task_id=task.id, before_id=None, limit=10, actor=actor(owner, Role.AUDITOR)
    )
    assert [e.action for e in events] == ["read", "create"]
    assert await outcomes(db, "audit_read") == ["ok"]


async def test_api_keys_are_found_by_hash_until_revoked(db):
    record = await key_sql.insert_api_key(db, name="n", role=Role.ADMIN, key_hash="h" * 64, key_prefix="ask_abc")
    assert (await key_sql.find_active_key(db, "h" * 64)) == record
    revoked = await key_sql.revoke_api_key(db, record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await key_sql.find_active_key(db, "h" * 64) is None
    assert await key_sql.revoke_api_key(db, uuid.uuid4()) is None
    assert await key_sql.count_api_keys(db) == 1


async def test_a_migrated_database_is_at_the_head(db):
    from app.storage.migrations import head_revision, schema_state

    state = await schema_state(db)
    assert state.at_head
    assert state.revision == head_revision()
