"""Result keys from a key-provider plugin (the example one, where a KMS plugin would go): the
service seals and opens with them; a provider that is missing or fails stops the start with a
message naming it, never a key."""

from __future__ import annotations

import pytest

from app.access.encryption import KeyProviderError, build_vault, key_id_of
from app.domain import Role
from app.service.encryption import ResultKeys
from tests.support.app import key, replica
from tests.support.routes import GET, RUN
from tests.support.settings import make_settings

SECRET = "9f" * 32


async def test_a_plugin_gives_the_keys_that_seal_and_open_results(database_url, db, monkeypatch):
    monkeypatch.setenv("EXAMPLE_KMS_SECRET", SECRET)
    async with replica(database_url, result_encryption_keys=None, result_key_provider="example") as (app, http):
        caller = await key(app, Role.CLIENT)
        ran = await http.post(RUN, json={"prompt": "sealed by a plugin", "cache": False}, headers=caller.headers)
        read = await http.get(GET.format(ran.json()["task_id"]), headers=caller.headers)
        status = await ResultKeys(app.state.components.db, app.state.components.vault).status()
    assert read.json()["output"] == ran.json()["output"]
    stored = await db.fetchval("SELECT output FROM agent_task WHERE id = $1::uuid", ran.json()["task_id"])
    assert key_id_of(stored) == "kms-2"  # the plugin's first key
    assert "kms-2" in {use.key_id for use in status}


def test_a_missing_key_provider_is_named(database_url):
    settings = make_settings(database_url, result_encryption_keys=None, result_key_provider="nowhere")
    with pytest.raises(KeyProviderError, match="no key provider plugin named 'nowhere'"):
        build_vault(settings)


def test_a_failing_key_provider_stops_the_start_without_its_message(database_url, monkeypatch):
    monkeypatch.setenv("EXAMPLE_KMS_SECRET", "not hex: " + SECRET)
    settings = make_settings(database_url, result_encryption_keys=None, result_key_provider="example")
    with pytest.raises(KeyProviderError, match=r"the key provider 'example' failed to start \(ValueError\)") as caught:
        build_vault(settings)
    assert SECRET not in str(caught.value)
