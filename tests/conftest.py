"""Fixtures: a real PostgreSQL, a fresh database per test (from a migrated template), the app, keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import logfire
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.domain import Role
from app.main import create_app
from app.service.operations import AgentService
from app.service.wiring import Components
from app.settings import Settings
from app.storage import migrations
from app.storage.database import init_connection
from app.telemetry.tracing import configure_observability
from tests.postgres import postgres_server

TEST_HASH_KEY = "test-prompt-hash-key-" + "0123456789abcdef" * 2


def run_sync[T](coro: Awaitable[T]) -> T:
    """Run a coroutine to completion off the test's event loop (for sync fixtures)."""

    async def wrapper() -> T:
        return await coro

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wrapper()).result()


def url_for(server_url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{dbname}"))


async def admin_execute(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Every span (and logfire log) the service makes, kept in memory for the tests to read."""
    configure_observability(token=None, version="test")
    exporter = InMemorySpanExporter()
    logfire.DEFAULT_LOGFIRE_INSTANCE.config.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    span_exporter.clear()
    yield span_exporter
    span_exporter.clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def template_database(pg_server: str) -> Iterator[str]:
    """A database migrated once by Alembic (never `create_all`); each test copies it."""
    name = f"agent_template_{uuid.uuid4().hex[:8]}"
    run_sync(admin_execute(pg_server, f'CREATE DATABASE "{name}"'))
    migrations.upgrade(url_for(pg_server, name))
    yield name
    run_sync(admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_database_url(pg_server: str) -> Iterator[str]:
    """A database with nothing in it, for migration tests."""
    name = f"agent_empty_{uuid.uuid4().hex[:12]}"
    run_sync(admin_execute(pg_server, f'CREATE DATABASE "{name}"'))
    yield url_for(pg_server, name)
    run_sync(admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(pg_server: str, template_database: str) -> Iterator[str]:
    """A fresh database at the head migration, dropped after the test: tests never share rows."""
    name = f"agent_test_{uuid.uuid4().hex[:12]}"
    run_sync(admin_execute(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield url_for(pg_server, name)
    run_sync(admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "prompt_hash_key": TEST_HASH_KEY,
        "openai_api_key": None,
        "openai_base_url": None,
        "default_model": None,
        "auth_cache_seconds": 0,
        "db_pool_min_size": 1,
        "db_pool_max_size": 5,
        "db_connect_timeout_seconds": 2,
        "trace_requests": True,  # the tests read the spans
        "trace_sql": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for looking at what the service wrote."""
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def components(settings: Settings) -> AsyncIterator[Components]:
    """The service's parts, started, without the HTTP app."""
    built = Components(settings)
    await built.start()
    yield built
    await built.stop()


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan in one task of its own (anyio scopes must exit where they entered)."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises the start-up error
    try:
        yield app
    finally:
        stop.set()
        await task


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running(create_app(settings)) as started:
        yield started


@pytest.fixture
def app_service(app: FastAPI) -> AgentService:
    """The running app's operations (what REST and MCP call)."""
    service: AgentService = app.state.service
    return service


@pytest.fixture
def app_components(app: FastAPI) -> Components:
    """The running app's parts: keys, runner, purger, schedule."""
    components: Components = app.state.components
    return components


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        yield http


@dataclass(frozen=True)
class Caller:
    """An API key as a test holds it."""

    key_id: uuid.UUID
    key: str
    role: Role

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeCaller = Callable[[Role], Awaitable[Caller]]


@pytest.fixture
def make_caller(app_components: Components) -> MakeCaller:
    async def make(role: Role = Role.CLIENT) -> Caller:
        record, plain = await app_components.keys.create(f"{role.value}-{uuid.uuid4().hex[:6]}", role)
        return Caller(record.id, plain, role)

    return make


@pytest.fixture
async def alice(make_caller: MakeCaller) -> Caller:
    return await make_caller(Role.CLIENT)


@pytest.fixture
async def bob(make_caller: MakeCaller) -> Caller:
    return await make_caller(Role.CLIENT)


@pytest.fixture
async def auditor(make_caller: MakeCaller) -> Caller:
    return await make_caller(Role.AUDITOR)


@pytest.fixture
async def admin(make_caller: MakeCaller) -> Caller:
    return await make_caller(Role.ADMIN)


async def count_rows(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
