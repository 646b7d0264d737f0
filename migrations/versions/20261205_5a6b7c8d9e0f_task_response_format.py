"""Structured output (issue 15): `agent_task.response_format`, the kind of a structured answer.

- `response_format` is VARCHAR(16), nullable, without a default (a catalog change, no row is
  rewritten), checked to `json_schema` or `json_object`. NULL: a plain-text answer, which every
  row from before it is. It says only the kind: the schema is never stored.

The downgrade drops the column: the structured answers stay (sealed, as text) and read back
as plain text, without `output_json`.

Revision ID: 5a6b7c8d9e0f
Revises: 6b7c8d9e0f1a
Create Date: 2026-12-05 21:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5a6b7c8d9e0f"
down_revision: str | Sequence[str] | None = "6b7c8d9e0f1a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agent_task", sa.Column("response_format", sa.String(16), nullable=True))
    op.create_check_constraint(
        op.f("ck_agent_task_response_format"), "agent_task", "response_format IN ('json_schema', 'json_object')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_agent_task_response_format"), "agent_task", type_="check")
    op.drop_column("agent_task", "response_format")
