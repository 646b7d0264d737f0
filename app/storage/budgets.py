"""Monthly budgets: a key's spend in a calendar month, from the ledger `key_usage`.

The ledger is written by the trigger `agent_task_usage_ledger` (migration 6b7c8d9e0f1a) in the
transaction that ends a task, so it is current on every replica the moment a task ends, and
nothing here writes it. A month is UTC and counts tasks by their creation, like `GET /usage`.
"""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg

from app.domain import BudgetStatusRecord
from app.storage.sql import Statement

_THIS_MONTH = "date_trunc('month', now() AT TIME ZONE 'UTC')::date"

# The key's budgets and its spend in :month (NULL: this month), and when that month ends.
BUDGET_STATUS = Statement(
    "budget_status",
    f"""
WITH month AS (SELECT coalesce(:month::date, {_THIS_MONTH}) AS first)
SELECT k.monthly_token_budget, k.monthly_usd_budget, coalesce(u.tokens, 0), coalesce(u.cost_usd, 0),
       ((month.first + interval '1 month')::timestamp AT TIME ZONE 'UTC')
FROM api_key AS k CROSS JOIN month
LEFT JOIN key_usage AS u ON u.owner_id = k.id AND u.month = month.first
WHERE k.id = :owner_id
""",
)


async def budget_status(
    conn: asyncpg.Connection, owner: uuid.UUID, month: date | None = None
) -> BudgetStatusRecord | None:
    """The key's budgets and spend in `month` (its first day; None: this month, by the database's
    clock, which every replica shares); None when no key has that id."""
    row = await BUDGET_STATUS.fetchrow(conn, owner_id=owner, month=month)
    return None if row is None else BudgetStatusRecord(*row)
