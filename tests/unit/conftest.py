"""Unit tests run in seconds: no PostgreSQL, no subprocess.

The rule is enforced: a test here whose fixtures would start a database (any of the root
conftest's database fixtures, which all stand on `pg_server`) fails before any of them is set up.
"""

from __future__ import annotations

import pytest

# Where every database fixture (db, app, client, components, settings, alice, ...) stands: one of
# these in a test's fixture closure means PostgreSQL.
DATABASE_FIXTURES = frozenset({"pg_server", "template_database", "database_url", "empty_database_url"})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a unit test whose fixtures reach a database, before any fixture is set up."""
    needed = DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if needed:
        pytest.fail(
            f"{item.nodeid} is a unit test but needs a database ({', '.join(sorted(needed))}); "
            "unit tests run without PostgreSQL: move it to tests/integration/",
            pytrace=False,
        )
