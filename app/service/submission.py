"""Submitting a task: planning it (hashes, route, rendered messages) and admitting it.

Admission stores the task, or answers it without a provider call: from the cache, from an
identical task in flight (single flight), or as the replay of an `Idempotency-Key`. The
prompt stays in memory (`Plan.work`); storage only ever sees its keyed hashes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

import logfire

from app.access.encryption import KeyRetired, ResultVault, SealBroken
from app.access.hashing import PromptHasher
from app.access.limits import Limiter
from app.domain import (
    Actor,
    Conflict,
    InvalidInput,
    NewTask,
    Principal,
    PromptHashes,
    StoreOutput,
    TaskRecord,
    TaskStatus,
    WebhookSecretMissing,
)
from app.llm.base import Message
from app.llm.registry import ProviderRegistry
from app.llm.structured import parse_response_format
from app.llm.templates import PromptTemplate, TemplateStore
from app.schemas import AgentTask
from app.service.runner import SECONDS_PER_DAY, TaskRunner, Work
from app.settings import Settings
from app.storage import audit
from app.storage import tasks as storage
from app.storage.database import Database
from app.telemetry import metrics
from app.webhooks.addresses import check_url

IDEMPOTENCY_WINDOW = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated task, ready to store: hashes, route, rendered messages. Memory only."""

    new: NewTask
    work: Work
    use_cache: bool

    @property
    def stored(self) -> bool:
        """False when the answer must not be written (`store: false`, or the key's `never`)."""
        return self.new.output_stored


class Planner:
    """Turns a submitted task into a plan: the checks the schema cannot make, and every keyed hash."""

    def __init__(
        self,
        settings: Settings,
        providers: ProviderRegistry,
        templates: TemplateStore,
        hasher: PromptHasher,
        vault: ResultVault,
        *,
        lease_seconds: float,
    ) -> None:
        self._vault = vault
        self._settings = settings
        self._providers = providers
        self._templates = templates
        self._hasher = hasher
        self._lease_seconds = lease_seconds

    def plan(self, principal: Principal, task: AgentTask, idempotency_key: str | None) -> Plan:
        route = self._providers.route(task.model)
        if task.webhook is not None:
            check_url(task.webhook, self._settings.webhook_allowed_hosts)
            if not principal.signs_webhooks:
                raise WebhookSecretMissing
        self._check_prompt(task.prompt)
        response_format = parse_response_format(task.response_format)
        template, messages, hashed = self.hashed_material(task.prompt, task.template, task.context)
        params = task.params.model_dump(exclude_none=True)
        keyed: dict[str, Any] = {
            "owner": str(principal.key_id),
            "messages": [[m.role, m.content] for m in messages],
            "model": route.resolved,
            "params": params,
        }
        if response_format is not None:  # absent for plain text: the cache keys of earlier tasks still match
            keyed["response_format"] = task.response_format
        cache_key = self._hasher.hash(canonical(keyed))
        request_hash = self._request_hash(task, response_format is not None) if idempotency_key is not None else None
        task_id = uuid.uuid4()
        # A key that never stores makes every one of its tasks `store: false`, whatever it says.
        stored = task.store and principal.store_output is StoreOutput.ALLOWED
        new = NewTask(
            id=task_id,
            owner_id=principal.key_id,
            status=TaskStatus.RUNNING,
            model=route.resolved,
            template=template.ref if template is not None else None,
            prompt_hash=self._hasher.owner_hash(principal.key_id, hashed),
            prompt_hash_key_id=self._hasher.owner_key_id,
            # Context may be as private as the answer: a not-stored task writes neither.
            context=self._vault.seal_context(task_id, principal.key_id, task.context) if stored else None,
            params=params,
            retention_seconds=self._retention_seconds(task.retention_days, principal),
            cache_key=cache_key,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            lease_seconds=self._lease_seconds,
            output_stored=stored,
            webhook_url=task.webhook,
            response_format=response_format.kind if response_format is not None else None,
        )
        return Plan(
            new,
            Work(route, messages, params, principal.key_id, stored=stored, response_format=response_format),
            # A not-stored answer is neither served from the cache nor a source for it: the
            # caller asked that it exist only in their hands, so no copy row may hold it.
            use_cache=stored and task.cache and self._settings.cache_ttl_seconds > 0,
        )

    def hashed_material(
        self, prompt: str, template_ref: str | None, context: dict[str, Any]
    ) -> tuple[PromptTemplate | None, tuple[Message, ...], str]:
        """The template, the messages, and the text the prompt hash is taken of: the prompt
        itself, or with a template the rendered messages (so a search given the same prompt,
        template and context finds the task)."""
        if template_ref is None:
            return None, (Message("user", prompt),), prompt
        template = self._templates.resolve(template_ref)
        messages = self._templates.render(template, prompt, context)
        return template, messages, canonical([[m.role, m.content] for m in messages])

    def prompt_hashes(
        self, prompt: str, template_ref: str | None, context: dict[str, Any], owners: list[uuid.UUID]
    ) -> PromptHashes:
        """Every hash a task carrying this prompt may have: one per owner, and the global one of
        rows written before hashes were bound to owners. For the auditor's search only."""
        _, _, hashed = self.hashed_material(prompt, template_ref, context)
        return PromptHashes(
            key_id=self._hasher.owner_key_id,
            by_owner={owner: self._hasher.owner_hash(owner, hashed) for owner in owners},
            legacy_key_id=self._hasher.key_id,
            legacy_hash=self._hasher.hash(hashed),
        )

    def _request_hash(self, task: AgentTask, structured: bool) -> str:
        """The keyed hash an Idempotency-Key's replay is checked against: the whole request, its
        response_format included (a plain-text task, `{"type": "text"}` or none, hashes as it did
        before the field existed)."""
        request = task.model_dump(mode="json")
        if not structured:
            del request["response_format"]
        return self._hasher.hash(canonical(request))

    def _check_prompt(self, prompt: str) -> None:
        limit = self._settings.max_prompt_chars
        if len(prompt) > limit:
            raise InvalidInput(f"prompt has {len(prompt)} characters; the limit is {limit}", code="prompt_too_long")

    def _retention_seconds(self, retention_days: float | None, principal: Principal) -> float:
        """The task's retention: as asked, at most the ceiling (the server's, or the key's own
        when lower), which is also the default."""
        limit = self._settings.result_retention_days
        own = principal.max_retention_days
        if own is not None and own < limit:
            limit, whose = own, "this API key's max_retention_days"
        else:
            whose = "the server's RESULT_RETENTION_DAYS"
        if retention_days is not None and retention_days > limit:
            raise InvalidInput(f"retention_days may be at most {limit:g} ({whose})", code="retention_too_long")
        return (retention_days or limit) * SECONDS_PER_DAY


class Admission:
    """Stores a planned task, unless the cache or an earlier submission already answers it."""

    def __init__(
        self, db: Database, limits: Limiter, runner: TaskRunner, vault: ResultVault, *, cache_ttl_seconds: float
    ) -> None:
        self._vault = vault
        self._db = db
        self._limits = limits
        self._runner = runner
        self._ttl = cache_ttl_seconds

    async def admit(
        self, plan: Plan, actor: Actor, principal: Principal, *, pending: bool
    ) -> tuple[TaskRecord, uuid.UUID | None]:
        """Store the task. With the cache on: a fresh identical answer is copied (a finished
        row comes back), or an identical task in flight is followed (its id comes back too).
        The look-up and the insert hold a lock on the cache key, so across every replica
        concurrent identical requests make one provider call. A task that will run counts
        against the key's MAX_RUNNING_TASKS; a cache hit does not. A key over a monthly budget
        is refused first (`BudgetExceeded`), cache hit or not, and nothing is written.
        """
        await self._limits.check_budget(principal)
        new = replace(plan.new, status=TaskStatus.PENDING if pending else TaskStatus.RUNNING)
        if not plan.use_cache:
            metrics.CACHE_LOOKUPS.add(1, {"result": "bypass"})
            if principal.max_running_tasks <= 0:
                async with self._db.connection() as conn:
                    return await storage.insert_task(conn, new, actor), None
            async with self._db.transaction() as conn:
                await self._limits.check_running_cap(conn, principal)
                return await storage.insert_task(conn, new, actor), None
        assert new.cache_key is not None
        # A copy is never a source itself (no cache key): every hit copies a provider's answer, so
        # CACHE_TTL_SECONDS bounds the age of what is served, and a hot key finds one row, not its copies.
        hit = replace(new, status=TaskStatus.SUCCEEDED, lease_seconds=None, cache_key=None)
        async with self._db.connection() as conn:  # the common case, a hit: no lock
            found = await storage.find_cached(conn, new.owner_id, new.cache_key, max_age_seconds=self._ttl)
            if found is not None and (copy := await self._copy(conn, hit, actor, found)) is not None:
                return copy, None
        async with self._db.transaction() as conn:
            await storage.lock_cache_key(conn, new.cache_key)
            found = await storage.find_cached(conn, new.owner_id, new.cache_key, max_age_seconds=self._ttl)
            if found is not None and (copy := await self._copy(conn, hit, actor, found)) is not None:
                return copy, None
            metrics.CACHE_LOOKUPS.add(1, {"result": "miss" if found is None else "in_flight"})
            await self._limits.check_running_cap(conn, principal)
            return await storage.insert_task(conn, new, actor), found.id if found is not None else None

    async def _copy(self, conn: Any, hit: NewTask, actor: Actor, found: TaskRecord) -> TaskRecord | None:
        """A cache hit copied from `found`, if it is a succeeded answer that still opens: opened
        and sealed again for the new row. None to go on (in flight, gone, or unreadable)."""
        if found.status is not TaskStatus.SUCCEEDED:
            return None
        try:
            output = self._vault.reseal_output(found, hit.id, hit.owner_id)
        except (KeyRetired, SealBroken):
            return None  # a retired key's answer is not served again: ask the provider
        copy = await storage.insert_cached_copy(conn, hit, actor, found.id, output)
        if copy is not None:
            metrics.CACHE_LOOKUPS.add(1, {"result": "hit"})
        return copy

    async def replay(self, plan: Plan, actor: Actor, *, wait: bool) -> TaskRecord | None:
        """The task an Idempotency-Key already made (within 24 hours), read as the caller's
        audited read; None to make a new one."""
        key, owner = plan.new.idempotency_key, plan.new.owner_id
        assert key is not None
        async with self._db.connection() as conn:
            found = await storage.find_by_idempotency_key(conn, owner, key, window_seconds=IDEMPOTENCY_WINDOW)
            if found is None:
                return None
            existing, fresh = found
            if not fresh:
                await storage.release_idempotency_key(conn, existing.id)
                return None
        if existing.request_hash != plan.new.request_hash:
            raise Conflict(
                "this Idempotency-Key was used with a different request in the last 24 hours",
                code="idempotency_conflict",
            )
        if wait and not existing.status.finished:
            await self._runner.wait_for(existing.id)
        async with self._db.connection() as conn:  # the replay shows the caller a task: a read, audited
            return (await audit.read_task_audited(conn, existing.id, owner, actor)).task


def canonical(value: Any) -> str:
    """One JSON text per value (sorted keys, no spaces): the input of keyed hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_hit_observed(record: TaskRecord, work: Work, *, traced: bool) -> None:
    """A cache hit gets its span (when tracing) and metrics like any other task."""
    if traced:
        logfire.info(
            "agent task {task_id} answered from the cache",
            task_id=str(record.id),
            owner_key_id=str(record.owner_id),
            model=record.model,
            status=record.status.value,
            cached=True,
        )
    metrics.task_finished(
        provider=work.route.provider.name,
        model=record.model,
        status=record.status.value,
        error_code=None,
        cached=True,
        seconds=0.0,
        prompt_tokens=None,
        completion_tokens=None,
    )
