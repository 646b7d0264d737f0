"""The migrations of issues 14 to 16, each down and up again with rows in their tables: webhooks,
the console, cost, structured output, and the key and session audit."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from app.storage import migrations
from tests.support.postgres import run_sync
from tests.support.schema import a_key, columns_of, revision_of, table_names
from tests.support.settings import TEST_RESULT_KEYS


async def _end_a_task_with_a_webhook(url: str) -> tuple[int, int, int]:
    """A task with a webhook runs, then ends in plain SQL: the outbox trigger writes its delivery
    (once, however often the status is written again). Returns (deliveries, tasks, webhook reads)."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn)
        task = await conn.fetchval(
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at,"
            " webhook_url) VALUES (gen_random_uuid(), $1, 'running', 'offline:echo', 'ab', 'k', now(),"
            " 'https://example.com/hook') RETURNING id",
            key,
        )
        assert await conn.fetchval("SELECT count(*) FROM webhook_delivery WHERE task_id = $1", task) == 0
        await conn.execute("UPDATE agent_task SET status = 'succeeded' WHERE id = $1", task)
        await conn.execute(
            "UPDATE agent_task SET status = 'failed' WHERE id = $1", task
        )  # not from running: no new one
        await conn.execute(
            "INSERT INTO audit_event (channel, action, task_id, outcome) VALUES ('rest', 'webhook_read', $1, 'ok')",
            task,
        )
        row = await conn.fetchrow("SELECT event_type, message_id, state FROM webhook_delivery WHERE task_id = $1", task)
        assert tuple(row) == ("agent_task.succeeded", "msg_" + task.hex, "pending")
        return (
            await conn.fetchval("SELECT count(*) FROM webhook_delivery"),
            await conn.fetchval("SELECT count(*) FROM agent_task"),
            await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'webhook_read'"),
        )
    finally:
        await conn.close()


def test_the_webhooks_migration_goes_down_and_up_again_with_deliveries_in_the_outbox(empty_database_url):
    before_webhooks = "e5f6a7b8c9d0"
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_end_a_task_with_a_webhook(empty_database_url)) == (1, 1, 1)

    migrations.downgrade(empty_database_url, before_webhooks, result_keys=TEST_RESULT_KEYS)
    assert "webhook_delivery" not in run_sync(table_names(empty_database_url))
    assert "webhook_url" not in run_sync(columns_of(empty_database_url, "agent_task"))
    assert not {c for c in run_sync(columns_of(empty_database_url, "api_key")) if c.startswith("webhook")}

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    # The task outlived the downgrade; the webhook read's audit event did not (its action was gone).
    assert run_sync(_end_a_task_with_a_webhook(empty_database_url)) == (1, 2, 1)


async def _a_priced_task_and_a_usage_read(url: str) -> tuple[int, int]:
    """A task with a cost, and an audited usage read: (priced tasks, usage reads) afterwards."""
    conn = await asyncpg.connect(url)
    try:
        key = await conn.fetchval("SELECT id FROM api_key LIMIT 1")
        if key is None:
            key = await a_key(conn)
        await conn.execute(
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at,"
            " total_tokens, cost_usd) VALUES (gen_random_uuid(), $1, 'succeeded', 'openai:gpt-4o-mini', 'ab', 'k',"
            " now() + interval '1 day', 9, 0.000000123456)",
            key,
        )
        await conn.execute(
            "INSERT INTO audit_event (channel, action, outcome) VALUES ('rest', 'usage_read', 'ok')",
        )
        return (
            await conn.fetchval("SELECT count(*) FROM agent_task WHERE cost_usd = 0.000000123456"),
            await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'usage_read'"),
        )
    finally:
        await conn.close()


async def _sign_in_and_read_over_the_console(url: str) -> tuple[int, int]:
    """A console session and an audit event of channel `console`, in plain SQL. Returns (sessions,
    console events)."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn, "auditor")
        await conn.execute(
            "INSERT INTO console_session (id, key_id, expires_at) VALUES ($1, $2, now() + interval '1 hour')",
            uuid.uuid4().hex * 2,
            key,
        )
        await conn.execute(
            "INSERT INTO audit_event (actor_id, channel, action, task_id, outcome)"
            " VALUES ($1, 'console', 'read', gen_random_uuid(), 'ok')",
            key,
        )
        return (
            await conn.fetchval("SELECT count(*) FROM console_session"),
            await conn.fetchval("SELECT count(*) FROM audit_event WHERE channel = 'console'"),
        )
    finally:
        await conn.close()


def test_the_console_migration_goes_down_and_up_again_with_sessions_and_console_events(empty_database_url):
    before_console = "0b1c2d3e4f5a"
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_sign_in_and_read_over_the_console(empty_database_url)) == (1, 1)

    migrations.downgrade(empty_database_url, before_console, result_keys=TEST_RESULT_KEYS)
    assert "console_session" not in run_sync(table_names(empty_database_url))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    # The sessions and the console's audit events went with the downgrade; both work again.
    assert run_sync(_sign_in_and_read_over_the_console(empty_database_url)) == (1, 1)


def test_the_cost_migration_goes_down_and_up_again_with_priced_tasks(empty_database_url):
    before_cost = "1c2d3e4f5a6b"  # the console's
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_a_priced_task_and_a_usage_read(empty_database_url)) == (1, 1)

    migrations.downgrade(empty_database_url, before_cost, result_keys=TEST_RESULT_KEYS)
    assert "cost_usd" not in run_sync(columns_of(empty_database_url, "agent_task"))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    # The task outlived the downgrade (its cost did not); the usage read's audit event did not.
    assert run_sync(_a_priced_task_and_a_usage_read(empty_database_url)) == (1, 1)


async def _count(url: str, query: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def _key_and_session_events(url: str) -> tuple[int, int]:
    """An admin's key events and console sign-ins (one refused, with no actor), in plain SQL.
    Returns (the new actions' events, every audit event)."""
    conn = await asyncpg.connect(url)
    try:
        admin = uuid.uuid4()
        await conn.execute(
            "INSERT INTO audit_event (actor_id, actor_role, channel, action, outcome, detail) VALUES"
            " ($1, 'admin', 'console', 'key_create', 'ok', '{\"key_id\": \"k\"}'),"
            " ($1, 'admin', 'console', 'key_limits', 'ok', NULL),"
            " ($1, 'admin', 'console', 'key_revoke', 'ok', NULL),"
            " ($1, 'admin', 'console', 'sign_in', 'ok', NULL),"
            " (NULL, NULL, 'console', 'sign_in', 'denied', NULL),"
            " ($1, 'admin', 'console', 'sign_out', 'ok', NULL),"
            " ($1, 'admin', 'console', 'list', 'ok', NULL)",
            admin,
        )
        return (
            await conn.fetchval(
                "SELECT count(*) FROM audit_event"
                " WHERE action IN ('key_create', 'key_revoke', 'key_limits', 'sign_in', 'sign_out')"
            ),
            await conn.fetchval("SELECT count(*) FROM audit_event"),
        )
    finally:
        await conn.close()


async def _a_structured_task(url: str) -> tuple[int, int]:
    """A structured task next to a plain one, in plain SQL: (tasks, structured tasks) afterwards.
    The column refuses a kind it does not know."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn)
        for kind in ("json_schema", None):
            await conn.execute(
                "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at,"
                " response_format) VALUES (gen_random_uuid(), $1, 'succeeded', 'openai:gpt-4o-mini', 'ab', 'k',"
                " now() + interval '1 day', $2)",
                key,
                kind,
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE agent_task SET response_format = 'yaml'")
        return (
            await conn.fetchval("SELECT count(*) FROM agent_task"),
            await conn.fetchval("SELECT count(*) FROM agent_task WHERE response_format = 'json_schema'"),
        )
    finally:
        await conn.close()


def test_the_response_format_migration_goes_down_and_up_again_with_structured_tasks(empty_database_url):
    before_structured = "6b7c8d9e0f1a"  # the budgets'
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_a_structured_task(empty_database_url)) == (2, 1)

    migrations.downgrade(empty_database_url, before_structured, result_keys=TEST_RESULT_KEYS)
    assert "response_format" not in run_sync(columns_of(empty_database_url, "agent_task"))
    assert run_sync(revision_of(empty_database_url)) == before_structured

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    # The tasks outlived the downgrade; their kind did not (they read as plain text): two more, one structured.
    assert run_sync(_a_structured_task(empty_database_url)) == (4, 1)


def test_the_key_and_session_audit_migration_goes_down_and_up_again_with_its_events(empty_database_url):
    before = "4f5a6b7c8d9e"  # the audit partitions' (the head before this one)
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_key_and_session_events(empty_database_url)) == (6, 7)

    migrations.downgrade(empty_database_url, before, result_keys=TEST_RESULT_KEYS)
    # The new actions' events went with the downgrade (the `list` stayed), and are refused again.
    assert run_sync(_count(empty_database_url, "SELECT count(*) FROM audit_event")) == 1
    with pytest.raises(asyncpg.CheckViolationError):
        run_sync(_key_and_session_events(empty_database_url))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_key_and_session_events(empty_database_url)) == (6, 8)
