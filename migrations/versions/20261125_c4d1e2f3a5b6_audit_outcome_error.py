"""Audit outcome 'error', for purge runs that fail.

Revision ID: c4d1e2f3a5b6
Revises: b8b74a7178f4
Create Date: 2026-11-25 09:20:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "c4d1e2f3a5b6"
down_revision: str | Sequence[str] | None = "b8b74a7178f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "outcome IN ('ok', 'not_found', 'expired', 'denied')"
NEW = "outcome IN ('ok', 'not_found', 'expired', 'denied', 'error')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_audit_event_outcome"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_outcome"), "audit_event", NEW)


def downgrade() -> None:
    op.execute("DELETE FROM audit_event WHERE outcome = 'error'")
    op.drop_constraint(op.f("ck_audit_event_outcome"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_outcome"), "audit_event", OLD)
