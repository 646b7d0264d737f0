"""Named statements: `:name` parameters compile to asyncpg's `$n`, each name one number, casts untouched;
and every statement of the storage layer prepares against the migrated schema, its rows lining up
with the record it is read into."""

from __future__ import annotations

import asyncpg
import pytest

from app.domain import ApiKeyRecord, AuditEventRecord, TaskRecord
from app.storage import audit, keys, limits, migrations, retention, tasks
from app.storage.sql import Statement, column_list

STATEMENTS = [
    value
    for module in (tasks, audit, keys, limits, retention, migrations)
    for value in vars(module).values()
    if isinstance(value, Statement)
]


def test_each_name_is_one_number_and_casts_stay():
    statement = Statement("s", "SELECT :a::uuid, :b, :a, '{}'::jsonb, x::text FROM t WHERE y = :b::int")
    assert statement.sql == "SELECT $1::uuid, $2, $1, '{}'::jsonb, x::text FROM t WHERE y = $2::int"
    assert statement.params == ("a", "b")
    assert statement.args({"b": 2, "a": 1}) == (1, 2)


@pytest.mark.parametrize(("values", "problem"), [({"a": 1}, "missing \\['b'\\]"), ({"a": 1, "b": 2, "c": 3}, "'c'")])
def test_every_parameter_must_be_given_and_nothing_else(values, problem):
    with pytest.raises(TypeError, match=problem):
        Statement("s", "SELECT :a, :b").args(values)


def test_the_storage_layer_names_its_statements_uniquely():
    names = [s.name for s in STATEMENTS]
    assert len(names) == len(set(names))
    assert len(STATEMENTS) >= 30


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.name)
async def test_every_statement_prepares_against_the_migrated_schema(db: asyncpg.Connection, statement):
    prepared = await db.prepare(statement.sql)
    assert len(prepared.get_parameters()) == len(statement.params)


@pytest.mark.parametrize(
    ("statement", "record", "skip"),
    [
        (tasks.INSERT_TASK, TaskRecord, 0),
        (tasks.INSERT_CACHE_HIT, TaskRecord, 0),
        (tasks.INSERT_CACHED_COPY, TaskRecord, 0),
        (tasks.FIND_CACHED, TaskRecord, 0),
        (tasks.GET_TASK, TaskRecord, 0),
        (tasks.FIND_BY_IDEMPOTENCY_KEY, TaskRecord, 1),
        (tasks.COMPLETE_AS_COPY, TaskRecord, 0),
        (tasks.COMPLETE_TASK, TaskRecord, 0),
        (audit.READ_TASK_AUDITED, TaskRecord, 1),
        (audit.LIST_TASKS_AUDITED, TaskRecord, 0),
        (audit.LIST_EVENTS, AuditEventRecord, 0),
        (audit.LIST_EVENTS_FOR_TASK, AuditEventRecord, 0),
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
