"""The operations REST and MCP expose, written once: authenticate, run, read, list, erase, audit.

Both faces call these methods with the caller's principal and their channel, so they behave
and are audited identically. Nothing here knows about HTTP. The parts these operations use
are built by `app.service.wiring`; the faces see only this class.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.access.encryption import ResultVault
from app.access.keys import KeyStore
from app.access.limits import Limiter
from app.access.sessions import ConsoleSessions
from app.domain import (
    Actor,
    AlreadyFinished,
    AuditOutcome,
    Channel,
    Forbidden,
    InvalidInput,
    NotFound,
    Principal,
    Role,
    TaskRecord,
    UnderLegalHold,
)
from app.llm.registry import ProviderRegistry
from app.schemas import (
    AgentResult,
    AgentResultPage,
    AgentResultSummary,
    AgentTask,
    ReadinessReport,
    RetentionPolicy,
    WebhookStatus,
)
from app.service.catalog import CatalogOperations
from app.service.console import ConsoleOperations
from app.service.health import Health
from app.service.holds import LegalHolds
from app.service.key_admin import KeyOperations
from app.service.oversight import OversightOperations
from app.service.pagination import (
    DEFAULT_PAGE_SIZE,
    decode_task_cursor,
    encode_task_cursor,
    page_size,
)
from app.service.runner import TaskRunner
from app.service.streaming import StreamingOperations
from app.service.submission import Admission, Planner, cache_hit_observed
from app.service.trail import AuditTrail
from app.storage import audit, webhooks
from app.storage.database import Database
from app.telemetry import metrics


@dataclass(frozen=True, slots=True)
class Submission:
    """A submitted task: its result (final, or pending when not waited for), and how it came about."""

    result: AgentResult
    accepted: bool = False  # not waited for: 202, the caller polls
    replayed: bool = False  # an Idempotency-Key replay of an earlier submission


class AgentService(OversightOperations, StreamingOperations, CatalogOperations, ConsoleOperations, KeyOperations):
    """Every operation of the service, for REST, MCP and the console alike."""

    def __init__(
        self,
        *,
        db: Database,
        keys: KeyStore,
        limits: Limiter,
        planner: Planner,
        admission: Admission,
        runner: TaskRunner,
        health: Health,
        holds: LegalHolds,
        trail: AuditTrail,
        retention: RetentionPolicy,
        vault: ResultVault,
        sessions: ConsoleSessions,
        traced: bool,
        providers: ProviderRegistry,
    ) -> None:
        self._vault = vault
        self._providers = providers
        self._sessions = sessions
        self._db = db
        self._keys = keys
        self._limits = limits
        self._planner = planner
        self._admission = admission
        self._runner = runner
        self._health = health
        self._holds = holds
        self._trail = trail
        self._traced = traced
        self.retention = retention

    # -- callers --------------------------------------------------------------------------

    async def authenticate(self, token: str | None, *, client: str | None = None) -> Principal:
        """The caller behind a bearer token; `Unauthenticated` for a missing, unknown or revoked key,
        `TooManyFailedAttempts` (429) once the caller's address `client` has failed too often."""
        return await self._keys.authenticate(token, client=client)

    async def count_request(self, principal: Principal) -> None:
        """Count one request against the caller's rate limit; `Throttled` when it is spent."""
        await self._limits.throttle(principal)

    # -- tasks ----------------------------------------------------------------------------

    async def run_task(
        self,
        principal: Principal,
        task: AgentTask,
        *,
        channel: Channel,
        request_id: str | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
    ) -> Submission:
        """Store the task, have it answered (from the cache, an identical task in flight, or the provider).

        With `wait`, return once it is finished; without, at once with the pending task.
        The provider call and the final write go on even if the caller goes away. A task that is
        not stored (`store: false`, or a key that never stores) needs `wait`: its answer is
        handed to this caller only, and is lost if they go away.
        """
        plan = self._planner.plan(principal, task, idempotency_key)
        if not plan.stored and not wait:  # before anything is written
            raise InvalidInput(
                "this task's answer is not stored (store: false, or the API key's store_output is never), "
                "so it needs wait: there would be nothing to read later",
                code="store_required",
            )
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        if idempotency_key is not None and (replay := await self._admission.replay(plan, actor, wait=wait)) is not None:
            return self._replayed(replay, wait)
        try:
            record, follow = await self._admission.admit(plan, actor, principal, pending=not wait)
        except asyncpg.UniqueViolationError:  # the same Idempotency-Key, a moment earlier
            if (replay := await self._admission.replay(plan, actor, wait=wait)) is not None:
                return self._replayed(replay, wait)
            raise
        if record.status.finished:  # a cache hit
            cache_hit_observed(record, plan.work, traced=self._traced)
            return Submission(self._result(record), accepted=not wait)
        job = self._runner.launch(record.id, plan.work, pending=not wait, follow=follow)
        if not wait:
            return Submission(self._result(record), accepted=True)
        finished = await self._runner.outcome(record.id, job)
        if finished.record is None:
            raise NotFound("the task was erased while it ran")
        result = self._result(finished.record)
        if not plan.stored:  # the one time this answer is seen: from memory, never from the row
            result = result.with_answer(finished.record, finished.answer, task.context)
        return Submission(result)

    def _result(self, record: TaskRecord) -> AgentResult:
        """A row as the caller sees it: its sealed answer and context opened."""
        return AgentResult.from_record(record, self._vault.open(record))

    def _replayed(self, record: TaskRecord, wait: bool) -> Submission:
        return Submission(self._result(record), accepted=not wait, replayed=True)

    async def get_result(
        self, principal: Principal, task_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> AgentResult:
        """A task by id, audited; unknown, expired and other clients' tasks are all `NotFound`."""
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            found = await audit.read_task_audited(conn, task_id, principal.owner_filter, actor)
        _audited_read(channel, found.outcome)
        if found.task is None:
            raise NotFound
        result = self._result(found.task)
        return result.model_copy(update={"legal_hold": True}) if found.held else result

    async def delete_result(
        self, principal: Principal, task_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> None:
        """Erase a task now, audited. Owners erase their own tasks; admins any; none a held one."""
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        owner = None if principal.role is Role.ADMIN else principal.key_id
        async with self._db.connection() as conn:
            outcome = await audit.delete_task_audited(conn, task_id, owner, actor)
        if outcome is AuditOutcome.HELD:
            raise UnderLegalHold
        if outcome is AuditOutcome.DENIED and principal.role is Role.AUDITOR:
            raise Forbidden("auditors may read any task but erase only their own")
        if outcome is not AuditOutcome.OK:
            raise NotFound

    async def cancel_task(
        self, principal: Principal, task_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> AgentResult:
        """Stop a pending or running task, audited: it ends `cancelled` on whichever replica runs it.

        The same callers as an erasure: owners their own tasks, admins any. Another client's task is
        the same `NotFound` as an unknown one; a task that has ended is `AlreadyFinished` (409)."""
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        owner = None if principal.role is Role.ADMIN else principal.key_id
        async with self._db.connection() as conn:
            outcome, record = await audit.cancel_task_audited(
                conn, task_id, owner, actor, failed_retention_seconds=self._runner.failed_retention_seconds
            )
        if outcome is AuditOutcome.FINISHED:
            raise AlreadyFinished
        if outcome is AuditOutcome.DENIED and principal.role is Role.AUDITOR:
            raise Forbidden("auditors may read any task but cancel only their own")
        if record is None:
            raise NotFound
        metrics.TASKS_CANCELLED.add(1, {"channel": channel.value})
        self._runner.task_cancelled(str(task_id))  # this replica, at once, without the round trip
        return self._result(record)

    async def get_webhook(
        self, principal: Principal, task_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> WebhookStatus:
        """A task's webhook delivery and its attempts, audited (`webhook_read`), for whoever may
        read the task: owners their own, auditors and admins any; others get `NotFound`."""
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            _, record = await webhooks.read_webhook_audited(conn, task_id, principal.owner_filter, actor)
        if record is None:
            raise NotFound
        return WebhookStatus.from_record(record)

    async def list_results(
        self,
        principal: Principal,
        *,
        cursor: str | None,
        limit: int = DEFAULT_PAGE_SIZE,
        channel: Channel,
        request_id: str | None = None,
    ) -> AgentResultPage:
        """The caller's own live tasks, newest first, without outputs."""
        limit = page_size(limit)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            rows = await audit.list_tasks_audited(
                conn, principal.key_id, before=decode_task_cursor(cursor), limit=limit + 1, actor=actor
            )
        page = rows[:limit]
        next_cursor = encode_task_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        items = [AgentResultSummary.from_record(r, self._vault.open(r)) for r in page]
        return AgentResultPage(items=items, next_cursor=next_cursor)

    # -- health -----------------------------------------------------------------------------

    async def readiness(self) -> ReadinessReport:
        """Each check by name: the database answers, is at the head migration, the purge schedule runs."""
        return await self._health.readiness()

    @property
    def next_purge_at(self) -> datetime | None:
        """When this process's scheduled purge runs next; None: no in-service purge is scheduled."""
        return self._health.next_purge_at

    def metrics_text(self, principal: Principal) -> bytes:
        """The metrics in Prometheus text format, for auditors and admins only."""
        return self._health.metrics_text(principal)


def _audited_read(channel: Channel, outcome: AuditOutcome) -> None:
    metrics.AUDITED_READS.add(1, {"channel": channel.value, "outcome": outcome.value})
