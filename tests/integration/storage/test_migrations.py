"""Migrations: upgrade from empty, downgrade to base, upgrade again; models and migrations agree;
the offline SQL can be reviewed; a migrated database knows it is at the head."""

from __future__ import annotations

import asyncpg
from alembic import command

from app.storage import migrations
from tests.support.postgres import run_sync

TABLES = {"agent_task", "api_key", "audit_event", "rate_limit"}


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
