"""The auditor's console (issue 16): its sessions, and the audit channel `console`.

- `console_session`: one row per signed-in browser. Its id is the SHA-256 of the session token the
  cookie carries (the token itself is never stored); it names the API key that signed in, and
  dies with it (ON DELETE CASCADE; keys are revoked, not deleted, and a revoked key's sessions
  stop working at once because every lookup joins `api_key.revoked_at`). `expires_at` is the
  absolute end; `last_seen_at` is what the idle expiry counts from.
- The audit channel `console`: the console's reads are audited like REST's and MCP's.

The downgrade drops the sessions (everyone is signed out) and deletes the audit events of channel
`console` (a sealed range holding one no longer verifies after such a downgrade).

Revision ID: 1c2d3e4f5a6b
Revises: 0b1c2d3e4f5a
Create Date: 2026-12-05 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1c2d3e4f5a6b"
down_revision: str | Sequence[str] | None = "0b1c2d3e4f5a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHANNELS = "'rest', 'mcp', 'cli', 'system'"
OLD_CHANNELS = f"channel IN ({_CHANNELS})"
NEW_CHANNELS = f"channel IN ({_CHANNELS}, 'console')"


def upgrade() -> None:
    op.create_table(
        "console_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_key.id"], name=op.f("fk_console_session_key_id_api_key"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_session")),
    )
    op.create_index("ix_console_session_key_id", "console_session", ["key_id"])
    op.create_index("ix_console_session_expires_at", "console_session", ["expires_at"])
    op.drop_constraint(op.f("ck_audit_event_channel"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_channel"), "audit_event", NEW_CHANNELS)


def downgrade() -> None:
    op.execute("DELETE FROM audit_event WHERE channel = 'console'")
    op.drop_constraint(op.f("ck_audit_event_channel"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_channel"), "audit_event", OLD_CHANNELS)
    op.drop_index("ix_console_session_expires_at", table_name="console_session")
    op.drop_index("ix_console_session_key_id", table_name="console_session")
    op.drop_table("console_session")
