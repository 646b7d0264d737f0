"""Settings refuse unsafe secrets; any PostgreSQL URL works whatever driver it names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings
from app.storage.database import asyncpg_dsn, sqlalchemy_url

URL = "postgresql://u:p@db:5432/agents"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_database_url_needs_a_prompt_hash_key():
    with pytest.raises(ValidationError, match="PROMPT_HASH_KEY is required"):
        settings(database_url=URL, prompt_hash_key=None)


@pytest.mark.parametrize("key", ["changeme", "secret", "short-key"])
def test_placeholder_and_short_hash_keys_are_refused(key):
    with pytest.raises(ValidationError, match="PROMPT_HASH_KEY"):
        settings(database_url=URL, prompt_hash_key=key)


def test_without_a_database_url_the_embedded_default_needs_no_key():
    assert settings().database_url is None


def test_the_default_model_follows_the_configured_providers():
    assert settings().resolved_default_model == "offline:echo"
    assert settings(openai_api_key="sk-x").resolved_default_model == "openai:gpt-4o-mini"
    assert settings(openai_base_url="http://ollama:11434/v1", default_model="openai:llama3").resolved_default_model == (
        "openai:llama3"
    )


def test_secrets_do_not_show_in_the_settings_repr():
    shown = repr(settings(database_url=URL, prompt_hash_key="k" * 40, openai_api_key="sk-very-secret"))
    assert "k" * 40 not in shown
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
