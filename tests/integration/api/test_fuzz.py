"""Fuzzing the running app against its own OpenAPI document (schemathesis, real PostgreSQL).

Every operation in `/openapi.json` is called with generated valid input and (where it takes
any input) generated invalid input, with a valid key (an auditor's where a client's would only
get a 403). Each answer must not be a 5xx, must have a status code, content type and body that
the document declares for that operation, and invalid input must be refused with a 4xx. A key
must be enforced: the same successful request without it is refused.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from app.access.keys import KeyStore
from app.api import audit as audit_routes
from app.api import holds, rest
from app.domain import Role
from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from tests.support.fake_openai import TcpFault
from tests.support.postgres import run_sync
from tests.support.settings import make_settings

# Per operation and generation mode. Derandomized: every run sends the same requests.
MAX_EXAMPLES = 40

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            # The key is ours to send, not generated data to mutate (a removed Authorization
            # header would be put back by the call, and "accepted invalid data" reported).
            "with-security-parameters": False,
            # Unknown query parameters are refused (422), but generating them is not the point here:
            # tests/integration/api/test_validation.py checks that refusal route by route.
            "allow-extra-parameters": False,
        },
        # A body over MAX_REQUEST_BYTES is refused before it is read: 413 is a rejection too.
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]
            }
        },
    }
)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.ignored_auth,
]

# A client's key gets a 403 here: fuzz them as an auditor, so their real answers are checked.
AUDITOR_OPERATIONS = {
    "GET /audit/events",
    "POST /audit/prompt-search",
    "GET /metrics",
    "POST /holds",
    "GET /holds",
    "DELETE /holds/{hold_id}",
    "GET /audit/public-key",
    "GET /audit/seals",
    "GET /audit/export",
}

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


async def _create_key(settings: Settings, role: Role) -> str:
    db = Database(settings)
    await db.open()
    try:
        _, plain, _ = await KeyStore(db, cache_seconds=0).create(f"fuzz-{role.value}", role)
    finally:
        await db.close()
    return plain


@pytest.fixture
def fuzz_settings(database_url: str) -> Iterator[Settings]:
    # offline:echo by default, so that valid tasks run to a stored result (not all an unknown model);
    # openai: a provider that never answers, for a task that stays running until it is cancelled.
    with TcpFault("hang").running() as hanging:
        yield make_settings(
            database_url,
            default_model="offline:echo",
            openai_api_key="sk-fuzz",
            openai_base_url=hanging.base_url,
            trace_requests=False,
            trace_sql=False,
        )


@pytest.fixture
def fuzz_app(fuzz_settings: Settings) -> Iterator[FastAPI]:
    """The app, unstarted: schemathesis starts its lifespan on its own event-loop thread."""
    app = create_app(fuzz_settings)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()  # closes the pool before the test's database is dropped


def _rest_operations() -> set[str]:
    return {
        f"{method} {route.path}"
        for route in (*rest.router.routes, *holds.router.routes, *audit_routes.router.routes)
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }


def _takes_input(operation: APIOperation) -> bool:
    return len(operation.body) > 0 or any(True for _ in operation.iter_parameters())


def test_every_operation_survives_fuzzing_and_answers_as_documented(fuzz_app: FastAPI, fuzz_settings: Settings) -> None:
    started = time.monotonic()
    keys = {role: run_sync(_create_key(fuzz_settings, role)) for role in (Role.CLIENT, Role.AUDITOR)}
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=CONFIG)  # starts the lifespan
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "schemathesis understands every operation in the document"
    assert {operation.label for operation in operations} == _rest_operations(), "the document lists every route"

    # Tasks that exist, so reading and erasing one by id are exercised too, not only 404s.
    client_headers = {"Authorization": f"Bearer {keys[Role.CLIENT]}"}
    with asgi.get_client(fuzz_app) as http:
        existing = [
            http.post("/tools/run_agent_task", json={"prompt": "fuzz"}, headers=client_headers).json()["task_id"]
            for _ in range(3)  # one each for the read, the erasure and the webhook
        ]
        # A task that runs until it is cancelled (its provider never answers), for the cancel.
        unfinished = http.post(
            "/tools/run_agent_task",
            params={"wait": "false"},
            json={"prompt": "fuzz", "model": "openai:gpt-test"},
            headers=client_headers,
        ).json()["task_id"]
        # A task for the legal-hold operations, and a hold on it to release.
        held_task = http.post("/tools/run_agent_task", json={"prompt": "fuzz"}, headers=client_headers).json()
        hold = {"reference": "FUZZ-1", "task_id": held_task["task_id"]}
        auditor_headers = {"Authorization": f"Bearer {keys[Role.AUDITOR]}"}
        hold_id = http.post("/holds", json=hold, headers=auditor_headers).json()["hold_id"]

    answers: dict[str, Counter[int]] = {operation.label: Counter() for operation in operations}

    def fuzz(operation: APIOperation, mode: GenerationMode, **fixed: Any) -> None:
        role = Role.AUDITOR if operation.label in AUDITOR_OPERATIONS else Role.CLIENT
        headers = {"Authorization": f"Bearer {keys[role]}"}

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        def run(case: Case) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            answers[operation.label][response.status_code] += 1

        run()

    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE)
        if _takes_input(operation):  # with no parameters and no body there is nothing to make invalid
            fuzz(operation, GenerationMode.NEGATIVE)
        if "{task_id}" in operation.path:
            task_id = unfinished if operation.path.endswith("/cancel") else existing.pop()
            fuzz(operation, GenerationMode.POSITIVE, path_parameters={"task_id": task_id})
        if "{hold_id}" in operation.path:
            fuzz(operation, GenerationMode.POSITIVE, path_parameters={"hold_id": hold_id})
        if operation.label == "POST /holds":
            fuzz(operation, GenerationMode.POSITIVE, body=hold)

    elapsed = time.monotonic() - started
    print(f"\n{sum(sum(c.values()) for c in answers.values())} requests in {elapsed:.1f} s")
    for label, counts in sorted(answers.items()):
        print(f"  {label}: {dict(sorted(counts.items()))}")
    never_succeeded = sorted(label for label, counts in answers.items() if not any(200 <= s < 300 for s in counts))
    assert never_succeeded == [], "every operation was exercised through to a success"
