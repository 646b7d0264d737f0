"""The partitioning migration (4f5a6b7c8d9e): audit_event moves to daily partitions with its rows,
constraints, grants and identity, goes down to one table and up again, and a later migration can
still redefine the action CHECK on every partition."""

from __future__ import annotations

import asyncpg
import pytest
from alembic import command

from app.storage import migrations
from tests.support.postgres import run_sync
from tests.support.settings import TEST_RESULT_KEYS


async def _audit_rows(url: str) -> dict[str, object]:
    """How audit_event is stored: its kind, its partitions, its rows and the next id it hands out."""
    conn = await asyncpg.connect(url)
    try:
        kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'audit_event'::regclass")
        partitions = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'audit_event'::regclass ORDER BY 1"
        )
        rows = await conn.fetch("SELECT id, action FROM audit_event WHERE action IN ('read', 'purge') ORDER BY id")
        grants = await conn.fetchval(
            "SELECT has_table_privilege('audit_reader', 'audit_event', 'SELECT')"
            " AND NOT has_table_privilege('audit_reader', 'audit_event', 'INSERT')"
        )
        next_id = await conn.fetchval(
            "INSERT INTO audit_event (channel, action, outcome) VALUES ('cli', 'audit_read', 'ok') RETURNING id"
        )
        with pytest.raises(asyncpg.CheckViolationError):  # the CHECK constraints came along
            await conn.execute("INSERT INTO audit_event (channel, action, outcome) VALUES ('cli', 'nonsense', 'ok')")
        return {
            "kind": kind,
            "partitions": [r[0] for r in partitions],
            "rows": [(r[0], r[1]) for r in rows],
            "grants": grants,
            "next_id_above_rows": next_id > max(r[0] for r in rows),
        }
    finally:
        await conn.close()


async def _events_before_partitioning(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO audit_event (occurred_at, channel, action, outcome)"
            " SELECT now() - make_interval(days => g), 'rest', 'read', 'ok' FROM generate_series(0, 499) AS g"
        )
        await conn.execute(
            "INSERT INTO audit_event (channel, action, outcome, detail) VALUES ('system', 'purge', 'ok', '{\"n\": 1}')"
        )
        await conn.execute("DO $$ BEGIN CREATE ROLE audit_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        await conn.execute("GRANT SELECT ON audit_event TO audit_reader")
    finally:
        await conn.close()


def test_the_partitioning_migration_moves_a_table_with_rows_and_goes_down_and_up_again(empty_database_url):
    before = "5a6b7c8d9e0f"  # the response format's
    migrations.upgrade(empty_database_url, before, result_keys=TEST_RESULT_KEYS)
    run_sync(_events_before_partitioning(empty_database_url))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    up = run_sync(_audit_rows(empty_database_url))
    assert up["kind"] == "p"
    assert up["partitions"][0] == "audit_event_history"
    assert up["partitions"][-1] == "audit_event_reserve"
    assert len([p for p in up["partitions"] if p.startswith("audit_event_p")]) == 7
    assert len(up["rows"]) == 501
    assert up["grants"] is True
    assert up["next_id_above_rows"] is True
    command.check(migrations.alembic_config(empty_database_url))

    migrations.downgrade(empty_database_url, before, result_keys=TEST_RESULT_KEYS)
    down = run_sync(_audit_rows(empty_database_url))
    assert down["kind"] == "r"
    assert down["partitions"] == []
    assert down["rows"] == up["rows"]
    assert down["grants"] is True
    assert down["next_id_above_rows"] is True

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    again = run_sync(_audit_rows(empty_database_url))
    assert again["kind"] == "p"
    assert again["rows"] == up["rows"]
    assert again["next_id_above_rows"] is True


async def _redefine_the_action_check(url: str) -> None:
    """What the next migration that adds an audit action does, on the partitioned table."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE audit_event DROP CONSTRAINT ck_audit_event_action")
        await conn.execute("ALTER TABLE audit_event ADD CONSTRAINT ck_audit_event_action CHECK (action IN ('read'))")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO audit_event (channel, action, outcome) VALUES ('cli', 'purge', 'ok')")
        await conn.execute("INSERT INTO audit_event (channel, action, outcome) VALUES ('cli', 'read', 'ok')")
    finally:
        await conn.close()


def test_a_later_migration_can_redefine_the_action_check_of_every_partition(empty_database_url):
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    run_sync(_redefine_the_action_check(empty_database_url))
