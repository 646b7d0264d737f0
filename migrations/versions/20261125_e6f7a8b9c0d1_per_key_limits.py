"""Per-key limits: request rate (an unlogged GCRA table) and running tasks.

Revision ID: e6f7a8b9c0d1
Revises: d5e6f7a8b9c0
Create Date: 2026-11-25 11:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e6f7a8b9c0d1"
down_revision: str | Sequence[str] | None = "d5e6f7a8b9c0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_key", sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
    op.add_column("api_key", sa.Column("max_running_tasks", sa.Integer(), nullable=True))
    op.create_table(
        "rate_limit",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("next_allowed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", name=op.f("pk_rate_limit")),
        prefixes=["UNLOGGED"],
    )
    op.create_index(
        "ix_agent_task_owner_id_active",
        "agent_task",
        ["owner_id"],
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_agent_task_owner_id_active", table_name="agent_task")
    op.drop_table("rate_limit")
    op.drop_column("api_key", "max_running_tasks")
    op.drop_column("api_key", "rate_limit_per_minute")
