"""Per-key limits, shared by every replica through PostgreSQL: request rate, running tasks and
monthly budgets.

The rate is paced with GCRA (one timestamp per key in an unlogged table): a key may
spend its whole minute's allowance in a burst, then one request per 60/N seconds.
The running-task cap counts the key's unfinished tasks under a per-key advisory lock
held by the admitting transaction, so concurrent submissions on any replica cannot
overshoot it. A budget is checked against the ledger the tasks' ends write (`app.storage.budgets`):
it stops the next submission once the month's spend reaches it, on every replica; tasks already
admitted run to their end, so a month can overshoot by what those cost.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import asyncpg

from app.domain import BudgetExceeded, Principal, Throttled, TooManyRunningTasks
from app.storage import budgets
from app.storage import limits as storage
from app.storage.database import Database
from app.telemetry import metrics

WINDOW_SECONDS = 60.0


class Limiter:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def throttle(self, principal: Principal) -> None:
        """Count one request against the key's rate limit; `Throttled` when it is spent."""
        limit = principal.rate_limit_per_minute
        if limit <= 0:
            return
        interval = WINDOW_SECONDS / limit
        async with self._db.connection() as conn:
            wait = await storage.take_rate_slot(
                conn, principal.key_id, interval_seconds=interval, tolerance_seconds=WINDOW_SECONDS - interval
            )
        if wait is not None:
            metrics.THROTTLED.add(1, {"limit": "rate"})
            raise Throttled(
                f"this API key may make {limit} requests a minute; retry in {math.ceil(wait)} s",
                retry_after=math.ceil(wait),
            )

    async def check_running_cap(self, conn: asyncpg.Connection, principal: Principal) -> None:
        """Inside the admitting transaction: refuse a new task when the key is at its cap.

        The per-key lock it takes lasts until that transaction ends, so a concurrent admission on
        any replica counts this task too."""
        cap = principal.max_running_tasks
        if cap <= 0:
            return
        await storage.lock_owner_tasks(conn, principal.key_id)
        running = await storage.count_running_tasks(conn, principal.key_id)
        if running >= cap:
            metrics.THROTTLED.add(1, {"limit": "running_tasks"})
            raise TooManyRunningTasks(
                f"this API key has {running} unfinished tasks and may have at most {cap}; retry when one has finished"
            )

    async def check_budget(self, principal: Principal) -> None:
        """Refuse a new task when the key has spent a monthly budget (`BudgetExceeded`, with the
        seconds until the month ends). No round trip for a key without a budget."""
        if not principal.has_budget:
            return
        async with self._db.connection() as conn:
            status = await budgets.budget_status(conn, principal.key_id)
        if status is None or not status.exceeded:
            return
        metrics.THROTTLED.add(1, {"limit": "budget"})
        which = (
            f"{status.monthly_token_budget} tokens"
            if status.monthly_token_budget is not None and status.tokens >= status.monthly_token_budget
            else f"{status.monthly_usd_budget} USD"
        )
        resets = status.resets_at.astimezone(UTC)
        raise BudgetExceeded(
            f"this API key's monthly budget of {which} is spent; it resets at {resets:%Y-%m-%dT%H:%M:%SZ}",
            retry_after=math.ceil((resets - datetime.now(UTC)).total_seconds()),
        )
