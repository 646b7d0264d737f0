"""Legal holds (issue 13): a table of holds, and the audit actions and outcome they bring.

A hold keeps one task, or every task of one API key, past its retention for a legal matter.
`hold_place` and `hold_release` record placing and releasing one; the outcome `held` records
an erasure refused because of one. Downgrading drops the holds (and with them the protection
they gave) and the audit rows that name the new values.

Revision ID: a9b8c7d6e5f4
Revises: f7a8b9c0d1e2
Create Date: 2026-12-03 16:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a9b8c7d6e5f4"
down_revision: str | Sequence[str] | None = "f7a8b9c0d1e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ACTIONS = "action IN ('create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search')"
NEW_ACTIONS = (
    "action IN ('create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release')"
)
OLD_OUTCOMES = "outcome IN ('ok', 'not_found', 'expired', 'denied', 'error')"
NEW_OUTCOMES = "outcome IN ('ok', 'not_found', 'expired', 'denied', 'error', 'held')"


def upgrade() -> None:
    op.create_table(
        "legal_hold",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("owner_key_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("(task_id IS NULL) <> (owner_key_id IS NULL)", name=op.f("ck_legal_hold_one_target")),
        sa.ForeignKeyConstraint(
            ["owner_key_id"], ["api_key.id"], name=op.f("fk_legal_hold_owner_key_id_api_key"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_hold")),
    )
    op.create_index(
        "ix_legal_hold_task_id",
        "legal_hold",
        ["task_id"],
        unique=False,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_index(
        "ix_legal_hold_owner_key_id",
        "legal_hold",
        ["owner_key_id"],
        unique=False,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", NEW_ACTIONS)
    op.drop_constraint(op.f("ck_audit_event_outcome"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_outcome"), "audit_event", NEW_OUTCOMES)


def downgrade() -> None:
    op.execute("DELETE FROM audit_event WHERE action IN ('hold_place', 'hold_release') OR outcome = 'held'")
    op.drop_constraint(op.f("ck_audit_event_outcome"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_outcome"), "audit_event", OLD_OUTCOMES)
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", OLD_ACTIONS)
    op.drop_index(
        "ix_legal_hold_owner_key_id", table_name="legal_hold", postgresql_where=sa.text("released_at IS NULL")
    )
    op.drop_index("ix_legal_hold_task_id", table_name="legal_hold", postgresql_where=sa.text("released_at IS NULL"))
    op.drop_table("legal_hold")
