"""Cancel (issue 14): the task status `cancelled`, the audit action `cancel` and outcome `finished`.

Widening three CHECK constraints is a catalog change: no row is rewritten, and the locks are
held only while each constraint is validated. The downgrade turns cancelled tasks into failed
ones (error code `cancelled` kept, so they stay recognisable) and deletes the audit events of
cancels, as earlier downgrades did for the actions they removed: a sealed range holding one no
longer verifies after such a downgrade.

Revision ID: e5f6a7b8c9d0
Revises: d4e5f6a7b8c9
Create Date: 2026-12-04 04:30:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "e5f6a7b8c9d0"
down_revision: str | Sequence[str] | None = "d4e5f6a7b8c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('pending', 'running', 'succeeded', 'failed')"
NEW_STATUSES = "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')"
_ACTIONS = (
    "'create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release', 'audit_export'"
)
OLD_ACTIONS = f"action IN ({_ACTIONS})"
NEW_ACTIONS = f"action IN ({_ACTIONS}, 'cancel')"
OLD_OUTCOMES = "outcome IN ('ok', 'not_found', 'expired', 'denied', 'error', 'held')"
NEW_OUTCOMES = "outcome IN ('ok', 'not_found', 'expired', 'denied', 'error', 'held', 'finished')"


def _replace(table: str, name: str, check: str) -> None:
    op.drop_constraint(op.f(name), table, type_="check")
    op.create_check_constraint(op.f(name), table, check)


def upgrade() -> None:
    _replace("agent_task", "ck_agent_task_status", NEW_STATUSES)
    _replace("audit_event", "ck_audit_event_action", NEW_ACTIONS)
    _replace("audit_event", "ck_audit_event_outcome", NEW_OUTCOMES)


def downgrade() -> None:
    op.execute("UPDATE agent_task SET status = 'failed' WHERE status = 'cancelled'")
    op.execute("DELETE FROM audit_event WHERE action = 'cancel' OR outcome = 'finished'")
    _replace("agent_task", "ck_agent_task_status", OLD_STATUSES)
    _replace("audit_event", "ck_audit_event_action", OLD_ACTIONS)
    _replace("audit_event", "ck_audit_event_outcome", OLD_OUTCOMES)
