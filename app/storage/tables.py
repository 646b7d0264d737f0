"""The tables, as SQLModel classes: the source Alembic's migrations are checked against.

Nothing reads or writes through these classes (the statements in `app.storage` return the
records of `app.domain`), and the public payloads live in `app.schemas`, so a column never
leaks into an answer.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Identity,
    Index,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from app.domain import AuditAction, AuditOutcome, Channel, Role, StoreOutput, TaskStatus
from app.domain.webhooks import EVENT_TYPES, DeliveryState

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


def _in(column: str, values: type[StrEnum] | tuple[str, ...]) -> str:
    """`column::text = ANY ('{"a","b"}'::text[])`, not `column IN ('a', 'b')`: PostgreSQL plans a
    CHECK again at the start of every statement that writes the table, and stores an IN list as
    one constant and one cast per value, which made each write pay for every value (an audit
    insert ran at 0.67 of the rate without its CHECKs; as one literal, at the same rate). A
    migration that changes such a list writes it this way too (migration 7d8e9f0a1b2c)."""
    names = [v.value if isinstance(v, StrEnum) else v for v in values]
    return f"""{column}::text = ANY ('{{{",".join(f'"{name}"' for name in names)}}}'::text[])"""


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kwargs)


class ApiKeyRow(SQLModel, table=True):
    """An API key: only its SHA-256 is kept; the plain key is shown once."""

    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint(_in("role", Role), name="role"),
        CheckConstraint(_in("store_output", StoreOutput), name="store_output"),
        CheckConstraint("max_retention_days > 0", name="max_retention_days"),
        CheckConstraint("monthly_token_budget > 0", name="monthly_token_budget"),
        CheckConstraint("monthly_usd_budget > 0", name="monthly_usd_budget"),
    )

    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    key_prefix: str = Field(max_length=16)
    created_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
    revoked_at: datetime | None = _utc(default=None, nullable=True)
    # Per-key limits; NULL means the server's default (RATE_LIMIT_PER_MINUTE, MAX_RUNNING_TASKS), 0 none.
    rate_limit_per_minute: int | None = Field(default=None, ge=0)
    max_running_tasks: int | None = Field(default=None, ge=0)
    # The key's data policy: `never` stores none of its answers (every task acts as `store: false`);
    # `max_retention_days` caps its tasks' retention below RESULT_RETENTION_DAYS (NULL: no own cap).
    store_output: str = Field(
        default=StoreOutput.ALLOWED.value, max_length=16, sa_column_kwargs={"server_default": text("'allowed'")}
    )
    max_retention_days: float | None = Field(default=None, sa_type=Double())
    # The webhook signing secret (`whsec_...`), sealed (ResultCipher, bound to this key's id);
    # after a rotation the previous one keeps signing too, until `webhook_secret_previous_until`.
    webhook_secret_at: datetime | None = _utc(default=None, nullable=True)
    webhook_secret: bytes | None = Field(default=None, sa_type=LargeBinary)
    webhook_secret_previous: bytes | None = Field(default=None, sa_type=LargeBinary)
    webhook_secret_previous_until: datetime | None = _utc(default=None, nullable=True)
    # Monthly budgets (NULL: none), checked at each submission against `key_usage`.
    monthly_token_budget: int | None = Field(default=None, sa_type=BigInteger())
    monthly_usd_budget: Decimal | None = Field(default=None, sa_type=Numeric(20, 6))


class TaskRow(SQLModel, table=True):
    """One agent task and its result. The prompt itself is never stored, only its keyed hash."""

    __tablename__ = "agent_task"
    __table_args__ = (
        CheckConstraint(_in("status", TaskStatus), name="status"),
        CheckConstraint(_in("response_format", ("json_schema", "json_object")), name="response_format"),
        Index("ix_agent_task_owner_id_created_at_id", "owner_id", text("created_at DESC"), text("id DESC")),
        Index("ix_agent_task_expires_at", "expires_at"),
        Index("ix_agent_task_prompt_hash", "prompt_hash"),
        Index(
            "ix_agent_task_owner_id_cache_key_created_at",
            "owner_id",
            "cache_key",
            text("created_at DESC"),
            postgresql_where=text("cache_key IS NOT NULL"),
        ),
        Index(
            "uq_agent_task_owner_id_idempotency_key",
            "owner_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_agent_task_lease_expires_at",
            "lease_expires_at",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
        # Counting a key's running tasks for MAX_RUNNING_TASKS: only unfinished rows are indexed.
        Index(
            "ix_agent_task_owner_id_active",
            "owner_id",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    owner_id: uuid.UUID = Field(foreign_key="api_key.id", ondelete="RESTRICT")
    status: str = Field(max_length=16)
    model: str = Field(max_length=200)
    template: str | None = Field(default=None, max_length=200)
    prompt_hash: str = Field(max_length=64)
    prompt_hash_key_id: str = Field(max_length=32)
    # Sealed (AES-256-GCM, bound to this row's id and owner): a reader of the table, a replica or
    # a backup holds ciphertext only. NULL: no context.
    context: bytes | None = Field(default=None, sa_type=LargeBinary)
    params: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    output: bytes | None = Field(default=None, sa_type=LargeBinary)  # sealed, like context
    error_code: str | None = Field(default=None, max_length=32)
    error_message: str | None = Field(default=None, sa_type=Text)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    created_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
    completed_at: datetime | None = _utc(default=None, nullable=True)
    expires_at: datetime = _utc()
    # Keyed hash of (owner, rendered messages, model, params): the response cache's key.
    cache_key: str | None = Field(default=None, max_length=64)
    # The caller's Idempotency-Key, and the keyed hash of the request it came with.
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)
    # Until when the runner vouches for a pending or running task (renewed while it runs).
    lease_expires_at: datetime | None = _utc(default=None, nullable=True)
    # False for a `store: false` task: its answer went to the waiting caller and nowhere else;
    # `output` and `context` stay NULL, and the row is never a cache source.
    output_stored: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})
    # Where to POST the task's end (`webhook_delivery`, written by a trigger when the status is final).
    webhook_url: str | None = Field(default=None, sa_type=Text)
    # What the provider call cost, in US dollars (genai-prices); NULL: unpriced. Exact (NUMERIC), so
    # that a month's sum per key (GET /usage, budgets) adds up to the cent.
    cost_usd: Decimal | None = Field(default=None, sa_type=Numeric(20, 12))
    # The kind of a structured answer (`json_schema`, `json_object`): `output` holds validated JSON,
    # which reads parse. NULL: plain text. Never the schema, which is not stored.
    response_format: str | None = Field(default=None, max_length=16)


class AuditEventRow(SQLModel, table=True):
    """Who did what to which task, over which channel, with what outcome. Never a row's contents."""

    __tablename__ = "audit_event"
    __table_args__ = (
        CheckConstraint(_in("channel", Channel), name="channel"),
        CheckConstraint(_in("action", AuditAction), name="action"),
        CheckConstraint(_in("outcome", AuditOutcome), name="outcome"),
        Index("ix_audit_event_task_id_id", "task_id", "id"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
        # The sealer and `audit verify` select by transaction id. BRIN, not B-tree: xact grows with
        # the table's physical order, and a BRIN index costs an insert (the hot path) next to nothing.
        Index("ix_audit_event_xact", "xact", postgresql_using="brin"),
        # One partition per UTC day of occurred_at (app.storage.partitions): the purge drops whole
        # days. A partitioned table's primary key must hold the partition key, hence (id, occurred_at).
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True))
    occurred_at: datetime = _utc(primary_key=True, sa_column_kwargs={"server_default": text("now()")})
    # No foreign keys: the audit trail must outlive the keys and tasks it speaks of.
    actor_id: uuid.UUID | None = None
    actor_role: str | None = Field(default=None, max_length=16)
    channel: str = Field(max_length=8)
    action: str = Field(max_length=16)
    task_id: uuid.UUID | None = None
    outcome: str = Field(max_length=16)
    request_id: str | None = Field(default=None, max_length=64)
    # Counts and timings only (a purge run's figures), never task contents.
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    # Sealing bookkeeping, outside every digest: the writing transaction's id (the 64-bit xid8 as
    # a bigint: txid_current(), which is pg_current_xact_id() without its cast through text). A
    # DEFAULT, so the audited statements' text is unchanged. The sealer takes only
    # events whose transaction has ended for everyone, so a late commit never lands in a sealed range.
    xact: int = Field(sa_column=Column(BigInteger, nullable=False, server_default=text("txid_current()")))


class AuditSealRow(SQLModel, table=True):
    """A signed checkpoint over audit events, chained to the seal before it (app.domain.seals)."""

    __tablename__ = "audit_seal"
    __table_args__ = (
        # The chain cannot fork: two seals never follow the same one.
        UniqueConstraint("previous_digest"),
        Index("ix_audit_seal_last_occurred_at", "last_occurred_at"),
    )

    id: int = Field(sa_column=Column(BigInteger, Identity(), primary_key=True))
    sealed_at: datetime = _utc()
    xact_watermark: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_event_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_event_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    event_count: int
    first_occurred_at: datetime = _utc()
    last_occurred_at: datetime = _utc()
    # The covered events, in id order, and each one's digest (hex SHA-256): what names a changed event.
    event_ids: list[int] = Field(sa_column=Column(ARRAY(BigInteger), nullable=False))
    event_digests: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    events_digest: str = Field(max_length=64)
    previous_digest: str = Field(max_length=64)
    digest: str = Field(max_length=64)
    signature: str = Field(max_length=128)  # base64 of the Ed25519 signature
    key_id: str = Field(max_length=64)  # the signing key's fingerprint


class WebhookDeliveryRow(SQLModel, table=True):
    """The outbox: a finished task's webhook, its attempts, and whether the receiver took it.

    Written by the trigger `agent_task_webhook_outbox` (migration 0b1c2d3e4f5a) in the transaction
    that ends the task; claimed by one replica at a time (`claim`, `claimed_until`)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint(_in("state", DeliveryState), name="state"),
        CheckConstraint(_in("event_type", EVENT_TYPES), name="event_type"),
        Index("ix_webhook_delivery_next_attempt_at", "next_attempt_at", postgresql_where=text("state = 'pending'")),
    )

    task_id: uuid.UUID = Field(primary_key=True, foreign_key="agent_task.id", ondelete="CASCADE")
    owner_id: uuid.UUID
    url: str = Field(sa_type=Text)
    event_type: str = Field(max_length=32)
    message_id: str = Field(max_length=64)  # `msg_` and the task id: the same on every attempt
    state: str = Field(
        default=DeliveryState.PENDING.value, max_length=16, sa_column_kwargs={"server_default": text("'pending'")}
    )
    attempts: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    )
    attempt_count: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    next_attempt_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
    claim: uuid.UUID | None = None
    claimed_until: datetime | None = _utc(default=None, nullable=True)
    delivered_at: datetime | None = _utc(default=None, nullable=True)
    created_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})


class ConsoleSessionRow(SQLModel, table=True):
    """A signed-in browser of the console: the SHA-256 of its session token (never the token), the
    API key it acts as, and when it ends (absolute `expires_at`; idle, counted from `last_seen_at`)."""

    __tablename__ = "console_session"
    __table_args__ = (
        Index("ix_console_session_key_id", "key_id"),
        Index("ix_console_session_expires_at", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    key_id: uuid.UUID = Field(foreign_key="api_key.id", ondelete="CASCADE")
    created_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
    last_seen_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
    expires_at: datetime = _utc()


class RateLimitRow(SQLModel, table=True):
    """Per-key request pacing (GCRA): the theoretical arrival time of the key's next request.

    UNLOGGED: no WAL per request, and after a crash the table is empty, which only
    forgives the current minute's requests.
    """

    __tablename__ = "rate_limit"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    # No foreign key: an unlogged table cannot be referenced, and keys are never deleted.
    api_key_id: uuid.UUID = Field(primary_key=True)
    next_allowed_at: datetime = _utc()


class LegalHoldRow(SQLModel, table=True):
    """A legal hold: one task, or every task of one API key, kept past retention for a matter.

    No foreign key to `agent_task`: a task hold outlives the task (history), and the purge of a
    released task must not wait on it. Released holds keep their row, with `released_at`.
    """

    __tablename__ = "legal_hold"
    __table_args__ = (
        CheckConstraint("(task_id IS NULL) <> (owner_key_id IS NULL)", name="one_target"),
        # The holds in force, looked up by task and by owner on every erasure, read and purge batch.
        Index("ix_legal_hold_task_id", "task_id", postgresql_where=text("released_at IS NULL")),
        Index("ix_legal_hold_owner_key_id", "owner_key_id", postgresql_where=text("released_at IS NULL")),
    )

    id: uuid.UUID = Field(primary_key=True)
    reference: str = Field(max_length=100)  # the matter's identifier (letters, digits, -_./:), never free text
    task_id: uuid.UUID | None = None
    owner_key_id: uuid.UUID | None = Field(default=None, foreign_key="api_key.id", ondelete="RESTRICT")
    created_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
    created_by: uuid.UUID | None = None  # the placing key; NULL from the command line
    released_at: datetime | None = _utc(default=None, nullable=True)


class KeyUsageRow(SQLModel, table=True):
    """The budget ledger: one key's provider calls in one calendar month (UTC, by task creation).

    Written only by the trigger `agent_task_usage_ledger` (migration 6b7c8d9e0f1a), in the
    transaction that ends a task; read by every submission of a key with a budget. Unlike
    `GET /usage`, which sums live rows, it outlives the purge and erasure of the tasks it counts."""

    __tablename__ = "key_usage"

    owner_id: uuid.UUID = Field(primary_key=True, foreign_key="api_key.id", ondelete="RESTRICT")
    month: date = Field(primary_key=True)
    tasks: int = Field(default=0, sa_type=BigInteger(), sa_column_kwargs={"server_default": text("0")})
    tokens: int = Field(default=0, sa_type=BigInteger(), sa_column_kwargs={"server_default": text("0")})
    cost_usd: Decimal = Field(
        default=Decimal(0), sa_type=Numeric(20, 12), sa_column_kwargs={"server_default": text("0")}
    )
    unpriced_tasks: int = Field(default=0, sa_type=BigInteger(), sa_column_kwargs={"server_default": text("0")})
    updated_at: datetime = _utc(sa_column_kwargs={"server_default": text("now()")})
