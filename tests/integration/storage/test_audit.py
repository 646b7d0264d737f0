"""The audited statements against a real PostgreSQL: a read or a delete returns or erases a task only
when the caller may see it, and records why in the same statement (never without its audit row);
listing pages the owner's live tasks; the audit log lists newest first and its reading is recorded."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from app.domain import AuditOutcome, Role
from app.storage import audit as audit_sql
from app.storage import tasks as task_sql
from tests.support.app import count_rows
from tests.support.storage import actor, make_key, new_task, outcomes


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
