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
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import logfire

from app.access.encryption import KeyRetired, ResultVault, SealBroken
from app.domain import DatabaseUnavailable, TaskOutcome, TaskRecord, TaskStatus
from app.llm.base import CompletionRequest, DeltaCallback, Message, ProviderError, stream_completion
from app.llm.registry import Route
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
        route = work.route
        request = CompletionRequest(
            model=route.model,
            messages=work.messages,
            temperature=work.params.get("temperature"),
            max_tokens=work.params.get("max_tokens"),
            top_p=work.params.get("top_p"),
        )
        name = route.provider.name
        try:
            async with asyncio.timeout(self._settings.provider_timeout_seconds):
                if work.on_delta is None:
                    completion = await route.provider.complete(request)
                else:  # the stored text is exactly the pieces handed to the streaming caller
                    completion = await stream_completion(route.provider, request, work.on_delta)
        except TimeoutError:
            return TaskOutcome(TaskStatus.FAILED, error_code="timeout", error_message=f"{name} did not answer in time")
        except ProviderError as exc:
            return TaskOutcome(TaskStatus.FAILED, error_code=exc.code, error_message=exc.message)
        except Exception as exc:  # a plugin's bug must not leave the task running
            # Only the type: a third-party message could quote the prompt.
            log.error("provider %s raised %s", name, type(exc).__name__)
            return TaskOutcome(
                TaskStatus.FAILED,
                error_code="provider_error",
                error_message=f"{name} failed unexpectedly ({type(exc).__name__})",
            )
        usage = completion.usage
        return TaskOutcome(
            TaskStatus.SUCCEEDED,
            output=completion.text,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            # Priced by the model the route asked for: what the provider says it ran may be a
            # dated snapshot name (`gpt-4o-mini-2024-07-18`) the price list knows by its family.
            cost_usd=route.prices.cost(route.model, usage),
        )

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
