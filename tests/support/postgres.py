"""Where the test suite gets its PostgreSQL (TEST_DATABASE_URL, else testcontainers, else local
binaries), a cluster of a test's own that it may stop and start, and statements run as its superuser."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from app.devdb.cluster import LocalPostgres


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


def docker_answers() -> bool:
    """Whether a Docker engine answers its ping (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            name, _, port = host.removeprefix("tcp://").partition(":")
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except (OSError, ValueError):
        return False


@contextmanager
def postgres_server() -> Iterator[str]:
    """A superuser URL (to the `postgres` database) of a server the tests may create databases on."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from app.devdb.cluster import LocalPostgres

    root = Path(tempfile.mkdtemp(prefix="agent-service-tests-"))
    cluster = LocalPostgres(root)
    cluster.ensure_initialized()
    port = cluster.start()
    try:
        yield cluster.url(port)
    finally:
        cluster.stop()
        _remove(root)


@contextmanager
def stoppable_cluster(dbname: str) -> Iterator[tuple[LocalPostgres, int, str]]:
    """A migrated cluster of the test's own, which it may stop and start (the shared test
    server must stay up): the cluster, its port and the database's URL."""
    import pytest

    from app.devdb.cluster import LocalPostgres, PostgresNotFoundError, find_bin_dir, free_port
    from app.storage import migrations

    try:
        find_bin_dir()
    except PostgresNotFoundError:
        pytest.skip("needs local PostgreSQL server binaries")
    root = Path(tempfile.mkdtemp(prefix=f"agent-service-{dbname}-"))
    cluster = LocalPostgres(root)
    cluster.ensure_initialized()
    port = cluster.start(free_port())
    cluster.create_database(port, dbname)
    url = cluster.url(port, dbname)
    migrations.upgrade(url)
    try:
        yield cluster, port, url
    finally:
        cluster.stop()
        _remove(root)


def _remove(root: Path) -> None:
    import shutil
    import subprocess

    if os.geteuid() == 0:
        # The cluster's files belong to the `postgres` user; root may remove them all the same.
        subprocess.run(["rm", "-rf", str(root)], check=False)
    else:
        shutil.rmtree(root, ignore_errors=True)
