"""The retention purge: expired tasks go in short batches, old audit events as whole days (a partition
dropped with the seals that cover it), one purge at a time.

The same `Purger.run` serves the in-process schedule (`app.service.schedule`, PURGE_CRON) and the
`agent-service purge` command for external cron jobs. Every run is recorded as an audit
event with its figures; a run that finds another replica purging skips quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import logfire

from app.domain import Actor, AuditOutcome, Channel
from app.schemas import RetentionPolicy
from app.settings import Settings
from app.storage import audit
from app.storage import partitions as partition_sql
from app.storage import retention as storage
from app.storage.database import Database
from app.telemetry import metrics

log = logging.getLogger(__name__)


def retention_policy(settings: Settings) -> RetentionPolicy:
    """The effective policy, as operators see it at /retention and /readyz."""
    return RetentionPolicy(
        result_retention_days=settings.result_retention_days,
        failed_result_retention_days=settings.failed_result_retention_days,
        audit_retention_days=settings.audit_retention_days,
        purge_cron=settings.purge_cron if settings.purge_enabled else None,
    )


@dataclass(slots=True)
class PurgeReport:
    """What one purge run did (or, dry, would do)."""

    dry_run: bool
    skipped: bool = False  # another process held the purge lock
    expired_by: datetime | None = None
    audit_before: datetime | None = None
    deleted: dict[str, int] = field(default_factory=lambda: {"agent_task": 0, "audit_event": 0, "audit_seal": 0})
    batches: int = 0
    held_kept: int = 0  # expired tasks kept for a legal hold
    sealed_through: str | None = None  # the digest of the newest audit seal deleted: the kept chain follows it
    partitions_dropped: int = 0  # whole days of audit events dropped (or, dry, that would be)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float = 0.0

    def detail(self) -> dict[str, Any]:
        """The audit event's `detail`: figures and times only."""
        return {
            "dry_run": self.dry_run,
            "deleted": dict(self.deleted),
            "batches": self.batches,
            "held_kept": self.held_kept,
            "sealed_through": self.sealed_through,
            "partitions_dropped": self.partitions_dropped,
            "expired_by": _iso(self.expired_by),
            "audit_before": _iso(self.audit_before),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": round(self.seconds, 3),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


class Purger:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._partitions: list[partition_sql.Partition] = []

    async def run(self, *, dry_run: bool = False, channel: Channel = Channel.SYSTEM) -> PurgeReport:
        """One purge: everything expired at the moment it starts, in batches of PURGE_BATCH_SIZE.

        The cut-off is fixed when the run starts: a row that expires while the run goes on
        is left whole for the next run, so nothing is ever caught half-way.
        """
        with logfire.span("retention purge", dry_run=dry_run, channel=channel.value) as span:
            try:
                report = await self._run(dry_run, channel)
            except Exception:
                metrics.PURGE_RUNS.add(1, {"outcome": "error"})
                raise
            outcome = "skipped" if report.skipped else ("dry_run" if dry_run else "ok")
            span.set_attributes(
                {"outcome": outcome, "batches": report.batches, "seconds": round(report.seconds, 3)}
                | {f"deleted.{table}": count for table, count in report.deleted.items()}
            )
            metrics.PURGE_RUNS.add(1, {"outcome": outcome})
            if not dry_run:
                for table, count in report.deleted.items():
                    metrics.PURGE_ROWS.add(count, {"table": table})
            return report

    async def _run(self, dry_run: bool, channel: Channel) -> PurgeReport:
        report = PurgeReport(dry_run=dry_run)
        started = time.monotonic()
        actor = Actor(None, None, channel)
        async with self._db.dedicated() as lock_conn:
            if not await storage.try_purge_lock(lock_conn):
                log.debug("retention purge skipped: another process is purging")  # routine with replicas
                report.skipped = True
                return report
            try:
                report.started_at = await storage.database_now(lock_conn)
                report.expired_by = report.started_at
                report.audit_before = report.started_at - timedelta(days=self._settings.audit_retention_days)
                await self.make_days_ahead()
                if dry_run:
                    tasks, events = await storage.count_expired(
                        lock_conn, expired_by=report.expired_by, audit_before=report.audit_before
                    )
                    report.deleted = {"agent_task": tasks, "audit_event": events, "audit_seal": 0}
                    if await self._by_partition(report):
                        report.deleted["audit_event"] = 0
                        await self._drop_days(report, dry_run=True)
                else:
                    await self._delete_in_batches(report)
                report.held_kept = await storage.count_held_expired(lock_conn, expired_by=report.expired_by)
                report.finished_at = await storage.database_now(lock_conn)
                report.seconds = time.monotonic() - started
                await audit.record_purge(lock_conn, actor, AuditOutcome.OK, report.detail())
            except Exception as exc:
                report.seconds = time.monotonic() - started
                log.error("retention purge failed after %.1f s: %s", report.seconds, type(exc).__name__)
                await _record_failure(lock_conn, actor, report, exc)
                raise
            finally:
                await storage.release_purge_lock(lock_conn)
        # INFO only when there was something to delete: an idle service's hourly purge says nothing.
        log.log(
            logging.INFO if dry_run or any(report.deleted.values()) else logging.DEBUG,
            "retention purge %s: %d tasks, %d audit events (%d seals, %d days dropped) in %d batches, %.2f s",
            "(dry run) would delete" if dry_run else "deleted",
            report.deleted["agent_task"],
            report.deleted["audit_event"],
            report.deleted["audit_seal"],
            report.partitions_dropped,
            report.batches,
            report.seconds,
        )
        return report

    async def _delete_in_batches(self, report: PurgeReport) -> None:
        """Each batch is its own short transaction, so readers and writers never wait long."""
        assert report.expired_by is not None
        assert report.audit_before is not None
        limit = self._settings.purge_batch_size
        resume_from = None
        while True:
            async with self._db.connection() as conn:
                batch = await storage.delete_expired_tasks(
                    conn, expired_by=report.expired_by, limit=limit, resume_from=resume_from
                )
            report.batches += 1
            report.deleted["agent_task"] += batch.deleted
            resume_from = batch.resume_from
            if batch.deleted < limit:
                break
        if await self._by_partition(report):
            await self._drop_days(report)
            return
        while True:  # audit events: whole seals at a time, oldest first
            async with self._db.connection() as conn:
                sealed = await storage.delete_sealed_audit_events(conn, before=report.audit_before, limit=limit)
            if not sealed.seals:
                break
            report.batches += 1
            report.deleted["audit_event"] += sealed.events
            report.deleted["audit_seal"] += sealed.seals
            report.sealed_through = sealed.last_digest

    async def make_days_ahead(self) -> None:
        """Make the audit partitions ahead of today (app.storage.partitions). The schedule runs it at
        start-up and every PARTITION_MINUTES; the purge runs it too, so `agent-service purge` from cron
        keeps the days coming as well."""
        try:
            async with self._db.dedicated() as conn:
                await partition_sql.ensure_partitions(conn)
        except asyncpg.LockNotAvailableError:
            log.warning("audit partitions: audit_event was busy; the days ahead are made at the next round")
        except Exception as exc:  # the database may be down: the next round tries again, a week is ready
            log.warning("audit partitions could not be made: %s", type(exc).__name__)

    async def _by_partition(self, report: PurgeReport) -> bool:
        """Whether old audit events go as whole days: yes once `audit_event` is partitioned and its
        history partition (the table from before partitioning) has passed the retention as a whole.
        Until then that partition is the edge one, purged in batches of whole seals as before."""
        async with self._db.connection() as conn:
            self._partitions = await partition_sql.list_partitions(conn)
        if not self._partitions:
            return False
        oldest, before = self._partitions[0], report.audit_before
        assert before is not None
        return not (oldest.lower is None and (oldest.upper is None or oldest.upper > before))

    async def _drop_days(self, report: PurgeReport, *, dry_run: bool = False) -> None:
        """Oldest first, every partition wholly past the retention whose events are all sealed; the
        first one still holding an unsealed event stops the run (the chain goes oldest seal first)."""
        assert report.audit_before is not None
        counted = (0, 0)  # a dry run deletes nothing: each day's seals include the days' before it
        for partition in self._partitions:
            if partition.upper is None or partition.upper > report.audit_before:
                break
            dropped = await self._drop_day(partition, report.audit_before, dry_run)
            if dropped is None:
                break
            report.batches += 0 if dry_run else 1
            report.partitions_dropped += 1
            report.deleted["audit_event"] += dropped.events - counted[0]
            report.deleted["audit_seal"] += 0 if dry_run else dropped.seals
            if dry_run:
                counted = (dropped.events, dropped.seals)
            if not dry_run and dropped.seals:
                report.sealed_through = dropped.last_digest

    async def _drop_day(
        self, partition: partition_sql.Partition, before: datetime, dry_run: bool
    ) -> storage.DroppedDay | None:
        assert partition.upper is not None
        for attempt in range(1, DROP_ATTEMPTS + 1):
            try:
                async with self._db.connection() as conn:
                    dropped = await storage.drop_sealed_partition(
                        conn, partition=partition.name, bound=partition.upper, before=before, dry_run=dry_run
                    )
            except asyncpg.LockNotAvailableError:
                log.info("audit partition %s busy (attempt %d of %d)", partition.name, attempt, DROP_ATTEMPTS)
                await asyncio.sleep(0.2 * attempt)
                continue
            if dropped is None:
                log.info("audit partition %s kept: it still holds events awaiting a seal", partition.name)
            return dropped
        log.warning("audit partition %s not dropped: audit_event stayed busy; next purge tries again", partition.name)
        return None


DROP_ATTEMPTS = 3


async def _record_failure(conn: Any, actor: Actor, report: PurgeReport, exc: Exception) -> None:
    detail = report.detail() | {"error": type(exc).__name__}
    try:
        await audit.record_purge(conn, actor, AuditOutcome.ERROR, detail)
    except Exception:  # the database may be what failed; the log line above stands
        log.warning("could not record the failed purge run")
