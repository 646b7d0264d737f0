"""Streaming a task's answer as it is generated (issue 14): the task, its text pieces, its end.

A streamed task is an ordinary waited-for task: planned, admitted (cache, single flight,
idempotency, limits) and run by the same runner, whose final write is the one every task
has. The only difference is the runner's `Work.on_delta`, a sink that queues each piece of
the answer for the caller as the provider sends it; the stored output is exactly those
pieces joined (`app.llm.base.stream_completion`). The caller going away stops the reading,
never the task: the job runs on to its stored end. An answer that arrives whole (a cache hit,
a replay, an identical task in flight, a provider that cannot stream) is one piece.

`AgentService` inherits these operations; the REST face turns the events into server-sent events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from app.access.encryption import ResultVault
from app.domain import Actor, Channel, DatabaseUnavailable, InvalidInput, Principal, TaskRecord, TaskStatus
from app.schemas import AgentResult, AgentTask
from app.service.runner import Finished, TaskRunner
from app.service.submission import Admission, Planner, cache_hit_observed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer, to append to what came before."""

    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Done:
    """The task succeeded: its whole result, as the non-streamed answer would be."""

    result: AgentResult = field(repr=False)


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream ends without an answer: the failed or cancelled task's error code and message
    (the same as its stored `error`), or why the stream itself could not go on."""

    code: str
    message: str


StreamItem = Delta | Done | Failed


@dataclass(frozen=True, slots=True)
class TaskStream:
    """A streamed task: the task as it starts (running; finished for a cache hit or a replay),
    then its events, ending with one `Done` or one `Failed`."""

    task: AgentResult = field(repr=False)
    events: AsyncIterator[StreamItem] = field(repr=False)
    keepalive_seconds: float
    replayed: bool = False


class _Sink:
    """The pieces of a running job's answer, queued for the stream that reads them. Once the
    stream has gone (the caller left), pieces are dropped: the job does not wait for anyone."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()  # None: the job has ended
        self.open = True

    def put(self, text: str) -> None:
        if self.open:
            self.queue.put_nowait(text)

    def end(self) -> None:
        if self.open:
            self.queue.put_nowait(None)

    def close(self) -> None:
        self.open = False
        while not self.queue.empty():
            self.queue.get_nowait()

    def __repr__(self) -> str:  # never the text
        return f"_Sink(queued={self.queue.qsize()}, open={self.open})"


class StreamingOperations:
    """Running a task with its answer streamed. Set up by `AgentService.__init__`."""

    _planner: Planner
    _admission: Admission
    _runner: TaskRunner
    _vault: ResultVault
    _traced: bool

    async def start_stream(
        self,
        principal: Principal,
        task: AgentTask,
        *,
        channel: Channel,
        request_id: str | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
    ) -> TaskStream:
        """Store the task and start it, like `run_task` with `wait`; the answer comes as events.

        Everything that refuses a task (validation, limits, an idempotency conflict) is raised
        here, before the first event, so that it is an ordinary error answer. A stream is the
        waiting answer: without `wait` it is refused (`stream_requires_wait`), before anything
        is written.
        """
        if not wait:
            raise InvalidInput(
                "a streamed answer is the answer waited for: stream=true cannot go with wait=false",
                code="stream_requires_wait",
            )
        plan = self._planner.plan(principal, task, idempotency_key)
        sink = _Sink()
        plan = replace(plan, work=replace(plan.work, on_delta=sink.put))
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        if idempotency_key is not None and (replay := await self._admission.replay(plan, actor, wait=True)) is not None:
            return self._whole(replay, replayed=True)
        try:
            record, follow = await self._admission.admit(plan, actor, principal, pending=False)
        except asyncpg.UniqueViolationError:  # the same Idempotency-Key, a moment earlier
            if (replay := await self._admission.replay(plan, actor, wait=True)) is not None:
                return self._whole(replay, replayed=True)
            raise
        if record.status.finished:  # a cache hit
            cache_hit_observed(record, plan.work, traced=self._traced)
            return self._whole(record)
        job = self._runner.launch(record.id, plan.work, pending=False, follow=follow)
        context = None if plan.stored else task.context
        return TaskStream(
            self._opened(record),
            self._follow(record.id, job, sink, context),
            keepalive_seconds=self._runner.stream_keepalive_seconds,
        )

    def _opened(self, record: TaskRecord) -> AgentResult:
        return AgentResult.from_record(record, self._vault.open(record))

    def _whole(self, record: TaskRecord, *, replayed: bool = False) -> TaskStream:
        """A task that is already answered (a cache hit, a replay): its answer as one piece."""
        result = self._opened(record)

        async def events() -> AsyncIterator[StreamItem]:
            for item in _ending(result, sent=False):
                yield item

        return TaskStream(result, events(), keepalive_seconds=self._runner.stream_keepalive_seconds, replayed=replayed)

    async def _follow(
        self, task_id: uuid.UUID, job: asyncio.Task[Finished], sink: _Sink, context: dict[str, Any] | None
    ) -> AsyncIterator[StreamItem]:
        """The job's pieces as they come, then its end. Leaving early (the caller went away)
        stops only this reading: `outcome` shields the job, which runs on to its stored end."""
        ended = asyncio.ensure_future(self._runner.outcome(task_id, job))
        ended.add_done_callback(lambda _: sink.end())
        sent = False
        try:
            while (text := await sink.queue.get()) is not None:
                sent = True
                yield Delta(text)
            try:
                finished = ended.result()
            except DatabaseUnavailable:
                yield Failed("database_unavailable", "the database is unavailable; the task's outcome is not known")
                return
            except Exception as exc:  # the row says where it stands; the lease sweep settles it
                log.error("a streamed task's job ended with %s", type(exc).__name__)  # the type only
                yield Failed("internal_error", "the task could not be finished")
                return
            if finished.record is None:
                yield Failed("not_found", "the task was erased while it ran")
                return
            result = self._opened(finished.record)
            if context is not None:  # not stored: the one time this answer is seen, from memory
                result = result.with_answer(finished.record, finished.answer, context)
            for item in _ending(result, sent=sent):
                yield item
        finally:
            sink.close()
            if not ended.done():
                ended.cancel()  # only the waiter: the job itself is shielded


def _ending(result: AgentResult, *, sent: bool) -> list[StreamItem]:
    """How a stream ends for a finished task. An answer none of which was streamed (copied from a
    cache hit or an identical task) is sent as one piece first, so the pieces always join up to
    the output."""
    if result.status is TaskStatus.SUCCEEDED:
        whole = [Delta(result.output)] if not sent and result.output else []
        return [*whole, Done(result)]
    if result.error is not None:  # failed, or cancelled: the code and message stored with it
        return [Failed(result.error.code, result.error.message)]
    return [Failed("interrupted", "the service stopped before the task finished; its row says where it stands")]
