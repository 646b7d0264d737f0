"""`agent-service keys revoke`, run in a process of its own, reaches every running server within a
second, although each of them remembers verified keys for five minutes (AUTH_CACHE_SECONDS=300)."""

from __future__ import annotations

import re
import time

import httpx

from tests.support.routes import LIST
from tests.support.service_process import ServiceProcess, cli, environment, replicas
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY


def status_within(server: ServiceProcess, key: str, want: int, *, seconds: float) -> int:
    """Ask `server` until it answers `want` or `seconds` have passed; the last status."""
    deadline = time.monotonic() + seconds
    while True:
        status = httpx.get(f"{server.base}{LIST}", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code
        if status == want or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def test_a_key_revoked_by_the_cli_is_refused_by_every_server_within_a_second(database_url):
    env = environment(
        DATABASE_URL=database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        AUTH_CACHE_SECONDS="300",
        PURGE_ENABLED="false",
        LOG_LEVEL="WARNING",
    )
    created = cli("keys", "create", "revoked-soon", env=env).stdout
    key_id = re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    key = re.search(r"\b(ask_\S+)", created).group(1)  # type: ignore[union-attr]

    with replicas(env, count=2) as servers:
        assert [status_within(server, key, 200, seconds=0) for server in servers] == [200, 200]  # now cached
        cli("keys", "revoke", key_id, env=env)

        assert [status_within(server, key, 401, seconds=1) for server in servers] == [401, 401]
