"""The operations REST and MCP expose, written once: run, read, list, erase, audit.

Both faces call these methods with the caller's principal and their channel, so
they behave and are audited identically. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from app import repository
from app.db import Database
from app.errors import DatabaseUnavailable, Forbidden, InvalidInput, NotFound
from app.keys import KeyStore
from app.llm.base import CompletionRequest, Message, ProviderError
from app.llm.registry import ProviderRegistry, Route, build_registry
from app.migration import head_revision
from app.models import AuditOutcome, Channel, Role, TaskStatus
from app.repository import Actor, NewTask, TaskOutcome
from app.retention import Purger, PurgeSchedule, RetentionPolicy
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

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str]


class AgentService:
    """The composition root: settings, database, providers, keys, and the operations on tasks."""

    def __init__(self, settings: Settings) -> None:
        if settings.prompt_hash_key is None:
            raise ValueError("PROMPT_HASH_KEY is not set")
        self.settings = settings
        self.db = Database(settings)
        self.keys = KeyStore(self.db, settings.auth_cache_seconds)
        self.hasher = PromptHasher(settings.prompt_hash_key.get_secret_value())
        self.providers: ProviderRegistry = build_registry(settings)
        self.purger = Purger(self.db, settings)
        self.retention = RetentionPolicy.of(settings)
        self._schedule = PurgeSchedule(self.purger, settings.purge_cron) if settings.purge_enabled else None
        self._head = head_revision()
        self._inflight: set[asyncio.Future[AgentResult]] = set()

    async def start(self) -> None:
        await self.db.open()
        if self._schedule is not None:
            self._schedule.start()

    async def stop(self) -> None:
        if self._schedule is not None:
            self._schedule.stop()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.settings.provider_timeout_seconds)
        await self.providers.aclose()
        await self.db.close()

    @property
    def schedule(self) -> PurgeSchedule | None:
        return self._schedule

    # -- tasks ----------------------------------------------------------------------------

    async def run_task(
        self, principal: Principal, task: AgentTask, *, channel: Channel, request_id: str | None = None
    ) -> AgentResult:
        """Validate, store the task as running, call the provider, store the result."""
        route = self.providers.route(task.model)
        self._check_prompt(task.prompt)
        if task.template is not None:
            raise InvalidInput(
                f"unknown template {task.template!r}; no templates are installed", code="unknown_template"
            )
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        new = NewTask(
            id=uuid.uuid4(),
            owner_id=principal.key_id,
            status=TaskStatus.RUNNING,
            model=route.resolved,
            template=None,
            prompt_hash=self.hasher.hash(task.prompt),
            prompt_hash_key_id=self.hasher.key_id,
            context=task.context,
            params=task.params.model_dump(exclude_none=True),
            retention_seconds=self._retention_seconds(task.retention_days),
        )
        async with self.db.connection() as conn:
            await repository.insert_task(conn, new, actor)
        # The provider call and the final write go on even if the caller goes away,
        # so a task is never left `running` because a client disconnected.
        job = asyncio.ensure_future(self._execute(new.id, route, task))
        self._inflight.add(job)
        job.add_done_callback(self._forget)
        return await asyncio.shield(job)

    def _forget(self, job: asyncio.Future[AgentResult]) -> None:
        self._inflight.discard(job)
        if not job.cancelled() and (exc := job.exception()) is not None:
            # Seen by the caller if it is still waiting; logged (type only) in case it is not.
            log.debug("task runner ended with %s", type(exc).__name__)

    async def _execute(self, task_id: uuid.UUID, route: Route, task: AgentTask) -> AgentResult:
        outcome = await self._call_provider(route, task)
        failed_days = self.settings.failed_result_retention_days
        async with self.db.connection() as conn:
            record = await repository.complete_task(
                conn, task_id, outcome, failed_retention_seconds=failed_days * SECONDS_PER_DAY if failed_days else None
            )
        if record is None:
            raise NotFound("the task was erased while it ran")
        return AgentResult.from_record(record)

    async def _call_provider(self, route: Route, task: AgentTask) -> TaskOutcome:
        request = CompletionRequest(
            model=route.model,
            messages=(Message("user", task.prompt),),
            temperature=task.params.temperature,
            max_tokens=task.params.max_tokens,
            top_p=task.params.top_p,
        )
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                completion = await route.provider.complete(request)
        except TimeoutError:
            return TaskOutcome(
                TaskStatus.FAILED, error_code="timeout", error_message=f"{route.provider.name} did not answer in time"
            )
        except ProviderError as exc:
            return TaskOutcome(TaskStatus.FAILED, error_code=exc.code, error_message=exc.message)
        except Exception as exc:  # a plugin's bug must not leave the task running
            # Only the type: a third-party message could quote the prompt.
            log.error("provider %s raised %s", route.provider.name, type(exc).__name__)
            return TaskOutcome(
                TaskStatus.FAILED,
                error_code="provider_error",
                error_message=f"{route.provider.name} failed unexpectedly ({type(exc).__name__})",
            )
        usage = completion.usage
        return TaskOutcome(
            TaskStatus.SUCCEEDED,
            output=completion.text,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )

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

    async def readiness(self) -> Readiness:
        """Each check by name: the database answers, is at the head migration, the purge schedule runs."""
        checks = {"database": "ok", "migrations": "ok", "scheduler": "off"}
        if self._schedule is not None:
            checks["scheduler"] = "ok" if self._schedule.running else "stopped"
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
        return Readiness(all(v in ("ok", "off") for v in checks.values()), checks)


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
