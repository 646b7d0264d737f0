"""The development default: a private PostgreSQL under `DATA_DIR` (./.data) when DATABASE_URL is unset."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.devdb.cluster import LocalPostgres

DATABASE_NAME = "agent_service"


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded cluster and yield its database's URL; stop it afterwards if
    this call started it (a `migrate` or `keys` command next to a running `serve` leaves it up)."""
    cluster = LocalPostgres(data_dir.absolute() / "pg")
    with cluster.locked():
        cluster.ensure_initialized()
        port = cluster.running_port()
        started_here = port is None
        if port is None:
            port = cluster.start()
        cluster.create_database(port, DATABASE_NAME)
    try:
        yield cluster.url(port, DATABASE_NAME)
    finally:
        if started_here:
            cluster.stop()


def development_result_keys(data_dir: Path) -> str:
    """A RESULT_ENCRYPTION_KEYS ring of one key, made once for the embedded database and kept
    beside it (mode 0600): results sealed in one run must open in the next."""
    path = data_dir.absolute() / "result_encryption_keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"dev1:{base64.b64encode(secrets.token_bytes(32)).decode()}")
    return path.read_text().strip()


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


def development_signing_key(data_dir: Path) -> str:
    """An AUDIT_SIGNING_KEY (base64 of 32 random bytes) made once for the embedded database, kept
    beside it (mode 0600): the seals already made stay verifiable across restarts."""
    path = data_dir.absolute() / "audit_signing_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()
