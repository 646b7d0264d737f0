"""The development default: a private PostgreSQL under `DATA_DIR` (./.data) when DATABASE_URL is unset."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.local_postgres import LocalPostgres

DATABASE_NAME = "agent_service"


@dataclass(frozen=True, slots=True)
class EmbeddedDatabase:
    url: str
    started_here: bool
    cluster: LocalPostgres


@contextmanager
def embedded_database(data_dir: Path, *, keep_running: bool = False) -> Iterator[EmbeddedDatabase]:
    """Start (or join) the embedded cluster; stop it afterwards if this call started it."""
    cluster = LocalPostgres(data_dir.absolute() / "pg")
    with cluster.locked():
        cluster.ensure_initialized()
        port = cluster.running_port()
        started_here = port is None
        if port is None:
            port = cluster.start()
        cluster.create_database(port, DATABASE_NAME)
    try:
        yield EmbeddedDatabase(cluster.url(port, DATABASE_NAME), started_here, cluster)
    finally:
        if started_here and not keep_running:
            cluster.stop()


def development_hash_key(data_dir: Path) -> str:
    """A PROMPT_HASH_KEY made once for the embedded database and kept beside it (mode 0600).

    Hashes must stay comparable across restarts (cache, deduplication), so the key persists.
    """
    path = data_dir.absolute() / "prompt_hash_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()
