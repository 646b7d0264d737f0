"""PostgreSQL: the pool, the tables Alembic migrates, and every SQL statement, named.

Only this package speaks SQL. Its functions take an asyncpg connection (the caller owns the
transaction: `Database.transaction()`) and return the records of `app.domain`.
"""
