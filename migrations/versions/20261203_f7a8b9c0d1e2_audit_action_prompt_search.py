"""Audit action 'prompt_search': an auditor's search for the tasks that carried a prompt.

Prompt hashes are bound to their owner from this release on (a new `prompt_hash_key_id`
marks them); rows written before keep their global hash and key id, so no data changes here.

Revision ID: f7a8b9c0d1e2
Revises: e6f7a8b9c0d1
Create Date: 2026-12-03 09:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "f7a8b9c0d1e2"
down_revision: str | Sequence[str] | None = "e6f7a8b9c0d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "action IN ('create', 'read', 'list', 'delete', 'audit_read', 'purge')"
NEW = "action IN ('create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", NEW)


def downgrade() -> None:
    op.execute("DELETE FROM audit_event WHERE action = 'prompt_search'")
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", OLD)
