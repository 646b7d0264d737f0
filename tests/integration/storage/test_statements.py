"""Every named statement of the storage layer prepares against the migrated schema (its parameters
as many as its names), and the rows of those read into records line up with the record's fields."""

from __future__ import annotations

import asyncpg
import pytest

from app.domain import ApiKeyRecord, AuditEventRecord, LegalHoldRecord, TaskRecord
from app.storage import audit, holds, keys, tasks
from app.storage.sql import column_list
from tests.support.storage import STATEMENTS


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.name)
async def test_every_statement_prepares_against_the_migrated_schema(db: asyncpg.Connection, statement):
    prepared = await db.prepare(statement.sql)
    assert len(prepared.get_parameters()) == len(statement.params)


@pytest.mark.parametrize(
    ("statement", "record", "skip"),
    [
        (tasks.INSERT_TASK, TaskRecord, 0),
        (tasks.INSERT_CACHED_COPY, TaskRecord, 0),
        (tasks.FIND_CACHED, TaskRecord, 0),
        (tasks.GET_TASK, TaskRecord, 0),
        (tasks.FIND_BY_IDEMPOTENCY_KEY, TaskRecord, 1),
        (tasks.COMPLETE_AS_COPY, TaskRecord, 0),
        (tasks.COMPLETE_TASK, TaskRecord, 0),
        (audit.READ_TASK_AUDITED, TaskRecord, 2),
        (audit.LIST_TASKS_AUDITED, TaskRecord, 0),
        (audit.LIST_EVENTS, AuditEventRecord, 0),
        (audit.LIST_EVENTS_FOR_TASK, AuditEventRecord, 0),
        (holds.PLACE_HOLD, LegalHoldRecord, 0),
        (holds.LIST_HOLDS, LegalHoldRecord, 0),
        (keys.INSERT_API_KEY, ApiKeyRecord, 0),
        (keys.FIND_ACTIVE_KEY, ApiKeyRecord, 0),
        (keys.LIST_API_KEYS, ApiKeyRecord, 0),
        (keys.REVOKE_API_KEY, ApiKeyRecord, 0),
        (keys.SET_KEY_LIMITS, ApiKeyRecord, 0),
    ],
    ids=lambda value: getattr(value, "name", None) or getattr(value, "__name__", str(value)),
)
async def test_rows_line_up_with_their_records(db: asyncpg.Connection, statement, record, skip):
    prepared = await db.prepare(statement.sql)
    columns = [attribute.name for attribute in prepared.get_attributes()][skip:]
    assert ", ".join(columns) == column_list(record)
