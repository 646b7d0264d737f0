"""Streamed answers (`POST /tools/run_agent_task?stream=true`) from a real `agent-service serve`,
read over real HTTP as a client reads server-sent events.

The provider is the fake OpenAI-compatible server, streaming the pieces each test gives it. One
service process for the module, with a short STREAM_KEEPALIVE_SECONDS so that keep-alive comments
show within a test; every reader below skips comments, as an EventSource does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.postgres import admin_execute, run_sync, url_for
from tests.support.routes import GET, RUN
from tests.support.service_process import ServiceProcess, cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

KEEPALIVE_SECONDS = 0.4
KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")
# Multibyte characters, a word split across pieces, whitespace-only pieces, every kind of line end.
PIECES = ["Über", " den", " Wolken", " ☁️", " ", "\n", "\t", "un", "bekannt\r\n", "🐉🐉", "\r", " 終わり", "  "]


@dataclass
class Served:
    service: ServiceProcess
    key: str
    fake: FakeOpenAI
    database_url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def served(pg_server: str, template_database: str) -> Iterator[Served]:
    """One `agent-service serve` on a database of its own, the fake provider, and a client key."""
    name = f"agent_stream_{uuid.uuid4().hex[:12]}"
    run_sync(admin_execute(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    database_url = url_for(pg_server, name)
    try:
        with FakeOpenAI().running() as fake:
            env = environment(
                DATABASE_URL=database_url,
                PROMPT_HASH_KEY=TEST_HASH_KEY,
                AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
                OPENAI_API_KEY="sk-test",
                OPENAI_BASE_URL=fake.base_url,
                DEFAULT_MODEL="openai:gpt-test",
                PROVIDER_MAX_RETRIES="0",
                PROVIDER_TIMEOUT_SECONDS="20",
                PROVIDER_REQUEST_TIMEOUT_SECONDS="5",
                STREAM_KEEPALIVE_SECONDS=str(KEEPALIVE_SECONDS),
                AUTH_CACHE_SECONDS="0",
                PURGE_ENABLED="false",
                LOG_LEVEL="WARNING",
            )
            key = KEY.search(cli("keys", "create", "streamer", env=env).stdout).group(0)  # type: ignore[union-attr]
            with serving(env, ready="/readyz") as service:
                yield Served(service, key, fake, database_url)
    finally:
        run_sync(admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fake(served: Served) -> Iterator[FakeOpenAI]:
    served.fake.replies.clear()
    served.fake.hang_ups.clear()
    yield served.fake
    served.fake.replies.clear()


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.service.base, timeout=30) as client:
        yield client


@pytest.fixture
async def rows(served: Served) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(served.database_url)
    yield conn
    await conn.close()


@dataclass
class Event:
    event: str
    id: str | None
    data: Any


@dataclass
class Stream:
    """What a client read: the answer's head, the events in order, the comments between them."""

    response: httpx.Response
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def deltas(self) -> list[str]:
        return [e.data["text"] for e in self.events if e.event == "delta"]

    @property
    def names(self) -> list[str]:
        return [e.event for e in self.events]

    @property
    def task_id(self) -> str:
        return str(self.events[0].data["task_id"])


async def events_of(response: httpx.Response) -> AsyncIterator[tuple[Event | None, str | None]]:
    """Server-sent events as an EventSource parses them: (event, None) or (None, comment)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield None, line[1:].strip()
        elif line == "":
            if fields:
                yield Event(fields.get("event", "message"), fields.get("id"), json.loads(fields["data"])), None
            fields = {}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def _prompt() -> str:
    return f"tell me about the clouds {uuid.uuid4().hex}"


async def read_stream(http: httpx.AsyncClient, served: Served, body: dict[str, Any], **params: str) -> Stream:
    """POST a streamed task and read its events to the end."""
    async with http.stream(
        "POST", RUN, params={"stream": "true", **params}, json=body, headers=served.headers
    ) as response:
        stream = Stream(response)
        if response.status_code != 200:
            await response.aread()
            return stream
        async for event, comment in events_of(response):
            if event is not None:
                stream.events.append(event)
            else:
                stream.comments.append(comment or "")
    return stream


async def stored(http: httpx.AsyncClient, served: Served, task_id: str) -> dict[str, Any]:
    response = await http.get(GET.format(task_id), headers=served.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def settled(http: httpx.AsyncClient, served: Served, task_id: str) -> dict[str, Any]:
    """The task's row once it has finished (at most 10 s)."""
    deadline = time.monotonic() + 10
    while (result := await stored(http, served, task_id))["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, "the task did not finish"
        await asyncio.sleep(0.05)
    return result


# -- a streamed answer ------------------------------------------------------------------------------


async def test_the_pieces_arrive_as_sent_and_join_up_to_the_stored_output_byte_for_byte(served, fake, http, rows):
    fake.enqueue(Reply(chunks=PIECES))

    stream = await read_stream(http, served, {"prompt": _prompt()})

    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert stream.response.headers["x-accel-buffering"] == "no"
    assert stream.names == ["task", *["delta"] * len(PIECES), "result"]
    assert [e.id for e in stream.events] == [str(n) for n in range(1, len(stream.events) + 1)]
    task = stream.events[0].data
    assert (task["status"], task["output"]) == ("running", None)
    assert stream.deltas == PIECES
    result = stream.events[-1].data
    row = await stored(http, served, stream.task_id)
    assert result["output"].encode() == "".join(stream.deltas).encode() == row["output"].encode()
    assert result == {**row, "legal_hold": False}, "the result event is the non-streamed answer"
    assert (result["status"], result["task_id"]) == ("succeeded", task["task_id"])
    assert result["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": len(PIECES),
        "total_tokens": 7 + len(PIECES),
        "cost_usd": None,  # gpt-test is in no price list
    }
    tokens = await rows.fetchval("SELECT total_tokens FROM agent_task WHERE id = $1", uuid.UUID(stream.task_id))
    assert tokens == 7 + len(PIECES), "usage is recorded for a streamed call"
    assert fake.requests[-1]["stream"] is True
    assert fake.requests[-1]["stream_options"] == {"include_usage": True}


async def test_the_result_event_is_the_same_json_as_the_answer_without_stream(served, fake, http):
    fake.enqueue(Reply(chunks=["same", " shape"]), Reply(chunks=["same", " shape"]))

    streamed = (await read_stream(http, served, {"prompt": _prompt(), "cache": False})).events[-1].data
    plain = (await http.post(RUN, json={"prompt": _prompt(), "cache": False}, headers=served.headers)).json()

    assert list(streamed) == list(plain)
    assert streamed["output"] == plain["output"] == "same shape"


async def test_a_cache_hit_streams_the_stored_answer_as_one_piece(served, fake, http):
    body = {"prompt": _prompt()}
    fake.enqueue(Reply(chunks=["cached", " once"]))
    first = await read_stream(http, served, body)

    again = await read_stream(http, served, body)

    assert first.deltas == ["cached", " once"]
    assert again.names == ["task", "delta", "result"]
    assert again.events[0].data["status"] == "succeeded"
    assert again.events[0].data["cached"] is True
    assert again.deltas == ["cached once"]
    assert again.events[-1].data["cached"] is True
    assert (await stored(http, served, again.task_id))["output"] == "cached once"
    assert fake.count == len(fake.requests)  # (the same server across the module)
    assert sum(1 for r in fake.requests if r["messages"][0]["content"] == body["prompt"]) == 1


async def test_a_provider_that_cannot_stream_sends_its_whole_answer_as_one_piece(served, fake, http):
    stream = await read_stream(http, served, {"prompt": "three little words", "model": "example:any", "cache": False})

    assert stream.names == ["task", "delta", "result"]
    assert stream.deltas == ["example provider: 3 words"]
    assert (await stored(http, served, stream.task_id))["output"] == "example provider: 3 words"


async def test_keep_alive_comments_come_while_the_provider_is_quiet(served, fake, http):
    fake.enqueue(Reply(chunks=["at", " last"], chunk_delay=KEEPALIVE_SECONDS * 3))

    stream = await read_stream(http, served, {"prompt": _prompt(), "cache": False})

    assert stream.deltas == ["at", " last"]
    assert stream.comments.count("keep-alive") >= 2


# -- when it does not end well -------------------------------------------------------------------


async def test_the_task_still_finishes_and_is_stored_when_the_client_goes_away(served, fake, http):
    pieces = ["one", " two", " three", " four", " five"]
    fake.enqueue(Reply(chunks=pieces, chunk_delay=0.3))
    body = {"prompt": _prompt(), "cache": False}

    async with http.stream("POST", RUN, params={"stream": "true"}, json=body, headers=served.headers) as response:
        async for event, _ in events_of(response):
            if event is not None and event.event == "task":
                task_id = event.data["task_id"]
            if event is not None and event.event == "delta":
                break  # and the connection is closed
    row = await settled(http, served, task_id)

    assert row["status"] == "succeeded"
    assert row["output"] == "one two three four five"
    assert fake.hang_ups == [], "the provider was read to the end"


async def test_a_connection_dropped_mid_answer_ends_with_an_error_event_and_a_failed_task(served, fake, http, rows):
    fake.enqueue(Reply(chunks=["half", " of", " it"], break_after=2))

    stream = await read_stream(http, served, {"prompt": _prompt(), "cache": False})

    assert stream.names == ["task", "delta", "delta", "error"]
    assert stream.deltas == ["half", " of"]
    error = {"code": "provider_error", "message": "openai dropped the connection mid-answer"}
    assert stream.events[-1].data == error
    row = await stored(http, served, stream.task_id)
    assert (row["status"], row["error"], row["output"]) == ("failed", error, None)


async def test_a_cancel_during_the_stream_ends_it_with_a_cancelled_error_event(served, fake, http):
    fake.enqueue(Reply(chunks=["never", " all", " of", " it"], chunk_delay=0.5))
    body = {"prompt": _prompt(), "cache": False}
    seen: list[Event] = []

    async with http.stream("POST", RUN, params={"stream": "true"}, json=body, headers=served.headers) as response:
        async for event, _ in events_of(response):
            if event is None:
                continue
            seen.append(event)
            if event.event == "delta":
                cancel = await http.post(f"{GET.format(seen[0].data['task_id'])}/cancel", headers=served.headers)
                assert cancel.status_code == 200, cancel.text

    assert [e.event for e in seen] == ["task", "delta", "error"]
    assert seen[-1].data["code"] == "cancelled"
    row = await stored(http, served, seen[0].data["task_id"])
    assert (row["status"], row["error"]["code"], row["output"]) == ("cancelled", "cancelled", None)
    deadline = time.monotonic() + 5
    while not fake.hang_ups and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(fake.hang_ups) == 1, "the provider call was stopped"


async def test_stream_with_wait_false_is_refused_before_anything_is_written(served, fake, http, rows):
    prompt = _prompt()
    before = await rows.fetchval("SELECT count(*) FROM agent_task")

    stream = await read_stream(http, served, {"prompt": prompt}, wait="false")

    assert stream.response.status_code == 422
    assert stream.response.json()["code"] == "stream_requires_wait"
    assert prompt not in stream.response.text
    assert await rows.fetchval("SELECT count(*) FROM agent_task") == before
    assert fake.requests == [] or all(r["messages"][0]["content"] != prompt for r in fake.requests)


async def test_a_refused_task_is_an_ordinary_error_answer_not_a_stream(served, fake, http):
    stream = await read_stream(http, served, {"prompt": "hello", "model": "nowhere:x"})

    assert stream.response.status_code == 422
    assert stream.response.headers["content-type"] == "application/json"
    assert stream.response.json()["code"] == "unknown_model"


# -- answers that arrive whole --------------------------------------------------------------------


async def test_an_identical_task_in_flight_is_followed_and_its_answer_streamed_as_one_piece(served, fake, http):
    body = {"prompt": _prompt()}
    fake.enqueue(Reply(chunks=["shared", " by", " both"], chunk_delay=0.3))

    async def a_moment_later() -> Stream:
        await asyncio.sleep(0.3)  # the leader's row is in flight by then
        return await read_stream(http, served, body)

    leader, follower = await asyncio.gather(read_stream(http, served, body), a_moment_later())

    assert leader.deltas == ["shared", " by", " both"]
    assert follower.deltas == ["shared by both"]
    assert follower.events[-1].data["cached"] is True
    assert sum(1 for r in fake.requests if r["messages"][0]["content"] == body["prompt"]) == 1


async def test_an_idempotent_replay_streams_the_first_answer(served, fake, http):
    body = {"prompt": _prompt(), "cache": False}
    headers = {**served.headers, "Idempotency-Key": f"order-{uuid.uuid4().hex[:8]}"}
    fake.enqueue(Reply(chunks=["charged", " once"]))
    answers = []
    for _ in range(2):
        async with http.stream("POST", RUN, params={"stream": "true"}, json=body, headers=headers) as response:
            answers.append((response, [event async for event, _ in events_of(response) if event is not None]))

    (first, first_events), (again, again_events) = answers
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again_events[0].data["task_id"] == first_events[0].data["task_id"]
    assert [e.data["text"] for e in again_events if e.event == "delta"] == ["charged once"]
    assert again_events[-1].data == first_events[-1].data | {"legal_hold": False}


async def test_an_answer_that_is_not_stored_is_streamed_and_never_written(served, fake, http, rows):
    fake.enqueue(Reply(chunks=["for", " your", " eyes", " only"]))

    stream = await read_stream(http, served, {"prompt": _prompt(), "store": False, "context": {"k": "v"}})

    assert stream.deltas == ["for", " your", " eyes", " only"]
    result = stream.events[-1].data
    assert (result["output"], result["context"], result["output_stored"]) == ("for your eyes only", {"k": "v"}, False)
    row = await stored(http, served, stream.task_id)
    assert (row["status"], row["output"], row["output_stored"]) == ("succeeded", None, False)
    sealed = await rows.fetchval("SELECT output FROM agent_task WHERE id = $1", uuid.UUID(stream.task_id))
    assert sealed is None
