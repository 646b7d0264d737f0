"""Running tasks: the provider call, the final write, leases, and waiting on another runner.

A task being run carries a lease (`lease_expires_at`) that this process renews while it
works. If the process dies, the lease runs out and any replica's sweep marks the task
`failed` with `interrupted`, so no task stays pending or running forever.

A cancel (`app.storage.audit.cancel_task_audited`) is committed first, then announced on
`task_cancelled`; the replica running the task cancels its job, which aborts the provider call
(the HTTP request is closed), and the job ends with the cancelled row. A notification lost with
the listener's connection is caught up when it reconnects, and by the heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import asyncpg
import logfire

from app.access.encryption import KeyRetired, ResultVault, SealBroken
from app.domain import DatabaseUnavailable, TaskOutcome, TaskRecord, TaskStatus
from app.llm.base import (
    Completion,
    CompletionRequest,
    DeltaCallback,
    Message,
    ProviderError,
    ResponseFormat,
    Usage,
    stream_completion,
    supports_structured_output,
)
from app.llm.registry import Route
from app.llm.structured import Valid, check_answer, prepared, reask
from app.settings import Settings
from app.storage import tasks as storage
from app.storage.database import Database
from app.telemetry import metrics

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class Work:
    """What a runner needs to answer a task. Held in memory only: it contains the prompt."""

    route: Route
    messages: tuple[Message, ...]
    params: dict[str, Any]
    owner_id: uuid.UUID
    stored: bool = True  # False: `store: false`, the answer is not written (the job hands it back)
    # A streaming caller's sink: each piece of the answer as the provider sends it (memory only).
    on_delta: DeltaCallback | None = field(default=None, repr=False, compare=False)
    # The JSON the answer must be (a task's `response_format`); None: plain text.
    response_format: ResponseFormat | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never the messages
        return f"Work(model={self.route.resolved!r}, messages={len(self.messages)})"


@dataclass(frozen=True, slots=True)
class Finished:
    """What a job ends with: the task's final row (None if it was erased meanwhile), and the
    answer itself when the row does not hold it (`store: false`). Only the job's own waiter
    sees `answer`: it lives as long as that caller holds it, in memory, and is never written."""

    record: TaskRecord | None
    answer: str | None = field(default=None, repr=False)


class TaskRunner:
    """Runs stored tasks in the background of this process, and keeps their leases alive."""

    def __init__(self, db: Database, settings: Settings, vault: ResultVault) -> None:
        self._vault = vault
        self._db = db
        self._settings = settings
        self._jobs: dict[uuid.UUID, asyncio.Task[Finished]] = {}
        self._cancelled: set[uuid.UUID] = set()  # jobs being stopped because their task was cancelled

    @property
    def lease_seconds(self) -> float:
        return self._settings.task_lease_seconds

    @property
    def stream_keepalive_seconds(self) -> float:
        """STREAM_KEEPALIVE_SECONDS: how often a streamed answer says it is still alive."""
        return self._settings.stream_keepalive_seconds

    @property
    def failed_retention_seconds(self) -> float | None:
        """FAILED_RESULT_RETENTION_DAYS in seconds (None: a failed or cancelled task keeps the
        retention it was given)."""
        days = self._settings.failed_result_retention_days
        return days * SECONDS_PER_DAY if days else None

    def launch(
        self, task_id: uuid.UUID, work: Work, *, pending: bool, follow: uuid.UUID | None = None
    ) -> asyncio.Task[Finished]:
        """Run a stored task in the background; the returned job resolves to its final row (and
        to its answer, when that is not stored)."""
        job = asyncio.create_task(self._traced(task_id, work, pending=pending, follow=follow), name=f"task-{task_id}")
        self._jobs[task_id] = job
        job.add_done_callback(lambda done: self._finished(task_id, done))
        return job

    def _finished(self, task_id: uuid.UUID, job: asyncio.Task[Finished]) -> None:
        self._jobs.pop(task_id, None)
        self._cancelled.discard(task_id)
        if not job.cancelled() and (exc := job.exception()) is not None:
            # Type only: the caller sees it if still waiting; the lease sweep settles the row.
            log.warning("task runner ended with %s", type(exc).__name__)

    async def _traced(self, task_id: uuid.UUID, work: Work, *, pending: bool, follow: uuid.UUID | None) -> Finished:
        """Metrics for every task, and a span when tracing is on: ids, model, outcome, latency,
        tokens. Never the messages."""
        started = time.perf_counter()
        if not self._settings.tracing_requests:
            finished = await self._run(task_id, work, pending=pending, follow=follow)
            _observe(finished.record, work, time.perf_counter() - started)
            return finished
        with logfire.span(
            "agent task {task_id}", task_id=str(task_id), owner_key_id=str(work.owner_id), model=work.route.resolved
        ) as span:
            finished = await self._run(task_id, work, pending=pending, follow=follow)
            record, seconds = finished.record, time.perf_counter() - started
            if record is not None:
                span.set_attributes(
                    {
                        "status": record.status.value,
                        "error_code": record.error_code or "",
                        "cached": record.cached,
                        "latency_s": round(seconds, 6),
                        "prompt_tokens": record.prompt_tokens or 0,
                        "completion_tokens": record.completion_tokens or 0,
                    }
                )
            _observe(record, work, seconds)
            return finished

    async def _run(self, task_id: uuid.UUID, work: Work, *, pending: bool, follow: uuid.UUID | None) -> Finished:
        try:
            return await self._answer(task_id, work, pending=pending, follow=follow)
        except asyncio.CancelledError:
            if task_id not in self._cancelled:
                raise  # not a cancel of the task (a shutdown): the lease sweep settles the row
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the id stays in _cancelled until the job is done: stopped once
            return Finished(await self._current(task_id))

    async def _answer(self, task_id: uuid.UUID, work: Work, *, pending: bool, follow: uuid.UUID | None) -> Finished:
        if pending:
            async with self._db.connection() as conn:
                if not await storage.mark_running(conn, task_id, self.lease_seconds):
                    return Finished(await self._current(task_id))  # erased (or settled) before it started
        if follow is not None:
            # An identical request is being answered already: share its answer (single flight).
            source = await self.wait_for(follow)
            if source is not None and source.status == TaskStatus.SUCCEEDED:
                try:  # the leader's answer, opened and sealed again for this row
                    output = self._vault.reseal_output(source, task_id, work.owner_id)
                except (KeyRetired, SealBroken):
                    output, source = None, None
                if source is not None:
                    async with self._db.connection() as conn:
                        copied = await storage.complete_as_copy(conn, task_id, source.id, output)
                    if copied is not None:
                        return Finished(copied)
                    if (now := await self._current(task_id)) is None or now.status.finished:
                        return Finished(now)  # erased or cancelled meanwhile
            # The leader failed, was erased, or finished after its own expiry (its answer is gone
            # and is never copied): this task gets a real answer of its own.
        outcome = await self._call_provider(work)
        async with self._db.connection() as conn:
            record = await storage.complete_task(
                conn,
                task_id,
                outcome,
                output=self._vault.seal_output(task_id, work.owner_id, outcome.output) if work.stored else None,
                failed_retention_seconds=self.failed_retention_seconds,
            )
        if record is None:  # erased, or cancelled, while the provider answered: the row says which
            return Finished(await self._current(task_id))
        return Finished(record) if work.stored else Finished(record, outcome.output)

    async def _call_provider(self, work: Work) -> TaskOutcome:
        """The provider's answer, within PROVIDER_TIMEOUT_SECONDS (re-asks included). With a
        response_format, an answer that does not validate is asked again, telling the model what
        was wrong, at most STRUCTURED_OUTPUT_RETRIES times (never in a stream: its pieces have
        been sent); then the task fails `invalid_output`. The usage is that of every attempt."""
        route, fmt = work.route, work.response_format
        request = prepared(
            CompletionRequest(
                model=route.model,
                messages=work.messages,
                temperature=work.params.get("temperature"),
                max_tokens=work.params.get("max_tokens"),
                top_p=work.params.get("top_p"),
            ),
            fmt,
            native=fmt is not None and supports_structured_output(route.provider),
        )
        name = route.provider.name
        usages: list[Usage] = []
        try:
            async with asyncio.timeout(self._settings.provider_timeout_seconds):
                while True:
                    completion = await self._ask(route, request, work.on_delta)
                    usages.append(completion.usage)
                    if fmt is None:
                        return _succeeded(route, completion.text, usages)
                    checked = check_answer(completion.text, fmt)
                    if isinstance(checked, Valid):
                        return _succeeded(route, checked.text, usages)
                    if work.on_delta is not None or len(usages) > self._settings.structured_output_retries:
                        message = (
                            f"the answer did not match the response_format ({checked.rule}) "
                            f"after {len(usages)} attempt(s)"
                        )
                        return _failed(route, "invalid_output", message, usages)
                    answered = Message("assistant", completion.text)
                    request = replace(request, messages=(*request.messages, answered, reask(checked.problem)))
        except TimeoutError:
            return _failed(route, "timeout", f"{name} did not answer in time", usages)
        except ProviderError as exc:
            return _failed(route, exc.code, exc.message, usages)
        except Exception as exc:  # a plugin's bug must not leave the task running
            # Only the type: a third-party message could quote the prompt.
            log.error("provider %s raised %s", name, type(exc).__name__)
            return _failed(route, "provider_error", f"{name} failed unexpectedly ({type(exc).__name__})", usages)

    @staticmethod
    async def _ask(route: Route, request: CompletionRequest, on_delta: DeltaCallback | None) -> Completion:
        if on_delta is None:
            return await route.provider.complete(request)
        # The stored text is exactly the pieces handed to the streaming caller.
        return await stream_completion(route.provider, request, on_delta)

    async def outcome(self, task_id: uuid.UUID, job: asyncio.Task[Finished]) -> Finished:
        """What a waiting caller gets from a job: its end, without cancelling it when the caller
        goes away. A job cancelled before it ever ran (the cancel arrived before its first step)
        never reaches its own handler, so the row says how it ended; a cancel of the caller
        itself still propagates."""
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            if not job.cancelled():
                raise  # the caller was cancelled, not the job
            return Finished(await self._current(task_id))

    async def wait_for(self, task_id: uuid.UUID) -> TaskRecord | None:
        """A task's final row, once it has one: from this process's job, or by watching the database."""
        deadline = asyncio.get_running_loop().time() + self._settings.provider_timeout_seconds + self.lease_seconds
        if (job := self._jobs.get(task_id)) is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    return (await self.outcome(task_id, job)).record
            except Exception:  # timed out, or the job failed: the row says where it stands
                return await self._current(task_id)
        delay = 0.02
        while True:
            record = await self._current(task_id)
            if record is None or record.status.finished:
                return record
            if asyncio.get_running_loop().time() > deadline:
                return record
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _current(self, task_id: uuid.UUID) -> TaskRecord | None:
        async with self._db.connection() as conn:
            return await storage.get_task(conn, task_id)

    # -- cancels ------------------------------------------------------------------------

    def task_cancelled(self, payload: str) -> None:
        """A notification on `task_cancelled`: stop the job if this process runs that task."""
        self._stop(uuid.UUID(payload))

    async def catch_up_cancels(self, conn: asyncpg.Connection) -> None:
        """After the listener (re)connects: stop the jobs whose tasks were cancelled meanwhile."""
        if self._jobs:
            for task_id in await storage.cancelled_among(conn, list(self._jobs)):
                self._stop(task_id)

    def _stop(self, task_id: uuid.UUID) -> None:
        job = self._jobs.get(task_id)
        if job is not None and not job.done() and task_id not in self._cancelled:
            self._cancelled.add(task_id)
            job.cancel()

    # -- leases -------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew the leases of every task this process is running, and stop those cancelled."""
        if not self._jobs:
            return
        try:
            running = list(self._jobs)
            async with self._db.connection() as conn:
                if await storage.renew_leases(conn, running, self.lease_seconds) < len(running):
                    for task_id in await storage.cancelled_among(conn, running):
                        self._stop(task_id)  # a cancel whose notification did not arrive
        except DatabaseUnavailable:
            log.warning("could not renew task leases: database unreachable")

    async def sweep(self) -> list[uuid.UUID]:
        """Settle tasks whose runner is gone (lease expired) as failed/interrupted."""
        try:
            async with self._db.connection() as conn:
                interrupted = await storage.interrupt_abandoned(conn)
        except DatabaseUnavailable:
            return []
        if interrupted:
            log.warning("marked %d abandoned task(s) failed/interrupted", len(interrupted))
        return interrupted

    async def drain(self, timeout: float) -> None:
        """On shutdown: let running tasks finish (their callers are waiting), up to `timeout`."""
        if self._jobs:
            await asyncio.wait(list(self._jobs.values()), timeout=timeout)


def _observe(record: TaskRecord | None, work: Work, seconds: float) -> None:
    if record is None:
        return
    metrics.task_finished(
        provider=work.route.provider.name,
        model=work.route.resolved,
        status=record.status.value,
        error_code=record.error_code,
        cached=record.cached,
        seconds=seconds,
        prompt_tokens=None if record.cached else record.prompt_tokens,
        completion_tokens=None if record.cached else record.completion_tokens,
        cost_usd=None if record.cached else record.cost_usd,
    )


def _usage_of(route: Route, usages: list[Usage]) -> dict[str, Any]:
    """The usage and cost of every attempt, summed (a count none of the attempts gave stays None).
    Priced by the model the route asked for: what the provider says it ran may be a dated
    snapshot name (`gpt-4o-mini-2024-07-18`) the price list knows by its family."""
    if not usages:
        return {}

    def total(counts: list[int | None]) -> int | None:
        known = [n for n in counts if n is not None]
        return sum(known) if known else None

    costs = [route.prices.cost(route.model, usage) for usage in usages]
    return {
        "prompt_tokens": total([u.prompt_tokens for u in usages]),
        "completion_tokens": total([u.completion_tokens for u in usages]),
        "total_tokens": total([u.total_tokens for u in usages]),
        "cost_usd": None if any(c is None for c in costs) else sum((c for c in costs if c is not None), Decimal(0)),
    }


def _succeeded(route: Route, output: str, usages: list[Usage]) -> TaskOutcome:
    return TaskOutcome(TaskStatus.SUCCEEDED, output=output, **_usage_of(route, usages))


def _failed(route: Route, code: str, message: str, usages: list[Usage]) -> TaskOutcome:
    """A failed run keeps no answer, only the usage of the attempts that were answered."""
    return TaskOutcome(TaskStatus.FAILED, error_code=code, error_message=message, **_usage_of(route, usages))
