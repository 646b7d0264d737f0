"""The budgets migration (6b7c8d9e0f1a): the ledger counts provider calls as tasks end, is
filled from the live tasks on the way up, and goes down and up again with rows in the tables."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from app.storage import migrations
from tests.support.postgres import run_sync
from tests.support.schema import a_key
from tests.support.settings import TEST_RESULT_KEYS

BEFORE_BUDGETS = "2d3e4f5a6b7c"  # the cost migration's


async def _a_key_and_its_tasks(url: str) -> uuid.UUID:
    """A key with budgets (where the columns exist) and three tasks of this month: one that ends
    with usage, one cache hit (no provider call) and one still running."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn)
        insert = (
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at,"
            " cached, total_tokens, cost_usd) VALUES (gen_random_uuid(), $1, $2, 'openai:gpt-4o-mini', 'ab', 'k',"
            " now() + interval '1 day', $3, $4, $5) RETURNING id"
        )
        ended = await conn.fetchval(insert, key, "running", False, None, None)
        await conn.fetchval(insert, key, "succeeded", True, 40, Decimal(0))
        await conn.fetchval(insert, key, "running", False, None, None)
        await conn.execute(
            "UPDATE agent_task SET status = 'succeeded', total_tokens = 40, cost_usd = 0.00125 WHERE id = $1", ended
        )
        return key
    finally:
        await conn.close()


async def _ledger(url: str, key: uuid.UUID) -> tuple[int, int, Decimal] | None:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT tasks, tokens, cost_usd FROM key_usage WHERE owner_id = $1", key)
        return None if row is None else (row["tasks"], row["tokens"], row["cost_usd"])
    finally:
        await conn.close()


async def _has_budget_columns(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'api_key'"
                " AND column_name IN ('monthly_token_budget', 'monthly_usd_budget')"
            )
        )
    finally:
        await conn.close()


def test_the_ledger_counts_a_task_that_ends_with_usage_and_not_a_cache_hit(empty_database_url):
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    key = run_sync(_a_key_and_its_tasks(empty_database_url))
    assert run_sync(_ledger(empty_database_url, key)) == (1, 40, Decimal("0.00125"))


def test_the_budgets_migration_goes_down_and_up_again_and_refills_the_ledger_from_the_live_tasks(
    empty_database_url,
):
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    key = run_sync(_a_key_and_its_tasks(empty_database_url))

    migrations.downgrade(empty_database_url, BEFORE_BUDGETS, result_keys=TEST_RESULT_KEYS)
    assert not run_sync(_has_budget_columns(empty_database_url))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    assert run_sync(_has_budget_columns(empty_database_url))
    # The tasks outlived the downgrade; the ledger is refilled from them (the cache hit still not counted).
    assert run_sync(_ledger(empty_database_url, key)) == (1, 40, Decimal("0.00125"))
