"""Results sealed at rest: `output` and `context` become AES-256-GCM ciphertext (bytea), each
bound to its row; each ciphertext names the key that sealed it.

Existing rows are sealed here, in batches, under the first key of RESULT_ENCRYPTION_KEYS (given
to `migrations.upgrade`, else read from the environment); a database with rows to seal and no
key refuses to upgrade. The downgrade opens them again (a row whose key is gone loses its answer).

Revision ID: b1c2d3e4f5a6
Revises: a9b8c7d6e5f4
Create Date: 2026-12-03 16:10:00

"""

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from app.access.encryption import KeyRetired, ResultCipher, ResultVault, SealBroken, StaticKeyProvider, parse_keys
from app.domain import OpenedResult

revision: str = "b1c2d3e4f5a6"
down_revision: str | Sequence[str] | None = "a9b8c7d6e5f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def _vault(rows_waiting: int) -> ResultVault:
    keys = op.get_context().config.attributes.get("result_encryption_keys") if op.get_context().config else None
    keys = keys or os.environ.get("RESULT_ENCRYPTION_KEYS")
    if not keys:
        raise RuntimeError(
            f"RESULT_ENCRYPTION_KEYS is needed to seal (or open) the {rows_waiting} stored results of this database"
        )
    return ResultVault(ResultCipher(StaticKeyProvider(parse_keys(keys))))


def _batches(bind: sa.Connection, select: str) -> Iterator[Sequence[Any]]:
    after = uuid.UUID(int=0)
    while rows := bind.execute(sa.text(select), {"after": after, "limit": BATCH}).fetchall():
        yield rows
        after = rows[-1][0]


def _count(bind: sa.Connection, condition: str) -> int:
    return int(bind.execute(sa.text(f"SELECT count(*) FROM agent_task WHERE {condition}")).scalar_one())


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("agent_task", sa.Column("output_sealed", sa.LargeBinary(), nullable=True))
    op.add_column("agent_task", sa.Column("context_sealed", sa.LargeBinary(), nullable=True))
    if op.get_context().as_sql:  # offline SQL for review: the rows are sealed by an online upgrade
        op.execute("-- existing results are sealed here, in Python, by an online upgrade")
    elif (count := _count(bind, "output IS NOT NULL OR context <> '{}'")) > 0:
        vault = _vault(count)
        select = (
            "SELECT id, owner_id, output, context::text FROM agent_task WHERE id > :after "
            "AND (output IS NOT NULL OR context <> '{}') ORDER BY id LIMIT :limit"
        )
        for rows in _batches(bind, select):
            sealed = [
                {
                    "id": task_id,
                    "output": vault.seal_output(task_id, owner_id, output),
                    "context": vault.seal_context(task_id, owner_id, json.loads(context)),
                }
                for task_id, owner_id, output, context in rows
            ]
            bind.execute(
                sa.text("UPDATE agent_task SET output_sealed = :output, context_sealed = :context WHERE id = :id"),
                sealed,
            )
    op.execute("ALTER TABLE agent_task ALTER COLUMN output TYPE bytea USING output_sealed")
    op.execute("ALTER TABLE agent_task ALTER COLUMN context DROP DEFAULT, ALTER COLUMN context DROP NOT NULL")
    op.execute("ALTER TABLE agent_task ALTER COLUMN context TYPE bytea USING context_sealed")
    op.drop_column("agent_task", "output_sealed")
    op.drop_column("agent_task", "context_sealed")


def downgrade() -> None:
    bind = op.get_bind()
    op.add_column("agent_task", sa.Column("output_plain", sa.Text(), nullable=True))
    op.add_column("agent_task", sa.Column("context_plain", sa.Text(), nullable=True))
    if op.get_context().as_sql:
        op.execute("-- stored results are opened here, in Python, by an online downgrade")
    elif (count := _count(bind, "output IS NOT NULL OR context IS NOT NULL")) > 0:
        vault = _vault(count)
        select = (
            "SELECT id, owner_id, output, context FROM agent_task WHERE id > :after "
            "AND (output IS NOT NULL OR context IS NOT NULL) ORDER BY id LIMIT :limit"
        )
        for rows in _batches(bind, select):
            plain = [_opened(vault, *row) for row in rows]
            bind.execute(
                sa.text("UPDATE agent_task SET output_plain = :output, context_plain = :context WHERE id = :id"),
                plain,
            )
    op.execute("ALTER TABLE agent_task ALTER COLUMN output TYPE text USING output_plain")
    op.execute("ALTER TABLE agent_task ALTER COLUMN context TYPE jsonb USING coalesce(context_plain, '{}')::jsonb")
    op.execute("ALTER TABLE agent_task ALTER COLUMN context SET DEFAULT '{}'::jsonb, ALTER COLUMN context SET NOT NULL")
    op.drop_column("agent_task", "output_plain")
    op.drop_column("agent_task", "context_plain")


def _opened(vault: ResultVault, task_id: uuid.UUID, owner_id: uuid.UUID, output: Any, context: Any) -> dict[str, Any]:
    cipher = vault.cipher
    try:
        out = None
        if output is not None:
            out = cipher.open(bytes(output), task_id=task_id, owner_id=owner_id, field="output")
        ctx = (
            None
            if context is None
            else cipher.open(bytes(context), task_id=task_id, owner_id=owner_id, field="context")
        )
        opened = OpenedResult(None if out is None else out.decode(), {} if ctx is None else json.loads(ctx))
    except (KeyRetired, SealBroken):
        opened = OpenedResult(None, {})
    return {"id": task_id, "output": opened.output, "context": json.dumps(opened.context)}
