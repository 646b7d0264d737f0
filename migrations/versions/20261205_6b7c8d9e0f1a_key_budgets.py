"""Monthly budgets per key (issue 15): `api_key.monthly_token_budget` and `monthly_usd_budget`,
and the ledger `key_usage` that they are checked against.

- The budgets are nullable (no budget) and must be positive when set: adding them rewrites no row.
- `key_usage` holds one row per key and calendar month (UTC, by the task's creation, as
  `GET /usage` counts): the tokens and the cost of its provider calls. It is written by a
  trigger in the transaction that ends a task, so every path that ends one (the runner, a
  cancel, the lease sweep) counts, on every replica, and a budget outlives the purge and the
  erasure of the tasks it counts. Cache hits call no provider and are not counted. The
  triggers' WHEN clauses keep tasks that reported no usage from calling the function at all.
- The upgrade fills the ledger from the live tasks (one scan of `agent_task`); what was
  purged or erased before it is not counted.

The downgrade drops the ledger, the triggers and the budget columns: the budgets are lost.

Revision ID: 6b7c8d9e0f1a
Revises: 2d3e4f5a6b7c
Create Date: 2026-12-05 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6b7c8d9e0f1a"
down_revision: str | Sequence[str] | None = "2d3e4f5a6b7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FINAL = "('succeeded', 'failed', 'cancelled')"
_MONTH = "date_trunc('month', {row}.created_at AT TIME ZONE 'UTC')::date"
_TOKENS = "coalesce({row}.total_tokens, coalesce({row}.prompt_tokens, 0) + coalesce({row}.completion_tokens, 0))"
_REPORTS_USAGE = (
    "({row}.total_tokens IS NOT NULL OR {row}.prompt_tokens IS NOT NULL OR {row}.completion_tokens IS NOT NULL)"
)

LEDGER_FUNCTION = f"""
CREATE FUNCTION agent_task_usage_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN {_FINAL} AND (TG_OP = 'INSERT' OR OLD.status NOT IN {_FINAL}) THEN
        INSERT INTO key_usage (owner_id, month, tasks, tokens, cost_usd, unpriced_tasks)
        VALUES (NEW.owner_id, {_MONTH.format(row="NEW")}, 1, {_TOKENS.format(row="NEW")},
                coalesce(NEW.cost_usd, 0), CASE WHEN NEW.cost_usd IS NULL THEN 1 ELSE 0 END)
        ON CONFLICT (owner_id, month) DO UPDATE
        SET tasks = key_usage.tasks + 1,
            tokens = key_usage.tokens + EXCLUDED.tokens,
            cost_usd = key_usage.cost_usd + EXCLUDED.cost_usd,
            unpriced_tasks = key_usage.unpriced_tasks + EXCLUDED.unpriced_tasks,
            updated_at = now();
    END IF;
    RETURN NULL;
END;
$$
"""

_WHEN = f"NOT NEW.cached AND {_REPORTS_USAGE.format(row='NEW')}"

BACKFILL = f"""
INSERT INTO key_usage (owner_id, month, tasks, tokens, cost_usd, unpriced_tasks)
SELECT owner_id, {_MONTH.format(row="agent_task")}, count(*), sum({_TOKENS.format(row="agent_task")}),
       coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE cost_usd IS NULL)
FROM agent_task
WHERE status IN {_FINAL} AND NOT cached AND {_REPORTS_USAGE.format(row="agent_task")}
GROUP BY 1, 2
"""


def upgrade() -> None:
    op.add_column("api_key", sa.Column("monthly_token_budget", sa.BigInteger(), nullable=True))
    op.add_column("api_key", sa.Column("monthly_usd_budget", sa.Numeric(20, 6), nullable=True))
    op.create_check_constraint(op.f("ck_api_key_monthly_token_budget"), "api_key", "monthly_token_budget > 0")
    op.create_check_constraint(op.f("ck_api_key_monthly_usd_budget"), "api_key", "monthly_usd_budget > 0")
    op.create_table(
        "key_usage",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("tasks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_usd", sa.Numeric(20, 12), server_default=sa.text("0"), nullable=False),
        sa.Column("unpriced_tasks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["api_key.id"], name=op.f("fk_key_usage_owner_id_api_key"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("owner_id", "month", name=op.f("pk_key_usage")),
    )
    op.execute(LEDGER_FUNCTION)
    op.execute(
        "CREATE TRIGGER agent_task_usage_inserted AFTER INSERT ON agent_task FOR EACH ROW "
        f"WHEN ({_WHEN}) EXECUTE FUNCTION agent_task_usage_ledger()"
    )
    op.execute(
        "CREATE TRIGGER agent_task_usage_ended AFTER UPDATE OF status ON agent_task FOR EACH ROW "
        f"WHEN ({_WHEN} AND OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION agent_task_usage_ledger()"
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.execute("DROP TRIGGER agent_task_usage_ended ON agent_task")
    op.execute("DROP TRIGGER agent_task_usage_inserted ON agent_task")
    op.execute("DROP FUNCTION agent_task_usage_ledger()")
    op.drop_table("key_usage")
    op.drop_constraint(op.f("ck_api_key_monthly_usd_budget"), "api_key", type_="check")
    op.drop_constraint(op.f("ck_api_key_monthly_token_budget"), "api_key", type_="check")
    op.drop_column("api_key", "monthly_usd_budget")
    op.drop_column("api_key", "monthly_token_budget")
