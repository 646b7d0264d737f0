"""What operators ask of a running service: is it ready, and its metrics."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import REGISTRY, generate_latest

from app.domain import DatabaseUnavailable, Forbidden, Principal
from app.llm.registry import ProviderRegistry
from app.schemas import ReadinessReport, RetentionPolicy
from app.service.schedule import Scheduler
from app.storage.database import Database
from app.storage.migrations import schema_state


class Health:
    def __init__(
        self, db: Database, schedule: Scheduler, providers: ProviderRegistry, retention: RetentionPolicy
    ) -> None:
        self._db = db
        self._schedule = schedule
        self._providers = providers
        self._retention = retention

    async def readiness(self) -> ReadinessReport:
        """Each check by name: the database answers, is at the head migration, the purge schedule runs."""
        checks = {
            "database": "ok",
            "migrations": "ok",
            "scheduler": "ok" if self._schedule.running else "stopped",
            # The registry refuses a bad configuration at start; this names what it serves.
            "providers": "ok: " + ", ".join(self._providers.names),
        }
        try:
            async with self._db.connection() as conn:
                schema = await schema_state(conn)
        except DatabaseUnavailable:
            checks |= {"database": "unreachable", "migrations": "unknown"}
        else:
            if not schema.at_head:
                checks["migrations"] = schema.describe()
        ready = all(v.startswith("ok") for v in checks.values())
        return ReadinessReport(status="ok" if ready else "unavailable", checks=checks, retention=self._retention)

    @property
    def next_purge_at(self) -> datetime | None:
        """The next run of the in-service purge (PURGE_CRON), if this process schedules one."""
        return self._schedule.next_purge_at

    def metrics_text(self, principal: Principal) -> bytes:
        """The metrics in Prometheus text format, for auditors and admins only.

        The figures are aggregates over every client (task volumes, models, audited reads),
        so a client key may not see them.
        """
        if not principal.sees_every_task:
            raise Forbidden("metrics are for the auditor and admin roles")
        return generate_latest(REGISTRY)
