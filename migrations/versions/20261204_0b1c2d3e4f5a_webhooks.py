"""Completion webhooks (issue 14): a task's webhook address, a key's signing secret, and the outbox.

- `agent_task.webhook_url` and the `api_key` secret columns are nullable and without a default:
  adding them is a catalog change, no row is rewritten.
- `webhook_delivery` is the outbox: one row per ended task that named a webhook. A trigger on
  `agent_task` writes it in the very transaction that sets the final status (whichever statement
  does: the runner's final write, a cancel, the lease sweep, or the insert of a cache hit), and
  announces it on `webhook_ready`; the delivery dies with its task (ON DELETE CASCADE).
- The triggers' WHEN clauses keep tasks without a webhook from ever calling the function.
- The audit action `webhook_read`.

The downgrade drops all of it; pending deliveries are lost, and the audit events of webhook
reads are deleted (a sealed range holding one no longer verifies after such a downgrade).

Revision ID: 0b1c2d3e4f5a
Revises: e5f6a7b8c9d0
Create Date: 2026-12-04 18:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0b1c2d3e4f5a"
down_revision: str | Sequence[str] | None = "e5f6a7b8c9d0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIONS = (
    "'create', 'read', 'list', 'delete', 'audit_read', 'purge', 'prompt_search', "
    "'hold_place', 'hold_release', 'audit_export', 'cancel'"
)
OLD_ACTIONS = f"action IN ({_ACTIONS})"
NEW_ACTIONS = f"action IN ({_ACTIONS}, 'webhook_read')"

OUTBOX_FUNCTION = """
CREATE FUNCTION agent_task_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('succeeded', 'failed', 'cancelled')
       AND (TG_OP = 'INSERT' OR OLD.status IN ('pending', 'running')) THEN
        INSERT INTO webhook_delivery (task_id, owner_id, url, event_type, message_id)
        VALUES (NEW.id, NEW.owner_id, NEW.webhook_url, 'agent_task.' || NEW.status,
                'msg_' || replace(NEW.id::text, '-', ''))
        ON CONFLICT (task_id) DO NOTHING;
        PERFORM pg_notify('webhook_ready', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("agent_task", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.add_column("api_key", sa.Column("webhook_secret_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_key", sa.Column("webhook_secret", sa.LargeBinary(), nullable=True))
    op.add_column("api_key", sa.Column("webhook_secret_previous", sa.LargeBinary(), nullable=True))
    op.add_column("api_key", sa.Column("webhook_secret_previous_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "webhook_delivery",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("claim", sa.Uuid(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name=op.f("ck_webhook_delivery_state")),
        sa.CheckConstraint(
            "event_type IN ('agent_task.succeeded', 'agent_task.failed', 'agent_task.cancelled')",
            name=op.f("ck_webhook_delivery_event_type"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["agent_task.id"], name=op.f("fk_webhook_delivery_task_id_agent_task"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_webhook_delivery")),
    )
    op.create_index(
        "ix_webhook_delivery_next_attempt_at",
        "webhook_delivery",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.execute(OUTBOX_FUNCTION)
    op.execute(
        "CREATE TRIGGER agent_task_webhook_inserted AFTER INSERT ON agent_task FOR EACH ROW "
        "WHEN (NEW.webhook_url IS NOT NULL) EXECUTE FUNCTION agent_task_webhook_outbox()"
    )
    op.execute(
        "CREATE TRIGGER agent_task_webhook_ended AFTER UPDATE OF status ON agent_task FOR EACH ROW "
        "WHEN (NEW.webhook_url IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status) "
        "EXECUTE FUNCTION agent_task_webhook_outbox()"
    )
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", NEW_ACTIONS)


def downgrade() -> None:
    op.execute("DELETE FROM audit_event WHERE action = 'webhook_read'")
    op.drop_constraint(op.f("ck_audit_event_action"), "audit_event", type_="check")
    op.create_check_constraint(op.f("ck_audit_event_action"), "audit_event", OLD_ACTIONS)
    op.execute("DROP TRIGGER agent_task_webhook_ended ON agent_task")
    op.execute("DROP TRIGGER agent_task_webhook_inserted ON agent_task")
    op.execute("DROP FUNCTION agent_task_webhook_outbox()")
    op.drop_index("ix_webhook_delivery_next_attempt_at", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
    op.drop_column("api_key", "webhook_secret_previous_until")
    op.drop_column("api_key", "webhook_secret_previous")
    op.drop_column("api_key", "webhook_secret")
    op.drop_column("api_key", "webhook_secret_at")
    op.drop_column("agent_task", "webhook_url")
