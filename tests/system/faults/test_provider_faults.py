"""The provider misbehaves (hangs, malformed or truncated answers, dropped connections, 5xx and 429,
TCP resets and garbage): each task ends failed with the right error code within a bounded time,
while other callers are served as if nothing were wrong and a retention purge runs. Run with `-s`
to see the counts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import httpx

from app.main import create_app
from tests.support.app import running
from tests.support.fake_openai import FakeOpenAI, Reply, TcpFault
from tests.support.faults import (
    QUIET,
    Traffic,
    all_finished,
    check_retention,
    count_losses,
    final_purge,
    new_caller,
    purging,
    seed_retention,
    until,
)
from tests.support.settings import make_settings

# By the model a task names (the fake answers by model): the fault, the error code it must end with.
HTTP_FAULTS: dict[str, tuple[Reply, str]] = {
    "hang": (Reply(delay=60), "timeout"),  # answers the request line, never the body
    "not-json": (Reply(raw=b"<html><body>502 Bad Gateway</body></html>"), "provider_error"),
    "wrong-shape": (Reply(body={"object": "list", "data": [{"id": "x"}]}), "provider_error"),
    "truncated": (Reply(raw=b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"ind'), "provider_error"),
    "dropped": (Reply(drop=True), "provider_error"),  # the connection closes halfway through the answer
    "overloaded": (Reply(503, {"error": {"message": "busy", "code": "overloaded"}}), "provider_error"),
    "throttled": (Reply(429, {"error": {"message": "slow down", "code": "rate_limit"}}), "rate_limited"),
}
NOT_RETRIED = frozenset({"not-json", "wrong-shape", "truncated"})
TCP_FAULTS = {"hang": "timeout", "reset": "provider_error", "garbage": "provider_error"}


async def test_provider_faults_end_failed_with_the_right_code_in_bounded_time_and_the_service_stays_responsive(
    database_url,
):
    replies = {model: reply for model, (reply, _) in HTTP_FAULTS.items()}
    with (
        FakeOpenAI(lambda body: replies.get(body["model"])).running() as fake,
        TcpFault("hang").running() as tcp_hang,
        TcpFault("reset").running() as tcp_reset,
        TcpFault("garbage").running() as tcp_garbage,
    ):
        tcp = {"hang": tcp_hang, "reset": tcp_reset, "garbage": tcp_garbage}
        settings = make_settings(
            database_url,
            **QUIET,
            openai_api_key="sk-test",
            openai_base_url=fake.base_url,
            default_model="openai:gpt-test",
            provider_endpoints=[{"name": f"tcp-{mode}", "base_url": f.base_url} for mode, f in tcp.items()],
            provider_request_timeout_seconds=1,
            provider_max_retries=2,
            provider_retry_max_seconds=2,
            provider_timeout_seconds=3,
            auth_cache_seconds=60,
            purge_batch_size=100,
        )
        # The whole provider call is capped at PROVIDER_TIMEOUT_SECONDS, retries and waits included;
        # storing the outcome and answering adds two statements and a loopback round trip.
        bound = settings.provider_timeout_seconds + 1.0
        expected = {f"openai:{m}": code for m, (_, code) in HTTP_FAULTS.items()}
        expected |= {f"tcp-{mode}:any-model": code for mode, code in TCP_FAULTS.items()}
        async with running(create_app(settings)) as app:
            service = app.state.components
            alice = await new_caller(service.keys)
            conn = await asyncpg.connect(database_url)
            seeds_expired_at = await seed_retention(conn, alice.key_id, expiring_within=3, settings=settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
                traffic = Traffic(http, [alice])
                healthy = (await traffic.submit(0, {"prompt": "fine", "model": "openai:gpt-test"})).json()  # type: ignore[union-attr]

                async def timed(model: str) -> tuple[float, httpx.Response | None]:
                    began = time.monotonic()
                    response = await traffic.submit(0, {"prompt": f"waited on {model}", "model": model, "cache": False})
                    return time.monotonic() - began, response

                async with purging(service.purger) as purges:
                    waited = {model: asyncio.create_task(timed(model)) for model in expected}
                    accepted = {}
                    for model in expected:
                        body = {"prompt": f"not waited on {model}", "model": model, "cache": False}
                        response = await traffic.submit(0, body, wait=False)
                        assert response is not None
                        assert response.status_code == 202
                        accepted[model] = response.json()["task_id"]
                    # Meanwhile, other callers are served as if nothing were wrong.
                    probes: list[tuple[str, float, int | None]] = []
                    while not all(task.done() for task in waited.values()):
                        for op, call in (
                            ("read", traffic.read(0, healthy["task_id"])),
                            ("list", traffic.listing(0)),
                            ("run offline", traffic.submit(0, {"prompt": "quick", "model": "offline:echo"})),
                            ("run healthy", traffic.submit(0, {"prompt": "ok?", "model": "openai:gpt-test"})),
                        ):
                            began = time.monotonic()
                            response = await call
                            probes.append((op, time.monotonic() - began, response.status_code if response else None))
                        await asyncio.sleep(0.02)
                    results = {model: task.result() for model, task in waited.items()}
                    await until(all_finished(conn, list(accepted.values())), within=bound)
            final = await final_purge(settings, not_before=seeds_expired_at)
            try:
                losses = await count_losses(conn, traffic)
                retention = await check_retention(conn, final)
                rows = {
                    str(r["id"]): r
                    for r in await conn.fetch(
                        "SELECT id, status, error_code, extract(epoch FROM completed_at - created_at) AS seconds "
                        "FROM agent_task WHERE id = ANY($1::uuid[])",
                        list(accepted.values()),
                    )
                }
            finally:
                await conn.close()

    requests_per_model = Counter(body["model"] for body in fake.requests)
    slowest_probe = max(probes, key=lambda p: p[1])
    print(
        "\n[provider faults] waited: "
        + ", ".join(f"{m}={s:.2f}s" for m, (s, _) in results.items())
        + f"; bound {bound:g} s; probes={len(probes)} slowest={slowest_probe[0]} {slowest_probe[1]:.3f} s; "
        f"provider requests={dict(requests_per_model)}, tcp connections="
        f"{ {mode: f.connections for mode, f in tcp.items()} }; acknowledged={losses.acknowledged} "
        f"LOST={losses.lost}; purge runs={purges.runs} errors={purges.errors}; retention lost={retention.lost}"
    )
    for model, code in expected.items():
        seconds, response = results[model]
        assert response is not None
        assert response.status_code == 200, (model, response.text)
        answer = response.json()
        assert (answer["status"], answer["error"]["code"]) == ("failed", code), (model, answer["error"])
        assert seconds <= bound, (model, seconds)
        row = rows[accepted[model]]
        assert (row["status"], row["error_code"]) == ("failed", code), model
        assert float(row["seconds"]) <= bound, (model, row["seconds"])
        if model.endswith(":hang"):
            assert seconds >= settings.provider_request_timeout_seconds  # it did wait for the provider
    for name in NOT_RETRIED:
        assert requests_per_model[name] == 2, name  # one attempt per task: a malformed answer is not retried
    for name in HTTP_FAULTS.keys() - NOT_RETRIED - {"hang"}:
        assert 2 * 2 <= requests_per_model[name] <= 2 * (settings.provider_max_retries + 1), name
    for mode, fault in tcp.items():
        assert 2 * 2 <= fault.connections <= 2 * (settings.provider_max_retries + 1), mode
    assert probes
    assert {status for _, _, status in probes} == {200}
    # A read stuck behind a hung call would take the provider's timeout; these take milliseconds.
    assert slowest_probe[1] < settings.provider_request_timeout_seconds, slowest_probe
    assert losses.lost == 0, losses
    assert purges.errors == []
    assert retention.lost == 0, retention
    assert (retention.expired_left, retention.old_events_left) == (0, 0), retention
