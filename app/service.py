"""The operations REST and MCP expose, written once: run, read, list, erase, audit.

Both faces call these methods with the caller's principal and their channel, so
they behave and are audited identically. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import logfire
from prometheus_client import REGISTRY, generate_latest

from app import metrics, repository
from app.db import Database
from app.errors import Conflict, DatabaseUnavailable, Forbidden, InvalidInput, NotFound
from app.keys import KeyStore
from app.limits import Limiter
from app.llm.base import Message
from app.llm.registry import ProviderRegistry, build_registry
from app.llm.templates import TemplateStore
from app.migration import head_revision
from app.models import AuditOutcome, Channel, Role, TaskStatus
from app.records import TaskRecord
from app.repository import Actor, NewTask
from app.retention import Purger, RetentionPolicy
from app.runner import FINISHED, SECONDS_PER_DAY, TaskRunner, Work
from app.scheduler import Scheduler
from app.schemas import (
    AgentResult,
    AgentResultPage,
    AgentResultSummary,
    AgentTask,
    AuditEvent,
    AuditEventPage,
)
from app.security import Principal, PromptHasher
from app.settings import Settings

IDEMPOTENCY_WINDOW = 24 * 3600.0
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str]


@dataclass(frozen=True, slots=True)
class Submission:
    """A submitted task: its result (final, or pending when not waited for), and how it came about."""

    result: AgentResult
    accepted: bool = False  # not waited for: 202, the caller polls
    replayed: bool = False  # an Idempotency-Key replay of an earlier submission


@dataclass(frozen=True, slots=True)
class _Plan:
    """A validated task, ready to store: hashes, route, rendered messages. Memory only."""

    new: NewTask
    work: Work
    use_cache: bool


class AgentService:
    """The composition root: settings, database, providers, keys, and the operations on tasks."""

    def __init__(self, settings: Settings) -> None:
        if settings.prompt_hash_key is None:
            raise ValueError("PROMPT_HASH_KEY is not set")
        self.settings = settings
        self.db = Database(settings)
        self.keys = KeyStore(
            self.db,
            settings.auth_cache_seconds,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            max_running_tasks=settings.max_running_tasks,
        )
        self.limits = Limiter(self.db)
        self.hasher = PromptHasher(settings.prompt_hash_key.get_secret_value())
        self.providers: ProviderRegistry = build_registry(settings)
        self.templates = TemplateStore(settings.templates_dir)
        self.runner = TaskRunner(self.db, settings)
        self.purger = Purger(self.db, settings)
        self.retention = RetentionPolicy.of(settings)
        self.schedule = Scheduler(settings, self.purger, self.runner)
        metrics.watch_pool(self.db)
        self._head = head_revision()

    async def start(self) -> None:
        await self.db.open()
        self.schedule.start()

    async def stop(self) -> None:
        self.schedule.stop()
        await self.runner.drain(self.settings.provider_timeout_seconds)
        await self.providers.aclose()
        await self.db.close()

    async def authenticate(self, token: str | None) -> Principal:
        """The caller behind a bearer token, with one request counted against its rate limit."""
        principal = await self.keys.authenticate(token)
        await self.limits.throttle(principal)
        return principal

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
        The provider call and the final write go on even if the caller goes away.
        """
        plan = self._plan(principal, task, idempotency_key)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        if idempotency_key is not None and (replay := await self._replay(plan, actor, wait)) is not None:
            return replay
        try:
            record, follow = await self._admit(plan, actor, principal, pending=not wait)
        except asyncpg.UniqueViolationError:  # the same Idempotency-Key, a moment earlier
            if (replay := await self._replay(plan, actor, wait)) is not None:
                return replay
            raise
        if record.status in FINISHED:  # a cache hit
            _cache_hit_observed(record, plan.work, traced=self.settings.tracing_requests)
            return Submission(AgentResult.from_record(record), accepted=not wait)
        job = self.runner.launch(record.id, plan.work, pending=not wait, follow=follow)
        if not wait:
            return Submission(AgentResult.from_record(record), accepted=True)
        final = await asyncio.shield(job)
        if final is None:
            raise NotFound("the task was erased while it ran")
        return Submission(AgentResult.from_record(final))

    def _plan(self, principal: Principal, task: AgentTask, idempotency_key: str | None) -> _Plan:
        route = self.providers.route(task.model)
        self._check_prompt(task.prompt)
        template = self.templates.resolve(task.template) if task.template is not None else None
        if template is None:
            messages: tuple[Message, ...] = (Message("user", task.prompt),)
            prompt_hash = self.hasher.hash(task.prompt)
        else:
            messages = self.templates.render(template, task.prompt, task.context)
            prompt_hash = self.hasher.hash(_canonical([[m.role, m.content] for m in messages]))
        params = task.params.model_dump(exclude_none=True)
        cache_key = self.hasher.hash(
            _canonical(
                {
                    "owner": str(principal.key_id),
                    "messages": [[m.role, m.content] for m in messages],
                    "model": route.resolved,
                    "params": params,
                }
            )
        )
        request_hash = (
            self.hasher.hash(_canonical(task.model_dump(mode="json"))) if idempotency_key is not None else None
        )
        new = NewTask(
            id=uuid.uuid4(),
            owner_id=principal.key_id,
            status=TaskStatus.RUNNING,
            model=route.resolved,
            template=template.ref if template is not None else None,
            prompt_hash=prompt_hash,
            prompt_hash_key_id=self.hasher.key_id,
            context=task.context,
            params=params,
            retention_seconds=self._retention_seconds(task.retention_days),
            cache_key=cache_key,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            lease_seconds=self.runner.lease_seconds,
        )
        return _Plan(
            new,
            Work(route, messages, params, principal.key_id),
            use_cache=task.cache and self.settings.cache_ttl_seconds > 0,
        )

    async def _admit(
        self, plan: _Plan, actor: Actor, principal: Principal, *, pending: bool
    ) -> tuple[TaskRecord, uuid.UUID | None]:
        """Store the task. With the cache on: a fresh identical answer is copied (a finished
        row comes back), or an identical task in flight is followed (its id comes back too).
        The look-up and the insert hold a lock on the cache key, so across every replica
        concurrent identical requests make one provider call. A task that will run counts
        against the key's MAX_RUNNING_TASKS; a cache hit does not.
        """
        new = replace(plan.new, status=TaskStatus.PENDING if pending else TaskStatus.RUNNING)
        if not plan.use_cache:
            metrics.CACHE_LOOKUPS.add(1, {"result": "bypass"})
            if principal.max_running_tasks <= 0:
                async with self.db.connection() as conn:
                    return await repository.insert_task(conn, new, actor), None
            async with self.db.transaction() as conn:
                await self.limits.make_room(conn, principal)
                return await repository.insert_task(conn, new, actor), None
        assert new.cache_key is not None
        hit = replace(new, status=TaskStatus.SUCCEEDED, lease_seconds=None)
        ttl = self.settings.cache_ttl_seconds
        async with self.db.connection() as conn:  # the common case, a hit: one statement, no lock
            if (copy := await repository.insert_cache_hit(conn, hit, actor, max_age_seconds=ttl)) is not None:
                metrics.CACHE_LOOKUPS.add(1, {"result": "hit"})
                return copy, None
        async with self.db.transaction() as conn:
            await repository.lock_cache_key(conn, new.cache_key)
            found = await repository.find_cached(conn, new.owner_id, new.cache_key, max_age_seconds=ttl)
            if found is not None and found.status == TaskStatus.SUCCEEDED:
                if (copy := await repository.insert_cached_copy(conn, hit, actor, found.id)) is not None:
                    metrics.CACHE_LOOKUPS.add(1, {"result": "hit"})
                    return copy, None
            metrics.CACHE_LOOKUPS.add(1, {"result": "miss" if found is None else "in_flight"})
            await self.limits.make_room(conn, principal)
            return await repository.insert_task(conn, new, actor), found.id if found is not None else None

    async def _replay(self, plan: _Plan, actor: Actor, wait: bool) -> Submission | None:
        """The task an Idempotency-Key already made (within 24 hours), or None to make one."""
        key, owner = plan.new.idempotency_key, plan.new.owner_id
        assert key is not None
        async with self.db.connection() as conn:
            found = await repository.find_by_idempotency_key(conn, owner, key, window_seconds=IDEMPOTENCY_WINDOW)
            if found is None:
                return None
            existing, fresh = found
            if not fresh:
                await repository.release_idempotency_key(conn, existing.id)
                return None
        if existing.request_hash != plan.new.request_hash:
            raise Conflict(
                "this Idempotency-Key was used with a different request in the last 24 hours",
                code="idempotency_conflict",
            )
        if wait and existing.status not in FINISHED:
            await self.runner.wait_for(existing.id)
        async with self.db.connection() as conn:  # the replay shows the caller a task: a read, audited
            audited = await repository.read_task_audited(conn, existing.id, owner, actor)
        if audited.task is None:
            return None
        return Submission(AgentResult.from_record(audited.task), accepted=not wait, replayed=True)

    def _check_prompt(self, prompt: str) -> None:
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            raise InvalidInput(f"prompt has {len(prompt)} characters; the limit is {limit}", code="prompt_too_long")

    def _retention_seconds(self, retention_days: float | None) -> float:
        limit = self.settings.result_retention_days
        if retention_days is not None and retention_days > limit:
            raise InvalidInput(
                f"retention_days may be at most {limit:g} (the server's RESULT_RETENTION_DAYS)",
                code="retention_too_long",
            )
        return (retention_days or limit) * SECONDS_PER_DAY

    # -- reading and erasing ----------------------------------------------------------------

    async def get_result(
        self, principal: Principal, task_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> AgentResult:
        """A task by id, audited; unknown, expired and other clients' tasks are all `NotFound`."""
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self.db.connection() as conn:
            found = await repository.read_task_audited(conn, task_id, principal.owner_filter, actor)
        metrics.AUDITED_READS.add(1, {"channel": channel.value, "outcome": found.outcome.value})
        if found.task is None:
            raise NotFound
        return AgentResult.from_record(found.task)

    async def delete_result(
        self, principal: Principal, task_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> None:
        """Erase a task now, audited. Owners erase their own tasks; admins any."""
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        owner = None if principal.role is Role.ADMIN else principal.key_id
        async with self.db.connection() as conn:
            outcome = await repository.delete_task_audited(conn, task_id, owner, actor)
        if outcome is AuditOutcome.DENIED and principal.role is Role.AUDITOR:
            raise Forbidden("auditors may read any task but erase only their own")
        if outcome is not AuditOutcome.OK:
            raise NotFound

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
        limit = _page_size(limit)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self.db.connection() as conn:
            rows = await repository.list_tasks_audited(
                conn, principal.key_id, before=_decode_task_cursor(cursor), limit=limit + 1, actor=actor
            )
        page = rows[:limit]
        next_cursor = _encode_task_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return AgentResultPage(items=[AgentResultSummary.from_record(r) for r in page], next_cursor=next_cursor)

    async def list_audit_events(
        self,
        principal: Principal,
        *,
        task_id: uuid.UUID | None,
        cursor: str | None,
        limit: int = DEFAULT_PAGE_SIZE,
        channel: Channel,
        request_id: str | None = None,
    ) -> AuditEventPage:
        """The audit log, newest first, for auditors and admins; reading it is audited too."""
        if not principal.sees_every_task:
            raise Forbidden("the audit log is for the auditor and admin roles")
        limit = _page_size(limit)
        before_id = _decode_int_cursor(cursor)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self.db.connection() as conn:
            rows = await repository.list_audit_events_audited(
                conn, task_id=task_id, before_id=before_id, limit=limit + 1, actor=actor
            )
        page = rows[:limit]
        next_cursor = str(page[-1].id) if len(rows) > limit else None
        return AuditEventPage(items=[AuditEvent.from_record(r) for r in page], next_cursor=next_cursor)

    # -- health -----------------------------------------------------------------------------

    def metrics_text(self, principal: Principal) -> bytes:
        """The metrics in Prometheus text format, for auditors and admins only.

        The figures are aggregates over every client (task volumes, models, audited reads),
        so a client key may not see them.
        """
        if not principal.sees_every_task:
            raise Forbidden("metrics are for the auditor and admin roles")
        return generate_latest(REGISTRY)

    async def readiness(self) -> Readiness:
        """Each check by name: the database answers, is at the head migration, the purge schedule runs."""
        checks = {
            "database": "ok",
            "migrations": "ok",
            "scheduler": "ok" if self.schedule.running else "stopped",
            # The registry refuses a bad configuration at start; this names what it serves.
            "providers": "ok: " + ", ".join(self.providers.names),
        }
        try:
            async with self.db.connection() as conn:
                revision = await repository.schema_revision(conn)
        except DatabaseUnavailable:
            checks |= {"database": "unreachable", "migrations": "unknown"}
        else:
            if revision != self._head:
                checks["migrations"] = (
                    f"at {revision or 'no revision'}, head is {self._head}; run `agent-service migrate`"
                )
        return Readiness(all(v.startswith("ok") for v in checks.values()), checks)


def _page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")
    return limit


def _encode_task_cursor(created_at: datetime, task_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{task_id}".encode()).decode().rstrip("=")


def _decode_task_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, task_id = raw.split("|")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, uuid.UUID(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this service issued", code="invalid_cursor") from None


def _decode_int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise InvalidInput("cursor is not one this service issued", code="invalid_cursor")
    return int(cursor)


def _canonical(value: Any) -> str:
    """One JSON text per value (sorted keys, no spaces): the input of keyed hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _cache_hit_observed(record: TaskRecord, work: Work, *, traced: bool) -> None:
    """A cache hit gets its span (when tracing) and metrics like any other task."""
    if traced:
        logfire.info(
            "agent task {task_id} answered from the cache",
            task_id=str(record.id),
            owner_key_id=str(record.owner_id),
            model=record.model,
            status=record.status,
            cached=True,
        )
    metrics.task_finished(
        provider=work.route.provider.name,
        model=record.model,
        status=record.status,
        error_code=None,
        cached=True,
        seconds=0.0,
        prompt_tokens=None,
        completion_tokens=None,
    )
