"""The shared fixtures: a real PostgreSQL, a fresh database per test (from a migrated template), the
settings, the app and its parts, callers holding keys, the spans, a fake provider.

Every test is marked by its folder: `unit`, `integration` or `system` (`pytest -m unit`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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
from tests.support.app import Caller, MakeCaller, running
from tests.support.fake_openai import FakeOpenAI
from tests.support.postgres import admin_execute, postgres_server, run_sync, url_for
from tests.support.settings import make_settings

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, the first folder under tests/."""
    for item in items:
        try:
            layer = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


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


@pytest.fixture
def make_caller(app_components: Components) -> MakeCaller:
    async def make(role: Role = Role.CLIENT) -> Caller:
        record, plain, secret = await app_components.keys.create(f"{role.value}-{uuid.uuid4().hex[:6]}", role)
        return Caller(record.id, plain, role, secret)

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


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server (tests/support/fake_openai.py): queued replies, else normal completions."""
    with FakeOpenAI().running() as server:
        yield server


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The same server, by the short name the task, limit and replica tests give it."""
    return fake_openai
