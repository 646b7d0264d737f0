"""Where the test suite gets its PostgreSQL: TEST_DATABASE_URL, else testcontainers, else local binaries."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    from app.local_postgres import LocalPostgres

    root = Path(tempfile.mkdtemp(prefix="agent-service-tests-"))
    cluster = LocalPostgres(root)
    cluster.ensure_initialized()
    port = cluster.start()
    try:
        yield cluster.url(port)
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
