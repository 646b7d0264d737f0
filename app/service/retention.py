"""The retention purge: expired tasks and old audit events go, in short batches, one purge at a time.

The same `Purger.run` serves the in-process schedule (`app.service.schedule`, PURGE_CRON) and the
`agent-service purge` command for external cron jobs. Every run is recorded as an audit
event with its figures; a run that finds another replica purging skips quietly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import logfire

from app.domain import Actor, AuditOutcome, Channel
from app.schemas import RetentionPolicy
from app.settings import Settings
from app.storage import audit
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
                if dry_run:
                    tasks, events = await storage.count_expired(
                        lock_conn, expired_by=report.expired_by, audit_before=report.audit_before
                    )
                    report.deleted = {"agent_task": tasks, "audit_event": events, "audit_seal": 0}
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
            "retention purge %s: %d tasks, %d audit events (%d seals) in %d batches, %.2f s",
            "(dry run) would delete" if dry_run else "deleted",
            report.deleted["agent_task"],
            report.deleted["audit_event"],
            report.deleted["audit_seal"],
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
        while True:  # audit events: whole seals at a time, oldest first
            async with self._db.connection() as conn:
                sealed = await storage.delete_sealed_audit_events(conn, before=report.audit_before, limit=limit)
            if not sealed.seals:
                break
            report.batches += 1
            report.deleted["audit_event"] += sealed.events
            report.deleted["audit_seal"] += sealed.seals
            report.sealed_through = sealed.last_digest


async def _record_failure(conn: Any, actor: Actor, report: PurgeReport, exc: Exception) -> None:
    detail = report.detail() | {"error": type(exc).__name__}
    try:
        await audit.record_purge(conn, actor, AuditOutcome.ERROR, detail)
    except Exception:  # the database may be what failed; the log line above stands
        log.warning("could not record the failed purge run")
