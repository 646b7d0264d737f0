"""The sealed audit trail on real PostgreSQL: seals chain and sign the events, `verify` names the
first event changed, inserted or deleted by SQL, late commits never break the chain, and the
purge removes whole sealed ranges only."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from app.domain.seals import GENESIS_DIGEST
from app.service.trail import AuditTrail
from app.service.wiring import Components
from tests.support.retention import add_audit_events

pytestmark = pytest.mark.usefixtures("components", "spans")  # spans: the purge traces itself


@pytest.fixture
def trail(components: Components) -> AuditTrail:
    return components.trail


async def test_a_seal_covers_every_committed_event_and_chains_to_the_one_before(trail, db):
    await add_audit_events(db, 3, age=timedelta(0))
    first = await trail.seal()
    await add_audit_events(db, 2, age=timedelta(0))
    second = await trail.seal()

    assert (first.seals, first.events, second.seals, second.events) == (1, 3, 1, 2)
    seals = await db.fetch("SELECT id, previous_digest, digest, event_ids FROM audit_seal ORDER BY id")
    assert seals[0]["previous_digest"] == GENESIS_DIGEST
    assert seals[1]["previous_digest"] == seals[0]["digest"]
    assert sorted(seals[0]["event_ids"] + seals[1]["event_ids"]) == [
        r["id"] for r in await db.fetch("SELECT id FROM audit_event ORDER BY id")
    ]
    report = await trail.verify()
    assert report.ok, report.problem
    assert (report.seals, report.events, report.start, report.unsealed) == (2, 5, "genesis", 0)


async def test_sealing_nothing_writes_no_seal(trail, db):
    assert (await trail.seal()).seals == 0
    assert await db.fetchval("SELECT count(*) FROM audit_seal") == 0


async def test_changing_one_event_with_sql_makes_verify_name_it(trail, db):
    await add_audit_events(db, 5, age=timedelta(0))
    await trail.seal()
    victim = await db.fetchval("SELECT id FROM audit_event ORDER BY id OFFSET 2 LIMIT 1")
    await db.execute("UPDATE audit_event SET outcome = 'denied' WHERE id = $1", victim)

    problem = (await trail.verify()).problem
    assert problem is not None
    assert (problem.seal_id, problem.event_id, problem.kind) == (1, victim, "modified")


async def test_deleting_one_event_with_sql_makes_verify_name_it(trail, db):
    await add_audit_events(db, 5, age=timedelta(0))
    await trail.seal()
    victim = await db.fetchval("SELECT id FROM audit_event ORDER BY id OFFSET 1 LIMIT 1")
    await db.execute("DELETE FROM audit_event WHERE id = $1", victim)

    problem = (await trail.verify()).problem
    assert problem is not None
    assert (problem.event_id, problem.kind) == (victim, "deleted")


async def test_inserting_one_event_with_sql_makes_verify_name_it_once_a_later_seal_is_made(trail, db):
    await add_audit_events(db, 2, age=timedelta(0))
    await trail.seal()
    last = await db.fetchval("SELECT max(id) FROM audit_event")
    # A forged event slipped into the sealed past, with an id and a transaction id from inside seal 1.
    forged = await db.fetchval(
        "INSERT INTO audit_event (id, channel, action, outcome, xact) OVERRIDING SYSTEM VALUE"
        " VALUES ($1, 'rest', 'read', 'ok', 1) RETURNING id",
        last + 1000,
    )

    problem = (await trail.verify()).problem
    assert problem is not None
    assert (problem.seal_id, problem.event_id, problem.kind) == (1, forged, "inserted")


async def test_an_event_with_a_transaction_id_from_the_future_is_named_as_inserted(trail, db):
    await add_audit_events(db, 1, age=timedelta(0))
    await trail.seal()
    forged = await db.fetchval(
        "INSERT INTO audit_event (channel, action, outcome, xact) VALUES ('rest', 'read', 'ok', 9000000000000)"
        " RETURNING id"
    )
    problem = (await trail.verify()).problem
    assert problem is not None
    assert (problem.seal_id, problem.event_id, problem.kind) == (None, forged, "inserted")


async def test_a_changed_seal_fails_its_signature(trail, db):
    await add_audit_events(db, 2, age=timedelta(0))
    await trail.seal()
    await db.execute("UPDATE audit_seal SET event_count = 1")
    problem = (await trail.verify()).problem
    assert problem is not None
    assert (problem.seal_id, problem.kind) == (1, "seal_modified")


async def test_events_that_commit_late_are_sealed_later_and_the_chain_still_verifies(trail, db, database_url):
    """Concurrent writers: some transactions take a low id, stay open across seals, and commit last."""
    writers = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        held = []
        for conn in writers[:2]:  # open transactions holding the lowest ids
            tx = conn.transaction()
            await tx.start()
            await conn.execute("INSERT INTO audit_event (channel, action, outcome) VALUES ('rest', 'read', 'ok')")
            held.append(tx)

        async def write(conn: asyncpg.Connection, count: int) -> None:
            for _ in range(count):
                await conn.execute("INSERT INTO audit_event (channel, action, outcome) VALUES ('mcp', 'read', 'ok')")

        async def seal_repeatedly() -> None:
            for _ in range(5):
                await trail.seal()
                await asyncio.sleep(0.01)

        await asyncio.gather(write(writers[2], 40), write(writers[3], 40), seal_repeatedly())
        sealed_before = set(
            await db.fetchval("SELECT coalesce(array_agg(e), '{}') FROM audit_seal, unnest(event_ids) e")
        )
        low_ids = await db.fetchval("SELECT min(id) FROM audit_event")  # visible only once committed
        assert (await trail.verify()).ok
        for tx in held:
            await tx.commit()
        await trail.seal()
    finally:
        for conn in writers:
            await conn.close()

    all_ids = {r["id"] for r in await db.fetch("SELECT id FROM audit_event")}
    late = all_ids - sealed_before
    assert len(all_ids) == 82
    assert min(late) < low_ids  # the held transactions' ids are the lowest
    report = await trail.verify()
    assert report.ok, report.problem
    assert (report.events, report.unsealed) == (82, 0)  # nothing left unsealed once all committed
    listed = await db.fetchval("SELECT array_agg(e) FROM audit_seal, unnest(event_ids) e")
    assert sorted(listed) == sorted(all_ids)  # each event in exactly one seal


async def test_the_purge_removes_only_whole_old_seals_and_the_rest_still_verifies(components, trail, db):
    await add_audit_events(db, 3, age=timedelta(days=400))
    await trail.seal()  # seal 1: all old
    await add_audit_events(db, 2, age=timedelta(days=400))
    await add_audit_events(db, 1, age=timedelta(0))
    await trail.seal()  # seal 2: old and new events together
    await add_audit_events(db, 2, age=timedelta(days=400))  # old, never sealed

    report = await components.purger.run()

    assert (report.deleted["audit_event"], report.deleted["audit_seal"]) == (3, 1)
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'read'") == 5
    assert [r["id"] for r in await db.fetch("SELECT id FROM audit_seal")] == [2]
    await trail.seal()  # the purge's own audit event, and the unsealed old ones
    check = await trail.verify()
    assert check.ok, check.problem
    assert check.start.startswith("seal 2, after the purge recorded in event")


async def test_deleting_the_oldest_seals_without_a_purge_is_found(trail, db):
    for _ in range(2):
        await add_audit_events(db, 2, age=timedelta(0))
        await trail.seal()
    first = await db.fetchrow("SELECT id, event_ids FROM audit_seal ORDER BY id LIMIT 1")
    await db.execute("DELETE FROM audit_event WHERE id = ANY($1)", first["event_ids"])
    await db.execute("DELETE FROM audit_seal WHERE id = $1", first["id"])

    problem = (await trail.verify()).problem
    assert problem is not None
    assert (problem.seal_id, problem.kind) == (2, "seal_missing")
