"""Key rotation, online: a new key first seals new rows, old rows still read, re-encryption moves
them while reads and writes go on, and a retired key's rows read as `key_retired`, never a 500."""

from __future__ import annotations

import asyncio
import uuid

from app.access.encryption import new_key_entry
from app.domain import Role
from app.service.encryption import ResultKeys
from tests.support.app import key, replica
from tests.support.routes import RUN

K1, K2 = new_key_entry("k1"), new_key_entry("k2")


def ring(*entries: str) -> dict[str, str]:
    return {"result_encryption_keys": ",".join(entries)}


async def uses(app) -> dict[str, int]:
    components = app.state.components
    return {use.key_id: use.rows for use in await ResultKeys(components.db, components.vault).status()}


async def submit(http, caller, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {"prompt": f"task {i} {uuid.uuid4()}", "context": {"n": i}, "cache": False}
        answer = await http.post(RUN, json=body, headers=caller.headers)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["task_id"])
    return ids


async def read_all(http, caller, ids: list[str]) -> list[dict]:
    answers = [await http.get(f"/resources/get_agent_result/{task_id}", headers=caller.headers) for task_id in ids]
    assert all(answer.status_code == 200 for answer in answers)
    return [answer.json() for answer in answers]


async def test_rotation_and_reencryption_run_online(database_url):
    async with replica(database_url, **ring(K1)) as (old, old_http):
        caller = await key(old, Role.CLIENT)
        before = await submit(old_http, caller, 12)
    async with replica(database_url, **ring(K2, K1)) as (app, http):
        assert (await uses(app))["k1"] >= 12
        assert all(r["output"] and r["context"]["n"] == i for i, r in enumerate(await read_all(http, caller, before)))
        during: list[str] = []
        reads = 0

        async def traffic() -> None:
            nonlocal reads
            for _ in range(6):
                during.extend(await submit(http, caller, 2))
                reads += len(await read_all(http, caller, before))

        components = app.state.components
        report, _ = await asyncio.gather(ResultKeys(components.db, components.vault).reencrypt(batch_rows=3), traffic())
        assert report.resealed >= 12
        assert report.batches >= 4
        assert report.unreadable == 0
        assert reads == 6 * 12
        assert "k1" not in await uses(app), "no row needs k1 any more (nor any key's webhook secret)"
        assert (await uses(app))["k2"] >= 12 + len(during)
    async with replica(database_url, **ring(K2)) as (_, new_http):  # k1 retired
        answers = await read_all(new_http, caller, before + during)
        assert all(answer["output"] and answer["error"] is None for answer in answers)


async def test_a_row_whose_key_was_retired_reads_as_key_retired(database_url):
    async with replica(database_url, **ring(K1)) as (app, http):
        caller = await key(app, Role.CLIENT)
        (task_id,) = await submit(http, caller, 1)
    async with replica(database_url, **ring(K2)) as (app, http):
        answer = await http.get(f"/resources/get_agent_result/{task_id}", headers=caller.headers)
        assert answer.status_code == 200
        assert answer.json()["output"] is None
        assert answer.json()["context"] == {}
        assert answer.json()["error"]["code"] == "key_retired"
        listed = await http.get("/resources/agent_results", headers=caller.headers)
        assert listed.status_code == 200
        assert [item["error"]["code"] for item in listed.json()["items"]] == ["key_retired"]
        report = await ResultKeys(app.state.components.db, app.state.components.vault).reencrypt()
        # The task, and the key's webhook signing secret, sealed under the same retired key.
        assert (report.resealed, report.unreadable) == (0, 2)


async def test_webhook_secrets_move_to_the_new_key_and_still_sign_once_the_old_one_is_retired(database_url):
    from tests.support.webhooks import Receiver

    hooks = {"webhook_allowed_hosts": ["127.0.0.1"], "webhook_poll_seconds": 0.2}
    async with replica(database_url, **ring(K1)) as (app, _):
        caller = await key(app, Role.CLIENT)
    async with replica(database_url, **ring(K2, K1)) as (app, _):
        report = await ResultKeys(app.state.components.db, app.state.components.vault).reencrypt()
        assert report.resealed == 1
        assert report.unreadable == 0
        assert "k1" not in await uses(app)
    with Receiver().running() as receiver:
        async with replica(database_url, **ring(K2), **hooks) as (_, http):  # k1 retired
            body = {"prompt": "p", "model": "offline:echo", "webhook": receiver.url}
            assert (await http.post(RUN, json=body, headers=caller.headers)).status_code == 200
            [received] = await receiver.wait_for(1)
    assert caller.webhook_secret is not None
    assert received.verify(caller.webhook_secret)["type"] == "agent_task.succeeded"
