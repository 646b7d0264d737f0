"""The repository's records carry exactly their tables' columns; the prompt has no column."""

from __future__ import annotations

from dataclasses import fields

import pytest
from sqlmodel import SQLModel

from app.domain import ApiKeyRecord, AuditEventRecord, LegalHoldRecord, TaskRecord
from app.storage.tables import ApiKeyRow, AuditEventRow, LegalHoldRow, TaskRow

SECRET_COLUMNS = {
    ("api_key", c) for c in ("webhook_secret", "webhook_secret_previous", "webhook_secret_previous_until")
}


@pytest.mark.parametrize(
    ("record", "table"),
    [
        (TaskRecord, TaskRow),
        (ApiKeyRecord, ApiKeyRow),
        (AuditEventRecord, AuditEventRow),
        (LegalHoldRecord, LegalHoldRow),
    ],
)
def test_each_record_has_exactly_its_tables_columns(record, table):
    # `audit_event.xact` is sealing bookkeeping: no audited statement reads or writes it. A key's
    # sealed webhook secrets are read only by the webhook dispatcher's claim, never into a record.
    left_out = {("audit_event", "xact"), *SECRET_COLUMNS}
    columns = [c.name for c in table.__table__.columns if (table.__tablename__, c.name) not in left_out]
    assert [f.name for f in fields(record)] == columns


def test_the_audit_event_record_leaves_out_only_the_sealing_bookkeeping():
    assert {c.name for c in AuditEventRow.__table__.columns} - {f.name for f in fields(AuditEventRecord)} == {"xact"}


def test_no_table_has_a_column_for_prompt_text():
    columns = {c.name for t in SQLModel.metadata.tables.values() for c in t.columns}
    assert not {name for name in columns if "prompt" in name} - {"prompt_hash", "prompt_hash_key_id", "prompt_tokens"}
