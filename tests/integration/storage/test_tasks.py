"""Task rows against a real PostgreSQL: inserting a task records its create event in the same
statement; completing stores the result, and finds nothing once the task was erased."""

from __future__ import annotations

import uuid

from app.domain import TaskOutcome, TaskStatus
from app.storage import tasks as task_sql
from tests.support.storage import actor, make_key, new_task


async def test_inserting_a_task_records_its_create_event_in_the_same_statement(db):
    owner = await make_key(db)
    task = await task_sql.insert_task(db, new_task(owner), actor(owner))

    assert task.status == "running"
    assert task.context == b"sealed context"
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
        output=b"sealed 42",
    )
    assert done is not None
    assert (done.status, done.output, done.total_tokens) == ("succeeded", b"sealed 42", 3)
    assert done.completed_at is not None


async def test_completing_an_erased_task_finds_nothing(db):
    outcome = TaskOutcome(TaskStatus.FAILED)
    assert await task_sql.complete_task(db, uuid.uuid4(), outcome, output=None) is None
