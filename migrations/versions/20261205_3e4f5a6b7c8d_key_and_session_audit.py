"""Audit actions for managing API keys and for console sessions (issue 16).

- `key_create`, `key_revoke`, `key_limits`: an admin's acts on API keys, from the console. The
  event's detail names the key (its id, role, limits, data policy), never the key or its hash,
  nor its webhook secret.
- `sign_in`, `sign_out`: console sessions begun and ended. A failed sign-in is recorded with no
  actor (outcome `denied`): the key presented is never stored, in any form.

The downgrade deletes these events (a sealed range holding one no longer verifies after such a
downgrade, as for every earlier downgrade that removed an action).

Revision ID: 3e4f5a6b7c8d
Revises: 4f5a6b7c8d9e
Create Date: 2026-12-05 10:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "3e4f5a6b7c8d"
down_revision: str | Sequence[str] | None = "4f5a6b7c8d9e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIONS = (
    "'create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release', 'audit_export', 'cancel', 'webhook_read', 'usage_read'"
)
_ADDED = ("key_create", "key_revoke", "key_limits", "sign_in", "sign_out")
OLD_ACTIONS = f"action IN ({_ACTIONS})"
NEW_ACTIONS = f"action IN ({_ACTIONS}, {', '.join(repr(a) for a in _ADDED)})"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", NEW_ACTIONS)


def downgrade() -> None:
    op.execute(f"DELETE FROM audit_event WHERE action IN ({', '.join(repr(a) for a in _ADDED)})")
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", OLD_ACTIONS)
