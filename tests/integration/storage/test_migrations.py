"""Migrations: upgrade from empty, downgrade to base, upgrade again; models and migrations agree;
the offline SQL can be reviewed; a migrated database knows it is at the head."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from alembic import command

from app.access.encryption import OUTPUT, ResultCipher, StaticKeyProvider, parse_keys
from app.storage import migrations
from tests.support.postgres import run_sync
from tests.support.schema import a_key, revision_of, table_names
from tests.support.settings import TEST_RESULT_KEYS

TABLES = {
    "agent_task",
    "api_key",
    "audit_event",
    "audit_seal",
    "console_session",
    "key_usage",
    "legal_hold",
    "rate_limit",
    "webhook_delivery",
}


def test_upgrade_downgrade_upgrade(empty_database_url):
    migrations.upgrade(empty_database_url)
    assert run_sync(table_names(empty_database_url)) == TABLES | {"alembic_version"}
    assert run_sync(revision_of(empty_database_url)) == migrations.head_revision()

    migrations.downgrade(empty_database_url, "base")
    assert run_sync(table_names(empty_database_url)) == {"alembic_version"}
    assert run_sync(revision_of(empty_database_url)) is None

    migrations.upgrade(empty_database_url)
    assert run_sync(table_names(empty_database_url)) == TABLES | {"alembic_version"}


async def _seed_holds(url: str) -> None:
    """A key, a task, a hold of each kind (one released), and the audit rows the holds brought."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn)
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
    assert "legal_hold" not in run_sync(table_names(empty_database_url))

    migrations.upgrade(empty_database_url)
    run_sync(_seed_holds(empty_database_url))  # the new values are allowed again
    assert "legal_hold" in run_sync(table_names(empty_database_url))


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
    assert "audit_seal" not in run_sync(table_names(empty_database_url))

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


PLAIN_ANSWER = "a plain answer from before sealing"


async def _plain_task(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A task as it was stored before results were sealed: output text, context jsonb."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn)
        task = await conn.fetchval(
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at,"
            " output, context) VALUES (gen_random_uuid(), $1, 'succeeded', 'offline:echo', 'ab', 'k', now(),"
            " $2, '{\"ticket\": 7}'::jsonb) RETURNING id",
            key,
            PLAIN_ANSWER,
        )
        return task, key
    finally:
        await conn.close()


async def _stored(url: str, task: uuid.UUID) -> tuple[object, object]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT output, context::text FROM agent_task WHERE id = $1", task)
        assert row is not None
        return row[0], row[1]
    finally:
        await conn.close()


def test_the_sealing_migration_seals_stored_answers_and_opens_them_again_on_the_way_down(empty_database_url):
    before_sealing = "a9b8c7d6e5f4"
    migrations.upgrade(empty_database_url, before_sealing)
    task, owner = run_sync(_plain_task(empty_database_url))
    with pytest.raises(RuntimeError, match="RESULT_ENCRYPTION_KEYS is needed to seal"):
        migrations.upgrade(empty_database_url, "b1c2d3e4f5a6")  # rows to seal, and no key: refused
    assert run_sync(revision_of(empty_database_url)) == before_sealing

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    output, context = run_sync(_stored(empty_database_url, task))
    assert isinstance(output, bytes)
    assert PLAIN_ANSWER.encode() not in output
    assert "ticket" not in str(context)
    cipher = ResultCipher(StaticKeyProvider(parse_keys(TEST_RESULT_KEYS)))
    assert cipher.open(output, task_id=task, owner_id=owner, field=OUTPUT) == PLAIN_ANSWER.encode()

    migrations.downgrade(empty_database_url, before_sealing, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_stored(empty_database_url, task)) == (PLAIN_ANSWER, '{"ticket": 7}')
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert isinstance(run_sync(_stored(empty_database_url, task))[0], bytes)


async def _policy_columns(url: str) -> dict[str, object]:
    """The data-policy columns of the one key and task `_seed_holds` made (None: no such column)."""
    conn = await asyncpg.connect(url)
    try:
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name IN ('agent_task', 'api_key')"
            )
        }
        if "output_stored" not in columns:
            return {"rows": await conn.fetchval("SELECT count(*) FROM agent_task")}
        return dict(
            await conn.fetchrow(
                "SELECT t.output_stored, k.store_output, k.max_retention_days, count(*) OVER () AS rows"
                " FROM agent_task t JOIN api_key k ON k.id = t.owner_id"
            )
        )
    finally:
        await conn.close()


async def _refuses_bad_policies(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for column, value in (("store_output", "sometimes"), ("max_retention_days", 0)):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(f"UPDATE api_key SET {column} = $1", value)
    finally:
        await conn.close()


def test_the_data_policy_migration_keeps_rows_as_stored_and_allowed_and_goes_down_and_up(empty_database_url):
    before_policy = "c2d3e4f5a6b7"
    migrations.upgrade(empty_database_url, before_policy, result_keys=TEST_RESULT_KEYS)
    run_sync(_seed_holds(empty_database_url))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_policy_columns(empty_database_url)) == {
        "output_stored": True,
        "store_output": "allowed",
        "max_retention_days": None,
        "rows": 1,
    }
    run_sync(_refuses_bad_policies(empty_database_url))

    migrations.downgrade(empty_database_url, before_policy, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_policy_columns(empty_database_url)) == {"rows": 1}
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_policy_columns(empty_database_url))["output_stored"] is True


async def _cancelled_task(url: str) -> str:
    """A key, a task that was cancelled, and its cancel in the audit log; the task's status now."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn)
        task = await conn.fetchval(
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at,"
            " error_code) VALUES (gen_random_uuid(), $1, 'cancelled', 'offline:echo', 'ab', 'k', now(),"
            " 'cancelled') RETURNING id",
            key,
        )
        await conn.execute(
            "INSERT INTO audit_event (channel, action, task_id, outcome) VALUES ('rest', 'cancel', $1, 'ok'),"
            " ('rest', 'cancel', $1, 'finished')",
            task,
        )
        return str(await conn.fetchval("SELECT string_agg(status, ',' ORDER BY status) FROM agent_task"))
    finally:
        await conn.close()


async def _statuses_and_cancels(url: str) -> tuple[str, int]:
    conn = await asyncpg.connect(url)
    try:
        statuses = await conn.fetchval("SELECT string_agg(status, ',' ORDER BY status) FROM agent_task")
        cancels = await conn.fetchval("SELECT count(*) FROM audit_event WHERE action::text = 'cancel'")
        return str(statuses), int(cancels)
    finally:
        await conn.close()


def test_the_cancel_migration_turns_cancelled_into_failed_on_the_way_down_and_allows_it_again(empty_database_url):
    before_cancel = "d4e5f6a7b8c9"
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_cancelled_task(empty_database_url)) == "cancelled"

    migrations.downgrade(empty_database_url, before_cancel, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_statuses_and_cancels(empty_database_url)) == ("failed", 0)

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_cancelled_task(empty_database_url)) == "cancelled,failed"
    assert run_sync(_statuses_and_cancels(empty_database_url)) == ("cancelled,failed", 2)
