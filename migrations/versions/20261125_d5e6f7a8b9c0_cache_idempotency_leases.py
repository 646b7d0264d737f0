"""Response cache key, idempotency key and request hash, runner leases.

Revision ID: d5e6f7a8b9c0
Revises: c4d1e2f3a5b6
Create Date: 2026-11-25 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d5e6f7a8b9c0"
down_revision: str | Sequence[str] | None = "c4d1e2f3a5b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agent_task", sa.Column("cache_key", sa.String(length=64), nullable=True))
    op.add_column("agent_task", sa.Column("idempotency_key", sa.String(length=200), nullable=True))
    op.add_column("agent_task", sa.Column("request_hash", sa.String(length=64), nullable=True))
    op.add_column("agent_task", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_agent_task_owner_id_cache_key_created_at",
        "agent_task",
        ["owner_id", "cache_key", sa.literal_column("created_at DESC")],
        postgresql_where=sa.text("cache_key IS NOT NULL"),
    )
    op.create_index(
        "uq_agent_task_owner_id_idempotency_key",
        "agent_task",
        ["owner_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_agent_task_lease_expires_at",
        "agent_task",
        ["lease_expires_at"],
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_agent_task_lease_expires_at", table_name="agent_task")
    op.drop_index("uq_agent_task_owner_id_idempotency_key", table_name="agent_task")
    op.drop_index("ix_agent_task_owner_id_cache_key_created_at", table_name="agent_task")
    op.drop_column("agent_task", "lease_expires_at")
    op.drop_column("agent_task", "request_hash")
    op.drop_column("agent_task", "idempotency_key")
    op.drop_column("agent_task", "cache_key")
