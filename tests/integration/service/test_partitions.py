"""Audit partitions: the days ahead are made before they are needed, the reserve catches what no day
holds, and the purge drops whole sealed days with their seals while the chain still verifies."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from app.service.trail import AuditTrail
from app.service.wiring import Components
from app.storage import partitions as partition_sql
from app.storage.partitions import Partition, days_to_make, ensure_partitions, list_partitions, midnight
from tests.support.retention import add_audit_events_at, lay_out_days

TODAY = datetime.now(UTC).date()


@pytest.fixture
def trail(components: Components) -> AuditTrail:
    return components.trail


def _day(n: int) -> date:
    return TODAY + timedelta(days=n)


async def _names(db) -> list[str]:
    return [p.name for p in await list_partitions(db)]


def test_days_are_made_only_once_few_are_left_and_then_a_week_ahead():
    def layout(reserve_from: date) -> list[Partition]:
        return [Partition("h", None, midnight(_day(0))), Partition("r", midnight(reserve_from), None)]

    assert days_to_make(layout(_day(5)), TODAY) == []
    assert days_to_make(layout(_day(3)), TODAY) == [_day(n) for n in range(3, 8)]
    assert days_to_make(layout(_day(-2)), TODAY) == [_day(n) for n in range(-2, 8)]  # the reserve caught rows
    assert days_to_make([], TODAY) == []  # not partitioned: nothing to do


async def test_the_migrated_database_has_a_week_of_days_ahead_and_a_reserve(db):
    names = await _names(db)
    assert names[0] == partition_sql.HISTORY
    assert names[-1] == partition_sql.RESERVE
    assert sum(name.startswith("audit_event_p") for name in names) == partition_sql.DAYS_AHEAD
    assert (await ensure_partitions(db)).created == ()  # nothing due yet


async def test_rows_the_reserve_caught_move_into_their_days_and_keep_their_seals(db, trail):
    await lay_out_days(db, history_until=_day(-3), days=[], reserve_from=_day(-3))
    await add_audit_events_at(db, 3, at=midnight(_day(-2)) + timedelta(hours=5))
    await add_audit_events_at(db, 2, at=datetime.now(UTC))  # no day for either: the reserve takes them
    await trail.seal()
    ids = [r[0] for r in await db.fetch("SELECT id FROM audit_event ORDER BY id")]

    made = await ensure_partitions(db)

    assert made.created[0] == partition_sql.day_name(_day(-3))
    assert made.created[-1] == partition_sql.day_name(_day(partition_sql.DAYS_AHEAD))
    assert made.moved == 5
    assert [r[0] for r in await db.fetch("SELECT id FROM audit_event ORDER BY id")] == ids
    assert await db.fetchval("SELECT count(*) FROM ONLY audit_event_reserve") == 0
    assert await db.fetchval(f"SELECT count(*) FROM {partition_sql.day_name(_day(-2))}") == 3
    check = await trail.verify()
    assert check.ok, check.problem


async def _old_days_layout(db) -> tuple[date, date, date]:
    """Three old days past the default retention (365 days), the days since in one partition."""
    d1, d2, d3 = _day(-400), _day(-399), _day(-398)
    await lay_out_days(db, history_until=d1, days=[d1, d2, d3], recent_from=_day(-397), reserve_from=_day(9))
    return d1, d2, d3


async def test_the_purge_drops_whole_sealed_days_with_their_seals_and_the_chain_still_verifies(components, trail, db):
    d1, d2, d3 = await _old_days_layout(db)
    await add_audit_events_at(db, 4, at=midnight(d1) + timedelta(hours=1))
    await trail.seal()  # seal 1: day 1 only
    await add_audit_events_at(db, 2, at=midnight(d2) - timedelta(seconds=30))
    await add_audit_events_at(db, 3, at=midnight(d2) + timedelta(seconds=30))
    await trail.seal()  # seal 2: straddles midnight, day 1 and day 2
    await add_audit_events_at(db, 5, at=midnight(d2) + timedelta(hours=3))
    await trail.seal()  # seal 3: day 2
    await add_audit_events_at(db, 6, at=midnight(d3) + timedelta(hours=3))  # day 3: never sealed

    report = await components.purger.run()

    assert report.partitions_dropped == 3  # the (empty) history, days 1 and 2; day 3 waits for its seal
    assert report.deleted["audit_event"] == 4 + 2 + 3 + 5
    assert report.deleted["audit_seal"] == 3
    names = await _names(db)
    assert partition_sql.day_name(d1) not in names
    assert partition_sql.day_name(d2) not in names
    assert partition_sql.day_name(d3) in names
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'read'") == 6
    event = await db.fetchrow("SELECT detail FROM audit_event WHERE action = 'purge'")
    assert event["detail"]["partitions_dropped"] == 3
    assert event["detail"]["sealed_through"] == report.sealed_through

    await trail.seal()
    check = await trail.verify()
    assert check.ok, check.problem  # every seal went: the next one starts a chain of its own, as before

    # Day 3 is sealed now, but in one seal with the purge's own event of today: it waits for that seal
    # to pass the retention, as a seal of old and new events always did.
    again = await components.purger.run()
    assert (again.partitions_dropped, again.deleted["audit_event"]) == (0, 0)


async def test_a_seal_straddling_into_a_day_still_kept_takes_only_its_own_events_of_that_day(components, trail, db):
    d1, d2, _ = await _old_days_layout(db)
    recent = _day(-1)  # in the partition of the recent past: not past the retention
    await add_audit_events_at(db, 3, at=midnight(d1) + timedelta(hours=23))
    await add_audit_events_at(db, 2, at=midnight(d2) + timedelta(minutes=1))
    await trail.seal()  # one seal over day 1 and the first minute of day 2
    await add_audit_events_at(db, 4, at=midnight(d2) + timedelta(hours=2))
    await add_audit_events_at(db, 1, at=midnight(recent))
    await trail.seal()  # its last event is recent: this seal and day 2 wait

    report = await components.purger.run(dry_run=True)
    # history (empty), day 1, and the straddling seal's two events of day 2
    assert (report.partitions_dropped, report.deleted["audit_event"]) == (2, 5)

    report = await components.purger.run()

    assert report.partitions_dropped == 2
    assert report.deleted["audit_event"] == 3 + 2  # day 1, and the straddling seal's two of day 2
    assert report.deleted["audit_seal"] == 1
    assert await db.fetchval(f"SELECT count(*) FROM {partition_sql.day_name(d2)}") == 4
    check = await trail.verify()
    assert check.ok, check.problem


async def test_a_day_with_an_unsealed_event_is_kept_and_so_is_every_day_after_it(components, trail, db):
    d1, d2, _ = await _old_days_layout(db)
    await add_audit_events_at(db, 2, at=midnight(d2) + timedelta(hours=1))
    await trail.seal()
    await add_audit_events_at(db, 1, at=midnight(d1) + timedelta(hours=1))  # old, and not sealed yet

    report = await components.purger.run()

    assert report.partitions_dropped == 1  # the empty history only
    assert partition_sql.day_name(d1) in await _names(db)
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'read'") == 3
    assert (await trail.verify()).ok
