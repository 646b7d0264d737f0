"""Audit seals (issue 13): a signed chain of checkpoints over the audit events, and 'audit_export'.

`audit_event.xact` records each event's transaction id (a DEFAULT, so no audited statement
changes). It is added with the constant default 0 first, which PostgreSQL stores without
rewriting the table, and only then given its real default: the events already there count as
written by a transaction long finished, and the first seal takes them all. A BRIN index on it
costs an insert next to nothing. Downgrading drops the seals and the column, and the audit
rows of exports.

Revision ID: c2d3e4f5a6b7
Revises: b1c2d3e4f5a6
Create Date: 2026-12-03 18:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c2d3e4f5a6b7"
down_revision: str | Sequence[str] | None = "b1c2d3e4f5a6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ACTIONS = (
    "action IN ('create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release')"
)
NEW_ACTIONS = (
    "action IN ('create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release', 'audit_export')"
)


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("xact", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    op.alter_column("audit_event", "xact", server_default=sa.text("txid_current()"))
    op.create_index("ix_audit_event_xact", "audit_event", ["xact"], unique=False, postgresql_using="brin")
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", NEW_ACTIONS)
    op.create_table(
        "audit_seal",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("xact_watermark", sa.BigInteger(), nullable=False),
        sa.Column("first_event_id", sa.BigInteger(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("first_occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("event_digests", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("events_digest", sa.String(length=64), nullable=False),
        sa.Column("previous_digest", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_seal")),
        sa.UniqueConstraint("previous_digest", name=op.f("uq_audit_seal_previous_digest")),
    )
    op.create_index("ix_audit_seal_last_occurred_at", "audit_seal", ["last_occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_seal_last_occurred_at", table_name="audit_seal")
    op.drop_table("audit_seal")
    op.execute("DELETE FROM audit_event WHERE action = 'audit_export'")
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", OLD_ACTIONS)
    op.drop_index("ix_audit_event_xact", table_name="audit_event", postgresql_using="brin")
    op.drop_column("audit_event", "xact")
