"""Every enumerated CHECK written as one array literal (issue 17): the same rules, checked cheaper.

PostgreSQL stores `action IN ('create', 'read', …)` on a VARCHAR column as
`action::text = ANY ((ARRAY['create'::varchar, 'read'::varchar, …])::text[])`: one constant and
one cast per value. A CHECK's expression is read back from the catalog and planned again at the
start of every statement that writes the table, so a write paid for every value of every such
CHECK, each time. Measured with pgbench (16 clients, prepared, 2 cores), inserting one audit
event: 0.67 of the rate of the same table without its three CHECKs; written as
`action::text = ANY ('{create,read,…}'::text[])`, one constant, the rate is that of no CHECK at
all. Every audited read, submission and final write pays for these.

The allowed values do not change. Each constraint keeps its name: dropped and added again as
`NOT VALID` in the migration's transaction (a catalog change, a short lock), then validated
after it commits, which scans the table under a lock that lets reads and writes go on (on
`audit_event`, every partition; new partitions take the parent's CHECKs). The rows were checked
by the equivalent constraint before, so the validation cannot fail.

A migration that changes one of these lists afterwards writes it in the same form (see
`app.storage.tables._in`).

Revision ID: 7d8e9f0a1b2c
Revises: 3e4f5a6b7c8d
Create Date: 2026-12-06 09:00:00

"""

from collections.abc import Callable, Sequence

from alembic import op

revision: str = "7d8e9f0a1b2c"
down_revision: str | Sequence[str] | None = "3e4f5a6b7c8d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): the values allowed at this revision.
CHECKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("api_key", "role"): ("client", "auditor", "admin"),
    ("api_key", "store_output"): ("never", "allowed"),
    ("agent_task", "status"): ("pending", "running", "succeeded", "failed", "cancelled"),
    ("agent_task", "response_format"): ("json_schema", "json_object"),
    ("audit_event", "channel"): ("rest", "mcp", "cli", "system", "console"),
    ("audit_event", "action"): (
        "create",
        "read",
        "list",
        "delete",
        "audit_read",
        "purge",
        "prompt_search",
        "hold_place",
        "hold_release",
        "audit_export",
        "cancel",
        "webhook_read",
        "usage_read",
        "key_create",
        "key_revoke",
        "key_limits",
        "sign_in",
        "sign_out",
    ),
    ("audit_event", "outcome"): ("ok", "not_found", "expired", "denied", "error", "held", "finished"),
    ("webhook_delivery", "state"): ("pending", "delivered", "failed"),
    ("webhook_delivery", "event_type"): ("agent_task.succeeded", "agent_task.failed", "agent_task.cancelled"),
}


def as_array_literal(column: str, values: tuple[str, ...]) -> str:
    """`column::text = ANY ('{"a","b"}'::text[])`: one constant, whatever the number of values."""
    return f"""{column}::text = ANY ('{{{",".join(f'"{v}"' for v in values)}}}'::text[])"""


def as_in_list(column: str, values: tuple[str, ...]) -> str:
    """`column IN ('a', 'b')`: how these were written before."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _rewrite(render: Callable[[str, tuple[str, ...]], str]) -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")  # behind a long query, fail (and run again) rather than stall writers
    for (table, column), values in CHECKS.items():
        name = f"ck_{table}_{column}"
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({render(column, values)}) NOT VALID")
    with op.get_context().autocommit_block():
        for table, column in CHECKS:
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT ck_{table}_{column}")


def upgrade() -> None:
    _rewrite(as_array_literal)


def downgrade() -> None:
    _rewrite(as_in_list)
