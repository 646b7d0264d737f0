"""Data policy (issue 13, part 5): tasks whose answer is not stored, and per-key policy.

`agent_task.output_stored` is false for a `store: false` task: its answer went to the waiting
caller only, and its output and context were never written. `api_key.store_output` (`never`
or `allowed`) forces that per key, and `api_key.max_retention_days` caps a key's retention
below the server's. Existing rows are stored answers and keys that allow storing.

Downgrading drops the three columns: a not-stored task then reads as a finished task without
an output, and keys lose their policy (their next tasks are stored again).

Revision ID: d4e5f6a7b8c9
Revises: c2d3e4f5a6b7
Create Date: 2026-12-03 18:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4e5f6a7b8c9"
down_revision: str | Sequence[str] | None = "c2d3e4f5a6b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_task", sa.Column("output_stored", sa.Boolean(), server_default=sa.text("true"), nullable=False)
    )
    op.add_column(
        "api_key",
        sa.Column("store_output", sa.String(length=16), server_default=sa.text("'allowed'"), nullable=False),
    )
    op.add_column("api_key", sa.Column("max_retention_days", sa.Double(), nullable=True))
    op.create_check_constraint(op.f("ck_api_key_store_output"), "api_key", "store_output IN ('never', 'allowed')")
    op.create_check_constraint(op.f("ck_api_key_max_retention_days"), "api_key", "max_retention_days > 0")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_api_key_max_retention_days"), "api_key", type_="check")
    op.drop_constraint(op.f("ck_api_key_store_output"), "api_key", type_="check")
    op.drop_column("api_key", "max_retention_days")
    op.drop_column("api_key", "store_output")
    op.drop_column("agent_task", "output_stored")
