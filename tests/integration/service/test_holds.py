"""Legal holds and the purge: a held task outlives its expiry (a hold of its own or of its owner's,
placed before or after the task was made), the purge counts what it kept, and a released hold
lets the next purge delete the row."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.domain import Actor, Channel, NotFound
from app.schemas import HoldCreate
from app.service.holds import LegalHolds
from app.service.retention import Purger
from app.settings import Settings
from app.storage.database import Database
from tests.support.retention import add_tasks, owner_key

CLI = Actor(None, None, Channel.CLI)


@pytest.fixture
async def purge_db(settings: Settings):
    db = Database(settings)
    await db.open()
    yield db
    await db.close()


async def remaining(db) -> set[uuid.UUID]:
    return {r["id"] for r in await db.fetch("SELECT id FROM agent_task")}


async def purge_detail(db) -> dict:
    return await db.fetchval("SELECT detail FROM audit_event WHERE action = 'purge' ORDER BY id DESC LIMIT 1")  # type: ignore[no-any-return]


async def test_a_held_task_survives_the_purge_after_expiry_while_an_unheld_one_goes(db, purge_db, settings):
    owner = await owner_key(db)
    held, _unheld = await add_tasks(db, owner, 2, expires_in=-timedelta(minutes=1))
    holds = LegalHolds(purge_db)
    await holds.place(CLI, HoldCreate(reference="CASE-1", task_id=held))

    report = await Purger(purge_db, settings.model_copy(update={"purge_batch_size": 1})).run()

    assert await remaining(db) == {held}
    assert report.deleted["agent_task"] == 1
    assert report.held_kept == 1
    assert (await purge_detail(db))["held_kept"] == 1


async def test_an_owner_hold_keeps_every_task_of_the_owner_even_those_made_after_it(db, purge_db, settings):
    owner, other = await owner_key(db), await owner_key(db)
    before = await add_tasks(db, owner, 2, expires_in=-timedelta(minutes=1))
    await LegalHolds(purge_db).place(CLI, HoldCreate(reference="CASE/2026:17", owner_key_id=owner))
    after = await add_tasks(db, owner, 3, expires_in=-timedelta(minutes=1))
    others = await add_tasks(db, other, 2, expires_in=-timedelta(minutes=1))

    dry = await Purger(purge_db, settings).run(dry_run=True)
    report = await Purger(purge_db, settings.model_copy(update={"purge_batch_size": 2})).run()

    assert (dry.deleted["agent_task"], dry.held_kept) == (2, 5)
    assert await remaining(db) == set(before) | set(after)
    assert not set(others) & await remaining(db)
    assert (report.deleted["agent_task"], report.held_kept) == (2, 5)


async def test_after_release_the_next_purge_deletes_the_row_and_the_hold_stays_as_history(db, purge_db, settings):
    owner = await owner_key(db)
    [task] = await add_tasks(db, owner, 1, expires_in=-timedelta(minutes=1))
    holds = LegalHolds(purge_db)
    hold = await holds.place(CLI, HoldCreate(reference="CASE-1", task_id=task))
    await Purger(purge_db, settings).run()
    assert await remaining(db) == {task}

    await holds.release(CLI, hold.hold_id)
    report = await Purger(purge_db, settings).run()

    assert await remaining(db) == set()
    assert (report.deleted["agent_task"], report.held_kept) == (1, 0)
    assert await db.fetchval("SELECT released_at IS NOT NULL FROM legal_hold WHERE id = $1", hold.hold_id)
    with pytest.raises(NotFound):
        await holds.release(CLI, hold.hold_id)


async def test_cli_actions_are_audited_with_no_actor(db, purge_db):
    owner = await owner_key(db)
    holds = LegalHolds(purge_db)
    hold = await holds.place(CLI, HoldCreate(reference="CASE-1", owner_key_id=owner))
    await holds.release(CLI, hold.hold_id)

    rows = await db.fetch("SELECT actor_id, channel, action, detail FROM audit_event ORDER BY id")
    assert [(r["actor_id"], r["channel"], r["action"]) for r in rows] == [
        (None, "cli", "hold_place"),
        (None, "cli", "hold_release"),
    ]
    assert rows[0]["detail"] == {"hold_id": str(hold.hold_id), "owner_key_id": str(owner)}
