"""Service configuration, read from the environment or `.env` (pydantic-settings)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.settings.secrets import (
    GOOD_RESULT_KEY_HINT,
    GOOD_SECRET_HINT,
    GOOD_SIGNING_KEY_HINT,
    parse_result_keys,
    secret_weakness,
    signing_key_weakness,
)

PositiveFloat = Annotated[float, Field(gt=0)]
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "prompt_templates"


class ProviderEndpoint(BaseModel):
    """A named OpenAI-compatible endpoint (a local Ollama or vLLM, another vendor, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_\-]{0,31}$",
        description="the provider's name, as in `name:model`: lower-case letters, digits, `-` and `_`, at most 32",
    )
    base_url: str = Field(description="the endpoint's OpenAI-compatible base URL, e.g. `http://localhost:11434/v1`")
    api_key_env: str | None = Field(default=None, description="the environment variable holding its key, if any")
    structured_output: bool = Field(
        default=True,
        description="false: the endpoint does not take `response_format` (json_schema); a task's format is asked "
        "for in the system message instead (the answer is validated either way)",
    )


class Settings(BaseSettings):
    """Every setting of the service; names match the environment variables."""

    # An empty variable (`OPENAI_API_KEY=` in a .env or a compose file) is the same as an unset one.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    database_url: str | None = Field(
        default=None,
        description="The PostgreSQL database: any `postgresql://` URL (the driver is the service's business). "
        "Unset: the commands start an embedded development PostgreSQL under `DATA_DIR`.",
    )
    data_dir: Path = Field(
        default=Path(".data"),
        description="Where the embedded development database and its development prompt hash key and audit "
        "signing key live "
        "(used only while `DATABASE_URL` is unset).",
    )

    openai_api_key: SecretStr | None = Field(
        default=None, description="The OpenAI API key; setting it enables the `openai` provider."
    )
    openai_base_url: str | None = Field(
        default=None,
        description="Any OpenAI-compatible endpoint for the `openai` provider (Ollama, vLLM, ...); unset: OpenAI "
        "itself. Setting it enables the `openai` provider too.",
    )
    default_model: str | None = Field(
        default=None,
        description="The model when a task names none: `provider:model` or an alias. Unset: `openai:gpt-4o-mini` "
        "when OpenAI is configured (`OPENAI_API_KEY` or `OPENAI_BASE_URL`), else `offline:echo`.",
    )
    default_provider: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_\-]{0,31}$",
        description="The provider of a bare model name (one without a configured provider before a `:`): with "
        "`openai`, `gpt-4o` means `openai:gpt-4o`. Aliases win over it. Unset: a bare name that is not an alias "
        "is a 422 `unknown_model`.",
    )
    provider_timeout_seconds: PositiveFloat = Field(
        default=60.0,
        description="The most a whole provider call may take, retries and waits included; past it the task fails "
        "with `timeout`.",
    )
    provider_request_timeout_seconds: PositiveFloat = Field(
        default=30.0, description="The most one attempt of a provider call may take (a slower attempt is retried)."
    )
    provider_max_retries: int = Field(
        default=3, ge=0, le=10, description="Retries after a failed attempt of a provider call."
    )
    provider_retry_max_seconds: PositiveFloat = Field(
        default=30.0, description="No retry of a provider call starts later than this after its first attempt began."
    )
    provider_endpoints: list[ProviderEndpoint] = Field(
        default_factory=list,
        description="More OpenAI-compatible endpoints, each a provider of its own, as a JSON list: "
        '`[{"name": "ollama", "base_url": "http://localhost:11434/v1"}]` '
        "(fields `name`, `base_url`, optional `api_key_env` and `structured_output`).",
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Model aliases as a JSON object, alias to `provider:model`: `{"fast": "openai:gpt-4o-mini"}`.',
    )
    templates_dir: Path = Field(
        default=TEMPLATES_DIR,
        description="Where the prompt templates live: one `<name>/<version>.toml` file per template version.",
    )
    cache_ttl_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long a succeeded answer may serve the same caller's identical requests (0: no cache).",
    )
    structured_output_retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="How many times an answer that does not validate against the task's `response_format` is asked "
        "again (telling the model what was wrong) before the task fails with `invalid_output`; every attempt's "
        "tokens count. Never in a stream.",
    )
    stream_keepalive_seconds: PositiveFloat = Field(
        default=15.0,
        description="How often a streamed answer (`?stream=true`) sends a keep-alive comment while no text "
        "arrives, so that proxies and load balancers do not close a quiet connection; keep their read timeouts "
        "above it.",
    )
    task_lease_seconds: PositiveFloat = Field(
        default=30.0,
        description="A runner's lease on a task, renewed while it runs; a task whose lease runs out ends "
        "`failed` with `interrupted`.",
    )

    prompt_hash_key: SecretStr | None = Field(
        default=None,
        description="The HMAC-SHA-256 key for prompt hashes, at least 32 characters (`openssl rand -hex 32`); "
        "required when `DATABASE_URL` is set. Changing it rotates the key: old hashes keep their key id.",
    )
    result_encryption_keys: SecretStr | None = Field(
        default=None,
        description="The keys that seal results at rest (AES-256-GCM): comma-separated `id:base64-of-32-bytes`, "
        "the first one sealing new rows, the others still opening old ones (`openssl rand -base64 32`); "
        "required when `DATABASE_URL` is set. See Governance for rotation and retirement.",
    )
    result_key_provider: str | None = Field(
        default=None,
        description="The name of a key-provider plugin (entry-point group `agent_service.key_providers`: a KMS, "
        "Vault Transit) that gives the result keys instead of `RESULT_ENCRYPTION_KEYS`. See Governance.",
    )
    max_prompt_chars: int = Field(
        default=32_000, ge=1, le=1_000_000, description="The longest prompt accepted, in characters."
    )

    result_retention_days: PositiveFloat = Field(
        default=30,
        description="How long a task and its result are kept, in days; also the most a task may ask for "
        "(`retention_days`).",
    )
    failed_result_retention_days: PositiveFloat | None = Field(
        default=None, description="Keep failed tasks at most this many days; unset: as long as any other task."
    )
    audit_retention_days: PositiveFloat = Field(
        default=365,
        description="How long audit events are kept, in days. The purge removes whole sealed ranges only: "
        "a seal's events go once the newest of them is this old.",
    )
    audit_seal_seconds: PositiveFloat = Field(
        default=60,
        description="How often the audit events committed since the last seal are sealed into the signed chain.",
    )
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="The Ed25519 private key that signs audit seals and exports: the base64 of its 32 bytes "
        "(how to make one: The tamper-evident audit trail); required when `DATABASE_URL` is set. "
        "Unset in development: one is made under `DATA_DIR`.",
    )
    purge_cron: str = Field(
        default="0 * * * *",
        description="When the in-service retention purge runs: a crontab expression (minute hour day month "
        "weekday), in UTC; write weekdays as names (`mon-fri`).",
    )
    purge_enabled: bool = Field(
        default=True,
        description="`false`: no in-service purge schedule (run `agent-service purge` from an external cron).",
    )
    purge_batch_size: int = Field(
        default=20_000, ge=1, le=200_000, description="Rows the purge deletes per transaction."
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="The level of the service's logs (on stderr); any case."
    )
    logfire_token: SecretStr | None = Field(
        default=None,
        description="Sends traces, logs and metrics to logfire; without it no telemetry leaves the machine.",
    )

    db_pool_min_size: int = Field(default=2, ge=0, description="Database connections each process keeps open.")
    db_pool_max_size: int = Field(
        default=20, ge=1, description="The most database connections each process opens (its pool's size)."
    )
    db_connect_timeout_seconds: PositiveFloat = Field(
        default=5.0,
        description="How long a request waits for a database connection before answering 503 `database_unavailable`.",
    )
    db_command_timeout_seconds: PositiveFloat = Field(default=10.0, description="The longest a SQL statement may run.")
    db_statement_cache_size: int = Field(
        default=256,
        ge=0,
        description="Prepared statements cached per connection; 0 behind PgBouncer in transaction pooling mode.",
    )
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a verified API key is remembered in-process. A revocation or new limits reach every "
        "process at once (PostgreSQL LISTEN/NOTIFY); this bounds how long a missed notification can be felt.",
    )
    auth_failure_limit: int = Field(
        default=10,
        ge=0,
        description="Failed authentications (a key that is unknown or revoked) one client address (an IPv6 /64) "
        "may make per `AUTH_FAILURE_WINDOW_SECONDS`; past it 429 `too_many_failed_attempts`, with no database "
        "lookup. Active keys keep working from that address. 0: no throttle.",
    )
    auth_failure_window_seconds: PositiveFloat = Field(
        default=60.0,
        description="The window of `AUTH_FAILURE_LIMIT`, in seconds, from an address's first failure; the longest "
        "`Retry-After` of its 429.",
    )

    console_session_hours: PositiveFloat = Field(
        default=8.0,
        description="How long a console sign-in lasts at most, in hours, however active it is (absolute expiry).",
    )
    console_session_idle_minutes: PositiveFloat = Field(
        default=30.0,
        description="A console session unused for this many minutes has ended (idle expiry).",
    )
    console_secure_cookie: bool | None = Field(
        default=None,
        description="Mark the console's cookies `Secure` (sent over HTTPS only). Unset: when the request is HTTPS "
        "(behind a proxy, with uvicorn's `--forwarded-allow-ips` so the scheme is seen).",
    )

    rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description="Requests a minute per API key, across every replica (kept in PostgreSQL); over it 429 "
        "`too_many_requests`. 0: no limit. A key's own limit (`keys create/limits --rate-limit`) takes precedence.",
    )
    max_running_tasks: int = Field(
        default=0,
        ge=0,
        description="Unfinished (pending or running) tasks per API key at once, across every replica; over it 429 "
        "`too_many_running_tasks`. 0: no limit. A key's own cap (`--max-running`) takes precedence.",
    )
    max_request_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="The largest request body on REST and MCP, in bytes; over it 413 `payload_too_large`.",
    )
    # The HTTP server's own limits (app/transport.py), before any route or key is looked at.
    http_max_request_line_bytes: int = Field(
        default=8192,
        ge=256,
        le=1_048_576,
        description="The longest request target (path and query string), in bytes; over it 414 and the "
        "connection is closed.",
    )
    http_max_header_bytes: int = Field(
        default=32_768,
        ge=1024,
        le=1_048_576,
        description="The most bytes of request headers (names and values together); over it 431 and the "
        "connection is closed. A header that never ends is cut off at this size.",
    )
    http_max_headers: int = Field(
        default=100,
        ge=8,
        le=10_000,
        description="The most request header fields; over it 431 and the connection is closed.",
    )
    http_header_timeout_seconds: PositiveFloat = Field(
        default=10.0,
        description="How long a request's headers may take to arrive, from the connection (or the request's first "
        "byte on a kept-alive connection); past it 408 and the connection is closed.",
    )
    http_body_timeout_seconds: PositiveFloat = Field(
        default=30.0,
        description="How long a request's body may take to arrive, from the end of its headers; past it 408 and "
        "the connection is closed.",
    )
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host headers `/mcp` accepts besides loopback and the address it listens on (DNS-rebinding "
        "protection): `name`, `name:port` or patterns such as `*.example.com`.",
    )
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins `/mcp` accepts besides same-origin and loopback.",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS); none: CORS is off.",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Webhook hosts allowed although they are, or resolve to, loopback, private, link-local or "
        "other non-public addresses (names or IP literals, exact match); they may also use http. Everything "
        "else must be https to a public address.",
    )
    webhook_timeout_seconds: PositiveFloat = Field(
        default=10.0, description="How long one webhook delivery attempt may take, connection included."
    )
    webhook_retry_seconds: PositiveFloat = Field(
        default=5.0,
        description="The wait before the first retry of a failed delivery; it doubles with each attempt (with "
        "jitter), up to an hour.",
    )
    webhook_retry_hours: PositiveFloat = Field(
        default=24.0, description="How long a delivery is retried, from the task's end; then it is `failed`."
    )
    webhook_poll_seconds: PositiveFloat = Field(
        default=5.0,
        description="How often each replica looks for deliveries due (retries, and any notification it missed).",
    )
    # Spans with nowhere to go cost the hot path ~60% of its throughput (scripts/bench.py), so they
    # are off unless something would receive them.
    trace_requests: bool | None = Field(
        default=None, description="A span per HTTP request. Unset: on when `LOGFIRE_TOKEN` is set."
    )
    trace_sql: bool | None = Field(
        default=None,
        description="A span per SQL statement (its text, never its parameters). Unset: on when `LOGFIRE_TOKEN` is set.",
    )
    trace_sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="The share of requests traced (head sampling)."
    )

    @field_validator(
        "mcp_allowed_hosts", "mcp_allowed_origins", "cors_allow_origins", "webhook_allowed_hosts", mode="before"
    )
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
        if key is not None and (weakness := secret_weakness(key)) is not None:
            raise ValueError(f"PROMPT_HASH_KEY {weakness}; {GOOD_SECRET_HINT}")
        result_keys = self.result_encryption_keys.get_secret_value() if self.result_encryption_keys else None
        if self.database_url is not None and result_keys is None and self.result_key_provider is None:
            raise ValueError(f"RESULT_ENCRYPTION_KEYS is required when DATABASE_URL is set; {GOOD_RESULT_KEY_HINT}")
        if result_keys is not None:
            parse_result_keys(result_keys)
        signing_key = self.audit_signing_key.get_secret_value() if self.audit_signing_key else None
        if self.database_url is not None and signing_key is None:
            raise ValueError("AUDIT_SIGNING_KEY is required when DATABASE_URL is set")
        if signing_key is not None and (weakness := signing_key_weakness(signing_key)) is not None:
            raise ValueError(f"AUDIT_SIGNING_KEY {weakness}; {GOOD_SIGNING_KEY_HINT}")
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
