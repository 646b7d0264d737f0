"""Settings refuse unsafe secrets; any PostgreSQL URL works whatever driver it names."""

from __future__ import annotations

import base64
import secrets

import pytest
from pydantic import ValidationError

from app.devdb.embedded import development_hash_key
from app.settings import Settings
from app.settings.secrets import secret_weakness
from app.storage.database import asyncpg_dsn, sqlalchemy_url
from tests.support.settings import TEST_HASH_KEY, TEST_RESULT_KEYS, TEST_SIGNING_KEY

URL = "postgresql://u:p@db:5432/agents"


def settings(**values: object) -> Settings:
    values.setdefault("result_encryption_keys", TEST_RESULT_KEYS)
    values.setdefault("audit_signing_key", TEST_SIGNING_KEY)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_database_url_needs_a_prompt_hash_key():
    with pytest.raises(ValidationError, match="PROMPT_HASH_KEY is required"):
        settings(database_url=URL, prompt_hash_key=None)


@pytest.mark.parametrize("key", ["changeme", "secret", "short-key"])
def test_placeholder_and_short_hash_keys_are_refused(key):
    with pytest.raises(ValidationError, match="PROMPT_HASH_KEY"):
        settings(database_url=URL, prompt_hash_key=key)


# Each long enough, each guessable: the keys issue 12 found accepted, and their cousins.
WEAK_KEYS = {
    "one character": "a" * 32,
    "spaces and an x": " " * 31 + "x",
    "zeros": "0" * 64,
    "a repeated placeholder": "changemechangemechangemechangeme",
    "a placeholder inside": "my-super-SECRET-prompt-hash-key-2026",
    "an example value": "example-example-example-0123456789",
    "a short pattern repeated": "abc123" * 6,
    "mostly one character": "a" * 40 + "bcdefghij",
    "few characters": "0101010110101001011010100101101001",
}


@pytest.mark.parametrize("key", list(WEAK_KEYS.values()), ids=list(WEAK_KEYS))
def test_guessable_hash_keys_are_refused_with_how_to_make_a_good_one(key):
    with pytest.raises(ValidationError, match="PROMPT_HASH_KEY") as refused:
        settings(database_url=URL, prompt_hash_key=key)
    message = refused.value.errors()[0]["msg"]
    assert "openssl rand -hex 32" in message
    assert key not in message  # the message names the rule, never the key


@pytest.mark.parametrize(
    "generate",
    [lambda: secrets.token_hex(32), lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(16)],
    ids=["openssl rand -hex 32", "secrets.token_urlsafe(32)", "openssl rand -hex 16"],
)
def test_generated_hash_keys_are_accepted(generate):
    for _ in range(500):
        key = generate()
        assert settings(database_url=URL, prompt_hash_key=key).prompt_hash_key.get_secret_value() == key


def test_the_test_suites_and_the_development_database_keys_are_accepted(tmp_path):
    assert secret_weakness(TEST_HASH_KEY) is None
    assert secret_weakness(development_hash_key(tmp_path)) is None


def test_the_strength_rule_is_reusable_for_any_secret():
    assert secret_weakness(secrets.token_hex(32)) is None
    assert secret_weakness("x" * 64) is not None
    assert secret_weakness(secrets.token_urlsafe(16), min_chars=16) is None
    assert "at least 48 characters" in (secret_weakness(secrets.token_hex(16), min_chars=48) or "")


def test_without_a_database_url_the_embedded_default_needs_no_key():
    assert settings().database_url is None


def test_the_default_model_follows_the_configured_providers():
    assert settings().resolved_default_model == "offline:echo"
    assert settings(openai_api_key="sk-x").resolved_default_model == "openai:gpt-4o-mini"
    assert settings(openai_base_url="http://ollama:11434/v1", default_model="openai:llama3").resolved_default_model == (
        "openai:llama3"
    )


def test_secrets_do_not_show_in_the_settings_repr():
    key = secrets.token_hex(32)
    shown = repr(settings(database_url=URL, prompt_hash_key=key, openai_api_key="sk-very-secret"))
    assert key not in shown
    assert "sk-very-secret" not in shown


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "postgres://u:p@db:5432/agents",
        "postgresql+asyncpg://u:p@db:5432/agents",
        "postgresql+psycopg://u:p@db:5432/agents",
    ],
)
def test_any_postgresql_url_works(url):
    assert asyncpg_dsn(url) == URL
    assert sqlalchemy_url(url) == "postgresql+asyncpg://u:p@db:5432/agents"


def test_other_databases_are_refused():
    with pytest.raises(ValueError, match="postgresql://"):
        asyncpg_dsn("mysql://u:p@db/agents")


def test_host_and_origin_lists_read_as_commas_or_json(monkeypatch):
    monkeypatch.setenv("MCP_ALLOWED_HOSTS", "agents.example.com, *.internal")
    monkeypatch.setenv("MCP_ALLOWED_ORIGINS", '["https://app.example.com"]')
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "")
    configured = settings()
    assert configured.mcp_allowed_hosts == ["agents.example.com", "*.internal"]
    assert configured.mcp_allowed_origins == ["https://app.example.com"]
    assert configured.cors_allow_origins == []


def test_a_database_url_needs_result_encryption_keys():
    with pytest.raises(ValidationError, match="RESULT_ENCRYPTION_KEYS is required"):
        settings(database_url=URL, prompt_hash_key=TEST_HASH_KEY, result_encryption_keys=None)


@pytest.mark.parametrize(
    ("keys", "rule"),
    [
        ("k1", "must be id:base64"),
        ("k1:not-base64!", "is not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "AES-256 needs 32"),
        ("k1:" + base64.b64encode(b"a" * 32).decode(), "too regular"),
        ("bad id:" + base64.b64encode(secrets.token_bytes(32)).decode(), "an id that is not"),
        (TEST_RESULT_KEYS + "," + TEST_RESULT_KEYS, "used twice"),
    ],
)
def test_malformed_or_weak_result_keys_are_refused_without_showing_them(keys, rule):
    with pytest.raises(ValidationError, match=rule) as refused:
        settings(database_url=URL, prompt_hash_key=TEST_HASH_KEY, result_encryption_keys=keys)
    assert all(keys.partition(":")[2] not in str(e["msg"]) for e in refused.value.errors() if ":" in keys)
