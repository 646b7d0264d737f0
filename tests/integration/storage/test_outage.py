"""A database outage is a quick 503, and the service recovers by itself when the database returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from app.devdb.cluster import LocalPostgres
from app.domain import Role
from app.main import create_app
from tests.support.app import running
from tests.support.postgres import stoppable_cluster
from tests.support.settings import make_settings


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalPostgres, int]]:
    """A cluster this test may stop and start (the shared test server must stay up)."""
    with stoppable_cluster("outage") as (cluster, port, _):
        yield cluster, port


async def test_requests_during_an_outage_get_503_and_the_service_recovers(own_cluster):
    cluster, port = own_cluster
    settings = make_settings(cluster.url(port, "outage"), db_connect_timeout_seconds=1, db_command_timeout_seconds=2)
    async with running(create_app(settings)) as app:
        _, key, _ = await app.state.components.keys.create("c", Role.CLIENT)
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            before = await http.post("/tools/run_agent_task", json={"prompt": "x"}, headers=headers)
            assert before.status_code == 200

            await asyncio.to_thread(cluster.stop)
            started = time.monotonic()
            during = await http.post("/tools/run_agent_task", json={"prompt": "x"}, headers=headers)
            read = await http.get(f"/resources/get_agent_result/{before.json()['task_id']}", headers=headers)
            ready = await http.get("/readyz")
            elapsed = time.monotonic() - started

            assert during.status_code == 503
            assert during.json()["code"] == "database_unavailable"
            assert during.headers["retry-after"] == "1"
            assert read.status_code == 503
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unreachable"
            assert elapsed < 10, "an outage must answer quickly, not hang"

            await asyncio.to_thread(cluster.start, port)
            after = await http.get(f"/resources/get_agent_result/{before.json()['task_id']}", headers=headers)
            assert after.status_code == 200
            assert (await http.get("/readyz")).status_code == 200


async def test_the_service_starts_while_the_database_is_down_and_serves_once_it_is_up(own_cluster):
    cluster, port = own_cluster
    cluster.stop()
    settings = make_settings(cluster.url(port, "outage"), db_connect_timeout_seconds=1)
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503
            await asyncio.to_thread(cluster.start, port)
            assert (await http.get("/readyz")).status_code == 200
