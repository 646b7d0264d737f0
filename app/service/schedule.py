"""Jobs inside the service, on its event loop (APScheduler): the retention purge, audit seals and task leases."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from app.domain import Channel
from app.service.retention import Purger
from app.service.runner import TaskRunner
from app.service.trail import AuditTrail
from app.settings import Settings

log = logging.getLogger(__name__)

PURGE_JOB_ID = "retention-purge"
HEARTBEAT_JOB_ID = "lease-heartbeat"
SWEEP_JOB_ID = "lease-sweep"
SEAL_JOB_ID = "audit-seal"
PARTITION_JOB_ID = "audit-partitions"
PARTITION_MINUTES = 10  # a catalog look-up when nothing is due; days are made a week ahead


class Scheduler:
    """The purge on PURGE_CRON (unless PURGE_ENABLED is false), the audit seal every AUDIT_SEAL_SECONDS,
    the lease heartbeat and the lease sweep."""

    def __init__(self, settings: Settings, purger: Purger, runner: TaskRunner, trail: AuditTrail) -> None:
        self._purger = purger
        self._trail = trail
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        if settings.purge_enabled:
            self.scheduler.add_job(
                self._purge,
                CronTrigger.from_crontab(settings.purge_cron, timezone=UTC),
                id=PURGE_JOB_ID,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=300,
            )
        self.scheduler.add_job(
            self._seal,
            IntervalTrigger(seconds=settings.audit_seal_seconds),
            id=SEAL_JOB_ID,
            max_instances=1,
            coalesce=True,
        )
        # (At start-up too, but in `Components.start`, before the first request: see there.)
        self.scheduler.add_job(
            purger.make_days_ahead,
            IntervalTrigger(minutes=PARTITION_MINUTES),
            id=PARTITION_JOB_ID,
            max_instances=1,
            coalesce=True,
        )
        lease = settings.task_lease_seconds
        self.scheduler.add_job(
            runner.heartbeat, IntervalTrigger(seconds=lease / 3), id=HEARTBEAT_JOB_ID, max_instances=1, coalesce=True
        )
        # At start-up too: tasks a crashed predecessor left behind are settled at once.
        self.scheduler.add_job(
            runner.sweep,
            IntervalTrigger(seconds=lease),
            id=SWEEP_JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )

    async def _purge(self) -> None:
        try:
            await self._purger.run(channel=Channel.SYSTEM)
        except Exception as exc:  # logged and audited in Purger.run; the schedule goes on
            log.debug("scheduled purge ended with %s", type(exc).__name__)

    async def _seal(self) -> None:
        try:
            await self._trail.seal()
        except Exception as exc:  # the next interval tries again; what is unsealed stays for it
            log.warning("audit seal failed: %s", type(exc).__name__)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    @property
    def next_purge_at(self) -> datetime | None:
        """When the scheduled purge runs next (UTC); None when PURGE_ENABLED is false or the
        schedule is not running (an external cron job then purges)."""
        job = self.scheduler.get_job(PURGE_JOB_ID) if self.scheduler.running else None
        when: datetime | None = None if job is None else job.next_run_time
        return when
