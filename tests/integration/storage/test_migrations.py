"""Migrations: upgrade from empty, downgrade to base, upgrade again; models and migrations agree;
the offline SQL can be reviewed; a migrated database knows it is at the head."""

from __future__ import annotations

import uuid

import asyncpg
from alembic import command

from app.storage import migrations
from tests.support.postgres import run_sync

TABLES = {"agent_task", "api_key", "audit_event", "audit_seal", "legal_hold", "rate_limit"}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _revision(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]
    finally:
        await conn.close()


def test_upgrade_downgrade_upgrade(empty_database_url):
    migrations.upgrade(empty_database_url)
    assert run_sync(_tables(empty_database_url)) == TABLES | {"alembic_version"}
    assert run_sync(_revision(empty_database_url)) == migrations.head_revision()

    migrations.downgrade(empty_database_url, "base")
    assert run_sync(_tables(empty_database_url)) == {"alembic_version"}
    assert run_sync(_revision(empty_database_url)) is None

    migrations.upgrade(empty_database_url)
    assert run_sync(_tables(empty_database_url)) == TABLES | {"alembic_version"}


async def _seed_holds(url: str) -> None:
    """A key, a task, a hold of each kind (one released), and the audit rows the holds brought."""
    conn = await asyncpg.connect(url)
    try:
        key = uuid.uuid4()
        await conn.execute(
            "INSERT INTO api_key (id, name, role, key_hash, key_prefix) VALUES ($1, 'k', 'client', $2, 'ask_x')",
            key,
            uuid.uuid4().hex * 2,
        )
        task = await conn.fetchval(
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at)"
            " VALUES (gen_random_uuid(), $1, 'succeeded', 'offline:echo', 'ab', 'k', now()) RETURNING id",
            key,
        )
        await conn.execute(
            "INSERT INTO legal_hold (id, reference, task_id, owner_key_id, released_at) VALUES"
            " (gen_random_uuid(), 'CASE-1', $1, NULL, NULL), (gen_random_uuid(), 'CASE-2', NULL, $2, now())",
            task,
            key,
        )
        await conn.execute(
            "INSERT INTO audit_event (channel, action, task_id, outcome) VALUES"
            " ('cli', 'hold_place', $1, 'ok'), ('rest', 'delete', $1, 'held'), ('cli', 'hold_release', NULL, 'ok')",
            task,
        )
    finally:
        await conn.close()


def test_the_legal_holds_migration_goes_down_and_up_again_with_holds_in_the_tables(empty_database_url):
    migrations.upgrade(empty_database_url)
    run_sync(_seed_holds(empty_database_url))

    migrations.downgrade(empty_database_url, "f7a8b9c0d1e2")
    assert "legal_hold" not in run_sync(_tables(empty_database_url))

    migrations.upgrade(empty_database_url)
    run_sync(_seed_holds(empty_database_url))  # the new values are allowed again
    assert "legal_hold" in run_sync(_tables(empty_database_url))


async def _seed_seal(url: str) -> int:
    """An export's audit event and a seal over it; the event's transaction id, from the column's default."""
    conn = await asyncpg.connect(url)
    try:
        event_id, xact = await conn.fetchrow(
            "INSERT INTO audit_event (channel, action, outcome) VALUES ('cli', 'audit_export', 'ok') RETURNING id, xact"
        )
        await conn.execute(
            "INSERT INTO audit_seal (sealed_at, xact_watermark, first_event_id, last_event_id, event_count,"
            " first_occurred_at, last_occurred_at, event_ids, event_digests, events_digest, previous_digest,"
            " digest, signature, key_id) VALUES (now(), $1 + 1, $2, $2, 1, now(), now(), ARRAY[$2::bigint],"
            " ARRAY['d'], 'e', repeat('0', 64), 'g', 's', 'k')",
            xact,
            event_id,
        )
        return int(xact)
    finally:
        await conn.close()


def test_the_seals_migration_goes_down_and_up_again_with_seals_and_exports_in_the_tables(empty_database_url):
    migrations.upgrade(empty_database_url)
    assert run_sync(_seed_seal(empty_database_url)) > 0  # the default gives each event its transaction id

    migrations.downgrade(empty_database_url, "a9b8c7d6e5f4")
    assert "audit_seal" not in run_sync(_tables(empty_database_url))

    migrations.upgrade(empty_database_url)
    assert run_sync(_seed_seal(empty_database_url)) > 0


def test_models_and_migrations_agree(empty_database_url):
    """What `alembic check` says in CI: autogenerate finds nothing to add."""
    migrations.upgrade(empty_database_url)
    command.check(migrations.alembic_config(empty_database_url))


def test_offline_sql_can_be_reviewed_without_a_database(capsys):
    command.upgrade(migrations.alembic_config("postgresql://nobody@127.0.0.1:1/none"), "head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE agent_task" in sql
    assert "CREATE TABLE audit_event" in sql


async def test_a_migrated_database_is_at_the_head(db):
    from app.storage.migrations import head_revision, schema_state

    state = await schema_state(db)
    assert state.at_head
    assert state.revision == head_revision()
