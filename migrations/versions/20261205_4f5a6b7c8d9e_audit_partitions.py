"""`audit_event` range-partitioned by day of `occurred_at` (issue 17), the existing table kept as one partition.

How the existing table moves, and why this way: the table is **attached as it stands**, as the
partition `audit_event_history` for every time before a cut-over (the start of the UTC day after
tomorrow), so no row is copied and the one lock that stops writers lasts only for catalog changes.

1. Outside a transaction, without stopping anyone: a CHECK `occurred_at < cut-over` is added
   `NOT VALID` (a catalog change) and then validated (a scan under SHARE UPDATE EXCLUSIVE, which
   readers and writers do not wait for); a unique index on (id, occurred_at) is built
   `CONCURRENTLY`. Rows written meanwhile pass the CHECK: `now()` is before the cut-over.
2. One short transaction under ACCESS EXCLUSIVE on the old table: rename it and its indexes,
   make the new index its primary key (`USING INDEX`: no build), take its identity over to a new
   partitioned `audit_event` (`LIKE … INCLUDING ALL EXCLUDING INDEXES`: the CHECK constraints,
   ck_audit_event_action among them, are copied from the catalog as they are, not restated here),
   and attach the old table FROM (MINVALUE) TO (cut-over). The validated CHECK proves the partition
   bound, so the attach scans nothing; the indexes match the parent's and are adopted, not built.
   The grants on the old table are copied to the new one; the first daily partitions and the
   reserve for later times (`audit_event_reserve`, up to MAXVALUE) are created. The lock is waited
   for 5 s at most (`lock_timeout`): behind a long query the migration fails rather than stall
   writers, and is run again.

Copying rows in batches into a new table would keep the lock as short but write the whole table
again (WAL, I/O) and need a trigger for the rows written during the copy.

The primary key becomes (id, occurred_at): a unique key of a partitioned table must include the
partition key. Ids still come from one identity sequence, so they stay unique.

The downgrade copies every row back into one unpartitioned table (writes wait for the copy).

Revision ID: 4f5a6b7c8d9e
Revises: 5a6b7c8d9e0f
Create Date: 2026-12-05 12:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "4f5a6b7c8d9e"
down_revision: str | Sequence[str] | None = "5a6b7c8d9e0f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Keep in step with app.storage.partitions (the service creates the later days the same way).
HISTORY = "audit_event_history"
RESERVE = "audit_event_reserve"
DAYS_AHEAD = 7
_CUTOVER = "(date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days') AT TIME ZONE 'UTC'"
# The cut-over, read back from the CHECK of step 1 (so a step run later agrees with it).
_BOUND = (
    "(regexp_match(pg_get_constraintdef(c.oid), '''([^'']+)'''))[1]::timestamptz FROM pg_constraint c "
    "WHERE c.conname = 'audit_event_history_bound'"
)

_COPY_GRANTS = """
DO $$
DECLARE g record;
BEGIN
    FOR g IN SELECT a.privilege_type, a.is_grantable,
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
             FROM pg_class c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{source}'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON {target} TO %s%s', g.privilege_type, g.who,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$
"""

_INDEXES = (
    "CREATE INDEX ix_audit_event_task_id_id ON audit_event (task_id, id)",
    "CREATE INDEX ix_audit_event_occurred_at ON audit_event (occurred_at)",
    "CREATE INDEX ix_audit_event_xact ON audit_event USING brin (xact)",
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'audit_event_history_bound') THEN
        EXECUTE format('ALTER TABLE audit_event ADD CONSTRAINT audit_event_history_bound '
                       'CHECK (occurred_at < %L::timestamptz) NOT VALID', {_CUTOVER});
    END IF;
END $$""")
        op.execute("ALTER TABLE audit_event VALIDATE CONSTRAINT audit_event_history_bound")
        op.execute(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {HISTORY}_pkey ON audit_event (id, occurred_at)")
    # Behind a long query on audit_event, give up instead of making every audited write queue behind
    # the lock: the migration fails (step 1 is kept and skipped next time), and is simply run again.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE audit_event RENAME TO {HISTORY}")
    for name in ("occurred_at", "task_id_id", "xact"):  # the parent's indexes take these names
        op.execute(f"ALTER INDEX ix_audit_event_{name} RENAME TO {HISTORY}_{name}_idx")
    op.execute(f"ALTER TABLE {HISTORY} DROP CONSTRAINT pk_audit_event")
    op.execute(f"ALTER TABLE {HISTORY} ADD CONSTRAINT {HISTORY}_pkey PRIMARY KEY USING INDEX {HISTORY}_pkey")
    # The identity moves to the parent, continuing where the old sequence stopped.
    op.execute(f"""
DO $$
DECLARE next_id bigint;
BEGIN
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM %s',
                   pg_get_serial_sequence('{HISTORY}', 'id')) INTO next_id;
    ALTER TABLE {HISTORY} ALTER COLUMN id DROP IDENTITY;
    CREATE TABLE audit_event (LIKE {HISTORY} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE (occurred_at);
    ALTER TABLE audit_event DROP CONSTRAINT audit_event_history_bound;
    ALTER TABLE audit_event ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
    EXECUTE format('ALTER TABLE audit_event ALTER COLUMN id RESTART WITH %s', next_id);
END $$""")
    op.execute("ALTER TABLE audit_event ADD CONSTRAINT pk_audit_event PRIMARY KEY (id, occurred_at)")
    for index in _INDEXES:
        op.execute(index)
    op.execute(f"""
DO $$
DECLARE cutover timestamptz := (SELECT {_BOUND} AND c.conrelid = '{HISTORY}'::regclass);
BEGIN
    EXECUTE format('ALTER TABLE audit_event ATTACH PARTITION {HISTORY} FOR VALUES FROM (MINVALUE) TO (%L)', cutover);
    ALTER TABLE {HISTORY} DROP CONSTRAINT audit_event_history_bound;
    FOR d IN 0..{DAYS_AHEAD - 1} LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_event FOR VALUES FROM (%L) TO (%L)',
                       'audit_event_p' || to_char((cutover + make_interval(days => d)) AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       cutover + make_interval(days => d), cutover + make_interval(days => d + 1));
    END LOOP;
    EXECUTE format('CREATE TABLE {RESERVE} PARTITION OF audit_event FOR VALUES FROM (%L) TO (MAXVALUE)',
                   cutover + make_interval(days => {DAYS_AHEAD}));
END $$""")
    op.execute(_COPY_GRANTS.format(source=HISTORY, target="audit_event"))


def downgrade() -> None:
    op.execute("LOCK TABLE audit_event IN EXCLUSIVE MODE")  # readers go on; writers wait for the copy
    op.execute("CREATE TABLE audit_event_plain (LIKE audit_event INCLUDING ALL EXCLUDING INDEXES EXCLUDING IDENTITY)")
    op.execute("INSERT INTO audit_event_plain SELECT * FROM audit_event")
    op.execute(_COPY_GRANTS.format(source="audit_event", target="audit_event_plain"))
    op.execute("""
DO $$
DECLARE next_id bigint;
BEGIN
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM %s',
                   pg_get_serial_sequence('audit_event', 'id')) INTO next_id;
    DROP TABLE audit_event;
    ALTER TABLE audit_event_plain RENAME TO audit_event;
    ALTER TABLE audit_event ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
    EXECUTE format('ALTER TABLE audit_event ALTER COLUMN id RESTART WITH %s', next_id);
END $$""")
    op.execute("ALTER TABLE audit_event ADD CONSTRAINT pk_audit_event PRIMARY KEY (id)")
    for index in _INDEXES:
        op.execute(index)
