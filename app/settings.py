"""Service configuration, read from the environment or `.env` (pydantic-settings)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values people paste from examples; refusing them beats running with a known secret.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me", "xxx", "example"})
MIN_HASH_KEY_CHARS = 32

PositiveFloat = Annotated[float, Field(gt=0)]
TEMPLATES_DIR = Path(__file__).resolve().parent / "prompt_templates"


class ProviderEndpoint(BaseModel):
    """A named OpenAI-compatible endpoint (a local Ollama or vLLM, another vendor, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,31}$")
    base_url: str
    api_key_env: str | None = Field(default=None, description="the environment variable holding its key, if any")


class Settings(BaseSettings):
    """Every setting of the service; names match the environment variables."""

    # An empty variable (`OPENAI_API_KEY=` in a .env or a compose file) is the same as an unset one.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    database_url: str | None = None
    data_dir: Path = Path(".data")

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    default_model: str | None = None
    # The whole provider call, retries included; and one attempt of it.
    provider_timeout_seconds: PositiveFloat = 60.0
    provider_request_timeout_seconds: PositiveFloat = 30.0
    provider_max_retries: int = Field(default=3, ge=0, le=10)
    provider_retry_max_seconds: PositiveFloat = 30.0
    # JSON, e.g. [{"name": "ollama", "base_url": "http://localhost:11434/v1"}]
    provider_endpoints: list[ProviderEndpoint] = Field(default_factory=list)
    # JSON, e.g. {"fast": "openai:gpt-4o-mini", "smart": "openai:gpt-4o"}
    model_aliases: dict[str, str] = Field(default_factory=dict)
    templates_dir: Path = TEMPLATES_DIR
    cache_ttl_seconds: float = Field(default=3600.0, ge=0)
    task_lease_seconds: PositiveFloat = 30.0

    prompt_hash_key: SecretStr | None = None
    max_prompt_chars: int = Field(default=32_000, ge=1, le=1_000_000)

    result_retention_days: PositiveFloat = 30
    failed_result_retention_days: PositiveFloat | None = None
    audit_retention_days: PositiveFloat = 365
    purge_cron: str = "0 * * * *"
    purge_enabled: bool = True
    purge_batch_size: int = Field(default=20_000, ge=1, le=200_000)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    logfire_token: SecretStr | None = None

    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=20, ge=1)
    db_connect_timeout_seconds: PositiveFloat = 5.0
    db_command_timeout_seconds: PositiveFloat = 10.0
    db_statement_cache_size: int = Field(default=256, ge=0)
    auth_cache_seconds: float = Field(default=10.0, ge=0)

    # Per API key, across every replica (kept in PostgreSQL); 0 is no limit. A key's own
    # limits (`keys create --rate-limit/--max-running`) take precedence.
    rate_limit_per_minute: int = Field(default=0, ge=0)
    max_running_tasks: int = Field(default=0, ge=0)
    # Largest request body on REST and MCP (413 above it).
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Host headers /mcp accepts besides localhost and the address it listens on (DNS-rebinding
    # protection); "name", "name:port" or patterns such as "*.example.com". Comma-separated or JSON.
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Browser origins /mcp accepts besides same-origin and localhost.
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # CORS is off unless origins are listed here.
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A span per HTTP request, and per SQL statement (text only, never parameters). Unset:
    # on when LOGFIRE_TOKEN is set. Spans with nowhere to go cost the hot path ~60% of its
    # throughput (scripts/bench.py), so they are off when nothing would receive them.
    trace_requests: bool | None = None
    trace_sql: bool | None = None
    trace_sample_rate: float = Field(default=1.0, ge=0, le=1)  # share of requests traced (head sampling)

    @field_validator("mcp_allowed_hosts", "mcp_allowed_origins", "cors_allow_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """`a,b` or `["a", "b"]`."""
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("purge_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"PURGE_CRON is not a crontab expression (minute hour day month weekday): {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        key = self.prompt_hash_key.get_secret_value() if self.prompt_hash_key else None
        if self.database_url is not None and key is None:
            raise ValueError("PROMPT_HASH_KEY is required when DATABASE_URL is set")
        if key is not None:
            if key.strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError("PROMPT_HASH_KEY is a placeholder; generate one with `openssl rand -hex 32`")
            if len(key) < MIN_HASH_KEY_CHARS:
                raise ValueError(f"PROMPT_HASH_KEY must be at least {MIN_HASH_KEY_CHARS} characters")
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        return self

    @property
    def tracing_requests(self) -> bool:
        return self.trace_requests if self.trace_requests is not None else self.logfire_token is not None

    @property
    def tracing_sql(self) -> bool:
        return self.trace_sql if self.trace_sql is not None else self.logfire_token is not None

    @property
    def openai_configured(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None

    @property
    def resolved_default_model(self) -> str:
        if self.default_model:
            return self.default_model
        return "openai:gpt-4o-mini" if self.openai_configured else "offline:echo"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
