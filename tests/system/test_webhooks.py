"""Webhooks as a user meets them: a key made with `agent-service keys create`, a task run on
`agent-service serve`, a receiver that is down until the service has been restarted."""

from __future__ import annotations

import re
import time
import uuid

import httpx

from app.devdb.cluster import free_port
from tests.support.fake_openai import FakeOpenAI
from tests.support.service_process import ServiceProcess, cli, environment
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY
from tests.support.webhooks import Receiver

KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")
SECRET = re.compile(r"webhook secret:\s+(whsec_\S+)")


def _until(check, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


def test_a_webhook_the_receiver_missed_is_delivered_after_the_service_restarts(empty_database_url, fake: FakeOpenAI):
    env = environment(
        DATABASE_URL=empty_database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        AUTH_CACHE_SECONDS="0",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake.base_url,
        DEFAULT_MODEL="openai:gpt-test",
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        WEBHOOK_RETRY_SECONDS="0.5",
        WEBHOOK_POLL_SECONDS="0.2",
    )
    cli("migrate", env=env)
    created = cli("keys", "create", "batch-job", env=env).stdout
    key, secret = KEY.search(created).group(0), SECRET.search(created).group(1)  # type: ignore[union-attr]
    key_id = re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {key}"}
    receiver = Receiver(port=free_port())

    service = ServiceProcess(env)
    try:
        service.start()
        task = httpx.post(
            f"{service.base}/tools/run_agent_task",
            params={"wait": "false"},
            json={"prompt": f"nightly batch {uuid.uuid4().hex}", "webhook": receiver.url},
            headers=headers,
            timeout=10,
        ).json()
        webhook = f"{service.base}/resources/get_agent_result/{task['task_id']}/webhook"
        missed = _until(lambda: (r := httpx.get(webhook, headers=headers).json())["attempts"] and r)
        assert missed["state"] == "pending"
        assert missed["attempts"][0]["error"] == "connect_error"
        service.stop()

        with receiver.running():
            service.start()
            [received] = _until(lambda: receiver.received)
            delivered = _until(lambda: (r := httpx.get(webhook, headers=headers).json())["state"] == "delivered" and r)

            rotated = cli("keys", "webhook-secret", key_id, "--grace-hours", "0", env=env).stdout
            new_secret = SECRET.search(rotated).group(1)  # type: ignore[union-attr]
            httpx.post(
                f"{service.base}/tools/run_agent_task",
                json={"prompt": "after the rotation", "webhook": receiver.url},
                headers=headers,
                timeout=10,
            )
            _until(lambda: len(receiver.received) == 2)
    finally:
        service.close()

    event = received.verify(secret)
    assert event["type"] == "agent_task.succeeded"
    assert event["data"] == {"task_id": task["task_id"], "status": "succeeded"}
    assert delivered["attempts"][0]["error"] == "connect_error"
    assert delivered["attempts"][-1]["status_code"] == 204
    assert new_secret != secret
    receiver.received[1].verify(new_secret)
    assert secret not in service.output()
    assert new_secret not in service.output()
