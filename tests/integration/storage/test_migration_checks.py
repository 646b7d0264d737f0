"""The checks migration (7d8e9f0a1b2c): every enumerated CHECK is one array literal, allows exactly
what the domain's enums allow, on every audit partition too, and goes down and up with rows."""

from __future__ import annotations

import re

import asyncpg
import pytest

from app.domain import AuditAction, AuditOutcome, Channel, Role, StoreOutput, TaskStatus
from app.domain.webhooks import EVENT_TYPES, DeliveryState
from app.storage import migrations
from tests.support.postgres import run_sync
from tests.support.schema import a_key
from tests.support.settings import TEST_RESULT_KEYS

BEFORE_CHECKS = "3e4f5a6b7c8d"  # the key and session audit's

ENUMERATED = {
    ("api_key", "role"): {v.value for v in Role},
    ("api_key", "store_output"): {v.value for v in StoreOutput},
    ("agent_task", "status"): {v.value for v in TaskStatus},
    ("agent_task", "response_format"): {"json_schema", "json_object"},
    ("audit_event", "channel"): {v.value for v in Channel},
    ("audit_event", "action"): {v.value for v in AuditAction},
    ("audit_event", "outcome"): {v.value for v in AuditOutcome},
    ("webhook_delivery", "state"): {v.value for v in DeliveryState},
    ("webhook_delivery", "event_type"): set(EVENT_TYPES),
}


async def _definitions(url: str) -> dict[tuple[str, str], list[tuple[str, bool]]]:
    """Each enumerated CHECK's definition and whether it is validated, on its table and, for
    `audit_event`, on each of its partitions."""
    conn = await asyncpg.connect(url)
    try:
        found: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for table, column in ENUMERATED:
            rows = await conn.fetch(
                "SELECT pg_get_constraintdef(oid) AS definition, convalidated FROM pg_constraint WHERE conname = $1",
                f"ck_{table}_{column}",
            )
            found[(table, column)] = [(r["definition"], r["convalidated"]) for r in rows]
        return found
    finally:
        await conn.close()


async def _partitions(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_event'::regclass"))
    finally:
        await conn.close()


async def _rows(url: str) -> None:
    """A key, a task and an audit event, written with values every revision allows."""
    conn = await asyncpg.connect(url)
    try:
        key = await a_key(conn, "auditor")
        await conn.execute(
            "INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at)"
            " VALUES (gen_random_uuid(), $1, 'cancelled', 'offline:echo', 'ab', 'k', now() + interval '1 day')",
            key,
        )
        await conn.execute("INSERT INTO audit_event (channel, action, outcome) VALUES ('console', 'sign_in', 'denied')")
    finally:
        await conn.close()


async def _refuses_what_is_not_listed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in (
            "INSERT INTO audit_event (channel, action, outcome) VALUES ('rest', 'nope', 'ok')",
            "INSERT INTO audit_event (channel, action, outcome) VALUES ('fax', 'read', 'ok')",
            "UPDATE agent_task SET status = 'Succeeded'",
            "UPDATE api_key SET role = 'root'",
        ):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(statement)
    finally:
        await conn.close()


def _allowed(definition: str) -> set[str]:
    """The values a CHECK allows, in either form: `= ANY ('{a,b}'::text[])` or an IN list."""
    if literal := re.search(r"ANY \('\{(.*)\}'::text\[\]\)", definition):
        return {value.strip('"') for value in literal.group(1).split(",")}
    return set(re.findall(r"'([^']+)'::character varying", definition))


def test_every_enumerated_check_is_one_literal_allowing_exactly_the_domains_values(empty_database_url):
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    partitions = run_sync(_partitions(empty_database_url))
    for (table, column), definitions in run_sync(_definitions(empty_database_url)).items():
        assert len(definitions) == (1 + partitions if table == "audit_event" else 1), (table, column)
        for definition, validated in definitions:
            assert "ARRAY[" not in definition, definition  # one constant, not one per value
            assert _allowed(definition) == ENUMERATED[(table, column)], (table, column)
            assert validated, (table, column)
    run_sync(_rows(empty_database_url))
    run_sync(_refuses_what_is_not_listed(empty_database_url))


def test_the_checks_migration_goes_down_to_in_lists_and_up_again_with_rows_in_the_tables(empty_database_url):
    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    run_sync(_rows(empty_database_url))

    migrations.downgrade(empty_database_url, BEFORE_CHECKS)
    for (table, column), definitions in run_sync(_definitions(empty_database_url)).items():
        for definition, validated in definitions:
            assert "ARRAY[" in definition, (table, column)  # as it was
            assert validated, (table, column)
            assert _allowed(definition) == ENUMERATED[(table, column)], (table, column)
    run_sync(_refuses_what_is_not_listed(empty_database_url))

    migrations.upgrade(empty_database_url, result_keys=TEST_RESULT_KEYS)
    for definitions in run_sync(_definitions(empty_database_url)).values():
        assert all("ARRAY[" not in definition and validated for definition, validated in definitions)
    run_sync(_refuses_what_is_not_listed(empty_database_url))
    assert run_sync(_count(empty_database_url)) == (1, 1)  # the rows from before, kept both ways


async def _count(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        tasks = await conn.fetchval("SELECT count(*) FROM agent_task WHERE status = 'cancelled'")
        events = await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'sign_in'")
        return int(tasks), int(events)
    finally:
        await conn.close()
