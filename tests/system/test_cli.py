"""The `agent-service` command line on a real database: keys are created with limits that can be
changed later (each act audited, channel `cli`), two `purge` commands at once delete every expired
row exactly once, and the embedded database's password is shown only to whoever asks for it."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.support.postgres import run_sync
from tests.support.retention import add_tasks, owner_key
from tests.support.service_process import CLI, cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY, UNUSED_DB


def test_keys_are_created_with_limits_and_their_limits_can_be_changed(empty_database_url):
    env = environment(
        DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY, AUDIT_SIGNING_KEY=TEST_SIGNING_KEY
    )
    cli("migrate", env=env)
    created = cli("keys", "create", "batch-job", "--rate-limit", "120", "--max-running", "4", env=env).stdout
    key_id = re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    assert "limits: rate/min=120 running=4" in created

    changed = cli("keys", "limits", key_id, "--max-running", "0", env=env).stdout
    listed = cli("keys", "list", env=env).stdout

    assert "rate/min=default running=none" in changed  # a limit left out goes back to the default
    assert "rate/min=default running=none" in listed
    refused = cli("keys", "create", "x", "--rate-limit", "-1", env=env, check=False)
    assert refused.returncode != 0
    cli("keys", "revoke", key_id, env=env)
    # Each act is in the audit log, channel `cli`, naming the key (and never the key itself).
    acts = run_sync(_key_events(empty_database_url))
    assert [(action, channel, detail_key) for action, channel, detail_key, _ in acts] == [
        ("key_create", "cli", key_id),
        ("key_limits", "cli", key_id),
        ("key_revoke", "cli", key_id),
    ]
    plain = re.search(r"key:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    assert all(plain not in detail for *_, detail in acts)


async def _key_events(url: str) -> list[tuple[str, str, str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT action, channel, detail->>'key_id', detail::text FROM audit_event"
            " WHERE action LIKE 'key_%' ORDER BY id"
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await conn.close()


def test_a_keys_data_policy_is_set_at_creation_changed_by_limits_and_shown_by_list(empty_database_url):
    env = environment(DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY)
    cli("migrate", env=env)
    created = cli(
        "keys", "create", "private-job", "--store-output", "never", "--max-retention-days", "7", env=env
    ).stdout
    key_id = re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    other = cli("keys", "create", "ordinary", env=env).stdout
    other_id = re.search(r"id:\s+(\S+)", other).group(1)  # type: ignore[union-attr]
    assert "policy: store=never retention-days=7" in created
    assert "policy: store=allowed retention-days=default" in other

    cli("keys", "limits", other_id, "--store-output", "never", "--max-retention-days", "2.5", env=env)
    listed = {line.split()[0]: line for line in cli("keys", "list", env=env).stdout.splitlines()[1:]}

    assert "store=never retention-days=7" in listed[key_id]
    assert "store=never retention-days=2.5" in listed[other_id]
    # A limit left out goes back to its default; the data policy left out stays: never loosened unasked.
    kept = cli("keys", "limits", other_id, "--rate-limit", "5", env=env).stdout
    assert "store=never retention-days=2.5" in kept
    back = cli("keys", "limits", other_id, "--store-output", "allowed", "--max-retention-days", "0", env=env).stdout
    assert "store=allowed retention-days=default" in back
    for refused in (["--store-output", "sometimes"], ["--max-retention-days", "0"]):
        assert cli("keys", "create", "x", *refused, env=env, check=False).returncode != 0


def test_a_keys_budgets_are_set_at_creation_kept_when_left_out_and_removed_with_0(empty_database_url):
    env = environment(DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY)
    cli("migrate", env=env)
    created = cli("keys", "create", "kg", "--monthly-tokens", "5000000", "--monthly-usd", "250.5", env=env).stdout
    key_id = re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    assert "budget: monthly tokens=5000000 usd=250.5" in created

    kept = cli("keys", "limits", key_id, "--rate-limit", "5", env=env).stdout
    raised = cli("keys", "limits", key_id, "--monthly-usd", "400", env=env).stdout
    removed = cli("keys", "limits", key_id, "--monthly-tokens", "0", env=env).stdout
    listed = cli("keys", "list", env=env).stdout

    assert "monthly tokens=5000000 usd=250.5" in kept  # a budget left out is never loosened
    assert "monthly tokens=5000000 usd=400" in raised
    assert "monthly tokens=none usd=400" in removed
    assert "monthly tokens=none usd=400" in listed
    for refused in (["--monthly-tokens", "-1"], ["--monthly-usd", "-5"], ["--monthly-usd", "1e15"]):
        assert cli("keys", "create", "x", *refused, env=env, check=False).returncode != 0


def test_two_purge_commands_at_once_delete_every_row_exactly_once(database_url):
    async def seed() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await add_tasks(conn, await owner_key(conn), 3_000, expires_in=-timedelta(minutes=1))
        finally:
            await conn.close()

    run_sync(seed())
    env = environment(
        DATABASE_URL=database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        PURGE_BATCH_SIZE="100",
    )
    dry = cli("purge", "--dry-run", env=env).stdout
    assert "would delete: 3000 expired tasks" in dry
    runs = [
        subprocess.Popen([CLI, "purge"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    deleted = 0
    for out, _ in outputs:
        if match := re.search(r"deleted: (\d+) expired tasks", out):
            deleted += int(match.group(1))
        else:
            assert "Another process is purging" in out
    assert deleted == 3_000


def test_holds_are_placed_listed_and_released_from_the_command_line_and_audited(database_url):
    async def seed() -> tuple[str, str]:
        conn = await asyncpg.connect(database_url)
        try:
            owner = await owner_key(conn)
            [task] = await add_tasks(conn, owner, 1, expires_in=timedelta(days=1))
            return str(owner), str(task)
        finally:
            await conn.close()

    async def audited() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT actor_id, channel, action, task_id FROM audit_event ORDER BY id")
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    owner, task = run_sync(seed())
    env = environment(DATABASE_URL=database_url, PROMPT_HASH_KEY=TEST_HASH_KEY, AUDIT_SIGNING_KEY=TEST_SIGNING_KEY)
    on_task = cli("holds", "add", "--task", task, "--reference", "CASE-2026-17", env=env).stdout
    on_owner = cli("holds", "add", "--owner", owner, "--reference", "CASE/2026:18", env=env).stdout
    hold_id = re.search(r"Placed legal hold (\S+)", on_task).group(1)  # type: ignore[union-attr]
    listed = cli("holds", "list", env=env).stdout
    released = cli("holds", "release", hold_id, env=env).stdout
    after = cli("holds", "list", env=env).stdout

    assert f"task {task}" in on_task
    assert f"owner {owner}" in on_owner
    assert {"CASE-2026-17", "CASE/2026:18"} <= set(listed.split())
    assert f"Released legal hold {hold_id}" in released
    assert "CASE-2026-17" not in after
    assert "CASE/2026:18" in after
    for refused in (
        cli("holds", "add", "--reference", "CASE-1", env=env, check=False),  # no target
        cli("holds", "add", "--task", task, "--owner", owner, "--reference", "CASE-1", env=env, check=False),
        cli("holds", "add", "--task", task, "--reference", "not free text", env=env, check=False),
        cli("holds", "release", hold_id, env=env, check=False),  # no longer in force
    ):
        assert refused.returncode == 1, refused
        assert "not free text" not in refused.stderr
    assert run_sync(audited()) == [
        (None, "cli", "hold_place", uuid.UUID(task)),
        (None, "cli", "hold_place", None),
        (None, "cli", "hold_release", uuid.UUID(task)),
    ]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder the unprivileged `postgres` user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="agent-service-cli-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


async def test_serve_masks_the_embedded_database_password_and_devdb_url_prints_the_url_that_connects(workdir):
    env = environment(AUTH_CACHE_SECONDS="0")
    with serving(env, cwd=workdir) as service:
        url = cli("devdb", "url", env=env, cwd=workdir).stdout.strip()
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "agent_service"
        finally:
            await conn.close()
    password = (workdir / ".data" / "pg" / "password").read_text().strip()

    assert "Embedded PostgreSQL (development): postgresql://postgres:***@127.0.0.1:" in service.output()
    assert password not in service.output()
    assert f"postgres:{password}@" in url
    stopped = cli("devdb", "url", env=env, cwd=workdir, check=False)
    assert stopped.returncode == 1
    assert "not running" in stopped.stderr
    assert password not in stopped.stdout + stopped.stderr


def test_devdb_url_refuses_when_a_database_url_is_configured():
    env = environment(DATABASE_URL=UNUSED_DB, PROMPT_HASH_KEY=TEST_HASH_KEY, AUDIT_SIGNING_KEY=TEST_SIGNING_KEY)
    configured = cli("devdb", "url", env=env, check=False)

    assert configured.returncode == 1
    assert "DATABASE_URL is set" in configured.stderr
    assert "nothing@" not in configured.stdout + configured.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the embedded cluster as another user")
def test_serve_explains_a_data_dir_the_database_user_cannot_reach_without_a_traceback():
    with tempfile.TemporaryDirectory() as private:  # mode 0700: the postgres user cannot enter it
        env = environment(DATA_DIR=str(Path(private) / ".data"))
        refused = cli("serve", "--port", "1", env=env, check=False)

    assert refused.returncode == 1
    assert "cannot reach" in refused.stderr + refused.stdout
    assert "chmod o+x" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr + refused.stdout


def test_the_audit_trail_is_sealed_verified_exported_and_checked_offline_from_the_command_line(database_url, tmp_path):
    env = environment(DATABASE_URL=database_url, PROMPT_HASH_KEY=TEST_HASH_KEY, AUDIT_SIGNING_KEY=TEST_SIGNING_KEY)

    async def sql(statement: str) -> object:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    run_sync(
        sql("INSERT INTO audit_event (channel, action, outcome) SELECT 'rest', 'read', 'ok' FROM generate_series(1, 5)")
    )
    assert "Sealed 5 audit events in 1 seals." in cli("audit", "seal", env=env).stdout
    assert "Audit trail verified: 1 seals (1..1) over 5 events, from genesis" in cli("audit", "verify", env=env).stdout

    export, pem = tmp_path / "audit.jsonl", tmp_path / "audit.pem"
    cli("audit", "export", "--since", "2026-01-01", "--until", "2100-01-01", "--output", str(export), env=env)
    pem.write_text(cli("audit", "public-key", env=env).stdout)
    offline = environment()  # no database: the file and the key are enough
    checked = cli("audit", "verify-export", str(export), "--public-key", str(pem), env=offline)
    assert "Export verified: 5 events in 1 seals" in checked.stdout
    data = bytearray(export.read_bytes())
    at = data.index(b'"outcome":"ok"') + len('"outcome":"')
    data[at] = ord("O")  # one byte of the first event
    export.write_bytes(bytes(data))
    flipped = cli("audit", "verify-export", str(export), "--public-key", str(pem), env=offline, check=False)
    assert flipped.returncode == 1
    assert "Export verification FAILED at line 2: event 1 does not match its digest in seal 1" in flipped.stderr

    run_sync(sql("UPDATE audit_event SET outcome = 'denied' WHERE id = 3"))
    failed = cli("audit", "verify", env=env, check=False)
    assert failed.returncode == 1
    assert "FAILED at seal 1: event 3 was modified" in failed.stderr
    assert "Traceback" not in failed.stderr
