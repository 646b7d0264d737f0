"""Per-key limits, shared by every replica through PostgreSQL: request rate and running tasks.

The rate is paced with GCRA (one timestamp per key in an unlogged table): a key may
spend its whole minute's allowance in a burst, then one request per 60/N seconds.
The running-task cap counts the key's unfinished tasks under a per-key advisory lock
held by the admitting transaction, so concurrent submissions on any replica cannot
overshoot it.
"""

from __future__ import annotations

import math

import asyncpg

from app.domain import Principal, Throttled, TooManyRunningTasks
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
