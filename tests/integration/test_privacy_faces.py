"""Prompt privacy on the other faces: webhooks carry ids only, and the console shows an answer
only on its audited page (never in its errors, logs or rows).
"""

from __future__ import annotations

import logging
import uuid

import httpx

from app.domain import Role
from app.main import create_app
from tests.support.app import running
from tests.support.fake_openai import FakeOpenAI, Reply, completion, error_reply
from tests.support.privacy import everything_stored, scraper_headers, span_text
from tests.support.routes import RUN
from tests.support.settings import make_settings


async def test_webhooks_carry_ids_only_and_the_signing_secret_is_never_in_the_clear(
    database_url, db, marker, caplog, capfd, spans, chatty_libraries
):
    """A task with a webhook, answered (by the provider and from the cache), failed and cancelled:
    neither the prompt nor the answer reaches the receiver, the outbox, a log, a span or a metric,
    and the key's signing secret is stored sealed only."""
    from tests.support.webhooks import Receiver

    caplog.set_level(logging.DEBUG)
    prompt = f"Please keep this secret: {marker}"
    with FakeOpenAI().running() as fake, Receiver().running() as receiver:
        settings = make_settings(
            database_url,
            openai_api_key="sk-test-not-a-real-key",
            openai_base_url=fake.base_url,
            log_level="DEBUG",
            webhook_allowed_hosts=["127.0.0.1"],
            webhook_poll_seconds=0.2,
            webhook_retry_seconds=0.1,
        )
        async with running(create_app(settings)) as app:
            components = app.state.components
            record, plain, secret = await components.keys.create("privacy-webhooks", Role.CLIENT)
            headers = {"Authorization": f"Bearer {plain}"}
            hook = {"prompt": prompt, "model": "openai:gpt-test", "webhook": receiver.url}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                fake.enqueue(Reply(body=completion(f"the answer {marker}")))
                await http.post(RUN, json=hook, headers=headers)
                await http.post(RUN, json=hook, headers=headers)  # a cache hit
                fake.enqueue(error_reply(400, message=f"cannot process {marker}"))
                await http.post(RUN, json={**hook, "cache": False}, headers=headers)
                fake.enqueue(Reply(body=completion(f"never {marker}"), delay=10))
                pending = await http.post(RUN, params={"wait": "false"}, json={**hook, "cache": False}, headers=headers)
                task_id = pending.json()["task_id"]
                await http.post(f"/resources/get_agent_result/{task_id}/cancel", headers=headers)
                received = await receiver.wait_for(4)
                # What the owner reads of the webhook: the address and the attempts, not the answer.
                answers = [(await http.get(f"/resources/get_agent_result/{task_id}/webhook", headers=headers)).text]
                metrics_text = (await http.get("/metrics", headers=await scraper_headers(components))).text

    assert secret is not None
    assert {r.verify(secret)["type"] for r in received} == {
        "agent_task.succeeded",
        "agent_task.failed",
        "agent_task.cancelled",
    }
    sent = "\n".join(r.body.decode() + repr(r.headers) for r in received)
    stored = await everything_stored(db)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    out, err = capfd.readouterr()
    for where, text in (
        ("webhooks sent", sent),
        ("database", stored),
        ("answers", "\n".join(answers)),
        ("logs", logged),
        ("output", out + err),
        ("spans", span_text(spans)),
        ("metrics", metrics_text),
    ):
        assert marker not in text, f"the marker found in {where}"
        assert secret not in text, f"the webhook secret found in {where}"
        assert secret.removeprefix("whsec_") not in text, f"the webhook secret found in {where}"
    assert await db.fetchval("SELECT count(*) FROM webhook_delivery WHERE owner_id = $1", record.id) == 4


async def test_the_console_shows_an_answer_only_on_its_audited_page(gateway, db, marker, caplog, capfd, spans):
    """The console (app.console): the marker in the prompt and the answer. The answer appears on the
    task's page, the one view that is an audited read, and nowhere else: not in the list, not on an
    error page (a marker put in a filter, a form or as the key is never echoed), nor in rows, logs or spans."""
    from tests.support.console import TASKS, sign_in, signed_in

    caplog.set_level(logging.DEBUG)
    http, caller, fake, _service = gateway
    fake.enqueue(Reply(body=completion(f"the answer is {marker}")))
    ran = await http.post(
        RUN, json={"prompt": f"Please keep this secret: {marker}", "model": "openai:gpt-test"}, headers=caller.headers
    )
    task_id = ran.json()["task_id"]

    client_log = logging.getLogger("httpx")  # the test client logs its URLs; the service must not
    client_log.disabled = True
    try:
        refused = await sign_in(http, marker)  # a "key" that is the marker
        await signed_in(http, caller.key)
        task_page = await http.get(f"{TASKS}/{task_id}")
        elsewhere = [
            refused,
            await http.get(TASKS),
            await http.get(TASKS, params={"task_id": marker}),
            await http.get(TASKS, params={"status": marker}),
            await http.get(f"{TASKS}/not-a-task"),  # (a path is a span's attribute: no place for a secret)
            await http.post(f"{TASKS}/{task_id}/holds", data={"reference": marker, "csrf": marker}),
            await http.get("/console/audit", params={"action": marker, "since": marker}),
            await http.get("/console/retention"),
            await http.get(TASKS, params={"model": marker * 40}),  # longer than a model's name
            await http.get(TASKS, params={"created_from": marker}),
            await http.get("/console/health"),
            await http.get("/console/keys"),  # a client: 403
            await http.get("/console/audit/export", params={"since": marker, "until": marker}),  # 403 first
        ]
        # An admin's pages (the keys, the health figures, the export and chain check) and their refusals.
        _, admin_key, _ = await _service.keys.create("privacy-admin", Role.ADMIN)
        admin_csrf = await signed_in(http, admin_key)
        as_admin = [
            await http.get(TASKS, params={"owner_id": marker}),
            await http.get("/console/keys"),
            await http.get(f"/console/keys/{caller.key_id}"),
            await http.get("/console/keys/not-a-key"),  # (a path is a span attribute, as above)
            await http.post("/console/keys", data={"csrf": admin_csrf, "name": "x", "role": marker}),
            await http.post("/console/keys", data={"csrf": admin_csrf, "name": "x", "rate_limit_per_minute": marker}),
            await http.post(f"/console/keys/{caller.key_id}/limits", data={"csrf": admin_csrf, "store_output": marker}),
            await http.post(f"/console/keys/{caller.key_id}/revoke", data={"csrf": admin_csrf, "confirm": marker}),
            await http.get("/console/health"),
            await http.get("/console/audit"),
            await http.get("/console/audit/verify"),
            await http.get("/console/audit/export", params={"since": marker, "until": marker}),
        ]
        export = await http.get("/console/audit/export", params={"since": "2020-01-01", "until": "2100-01-01"})
    finally:
        client_log.disabled = False

    assert marker in task_page.text, "the task's page shows the answer"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_event WHERE task_id = $1 AND action = 'read' AND channel = 'console'",
            uuid.UUID(task_id),
        )
        == 1
    )
    assert [answer.status_code for answer in elsewhere] == [
        401,
        200,
        422,
        422,
        404,
        403,
        422,
        200,
        422,
        422,
        200,
        403,
        403,
    ]
    assert [answer.status_code for answer in as_admin] == [422, 200, 200, 404, 422, 422, 422, 422, 200, 200, 200, 422]
    assert export.status_code == 200
    for answer in [*elsewhere, *as_admin, export]:
        assert marker not in answer.text
    assert marker not in await everything_stored(db)
    assert marker not in span_text(spans)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert marker not in logged
    out, err = capfd.readouterr()
    assert marker not in out + err
