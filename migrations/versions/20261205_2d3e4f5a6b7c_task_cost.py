"""Cost per task (issue 15): `agent_task.cost_usd`, and the audit action `usage_read`.

- `cost_usd` is NUMERIC(20, 12), nullable and without a default: adding it is a catalog change,
  no row is rewritten. Rows from before it stay NULL (unpriced): their prices were never taken.
- `usage_read`: an auditor or admin reading another key's usage (`GET /usage?owner_key_id=`).

The downgrade drops the column (the costs are lost) and the audit events of usage reads (a
sealed range holding one no longer verifies after such a downgrade).

Revision ID: 2d3e4f5a6b7c
Revises: 1c2d3e4f5a6b
Create Date: 2026-12-05 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2d3e4f5a6b7c"
down_revision: str | Sequence[str] | None = "1c2d3e4f5a6b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIONS = (
    "'create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release', 'audit_export', 'cancel', 'webhook_read'"
)
OLD_ACTIONS = f"action IN ({_ACTIONS})"
NEW_ACTIONS = f"action IN ({_ACTIONS}, 'usage_read')"


def upgrade() -> None:
    op.add_column("agent_task", sa.Column("cost_usd", sa.Numeric(20, 12), nullable=True))
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", NEW_ACTIONS)


def downgrade() -> None:
    op.execute("DELETE FROM audit_event WHERE action = 'usage_read'")
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", OLD_ACTIONS)
    op.drop_column("agent_task", "cost_usd")
