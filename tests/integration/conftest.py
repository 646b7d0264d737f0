"""Fixtures of the privacy tests (tests/integration/test_privacy*.py): a unique marker, every
payload-logging library at DEBUG, and the service in front of a fake OpenAI server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.domain import Role
from app.main import create_app
from app.telemetry.logs import PAYLOAD_LOGGERS
from tests.support.app import Caller, running
from tests.support.fake_openai import FakeOpenAI
from tests.support.settings import make_settings


@pytest.fixture
def marker() -> str:
    return f"PRIVATE-MARKER-{uuid.uuid4().hex}"


@pytest.fixture
def chatty_libraries() -> Iterator[None]:
    """The worst case: every library that can log payloads set to DEBUG before the app starts."""
    saved = {name: logging.getLogger(name).level for name in PAYLOAD_LOGGERS}
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
async def gateway(
    database_url, chatty_libraries
) -> AsyncIterator[tuple[httpx.AsyncClient, Caller, FakeOpenAI, object]]:
    with FakeOpenAI().running() as fake:
        settings = make_settings(
            database_url,
            openai_api_key="sk-test-not-a-real-key",
            openai_base_url=fake.base_url,
            provider_timeout_seconds=2,
            log_level="DEBUG",
        )
        async with running(create_app(settings)) as app:
            record, plain, _ = await app.state.components.keys.create("privacy", Role.CLIENT)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield http, Caller(record.id, plain, Role.CLIENT), fake, app.state.components
