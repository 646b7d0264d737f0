"""Named statements: `:name` parameters compile to asyncpg's `$n`, each name one number, casts untouched;
every parameter must be given, and the storage layer's statements have unique names."""

from __future__ import annotations

import pytest

from app.storage.sql import Statement
from tests.support.storage import STATEMENTS


def test_each_name_is_one_number_and_casts_stay():
    statement = Statement("s", "SELECT :a::uuid, :b, :a, '{}'::jsonb, x::text FROM t WHERE y = :b::int")
    assert statement.sql == "SELECT $1::uuid, $2, $1, '{}'::jsonb, x::text FROM t WHERE y = $2::int"
    assert statement.params == ("a", "b")
    assert statement.args({"b": 2, "a": 1}) == (1, 2)


@pytest.mark.parametrize(("values", "problem"), [({"a": 1}, "missing \\['b'\\]"), ({"a": 1, "b": 2, "c": 3}, "'c'")])
def test_every_parameter_must_be_given_and_nothing_else(values, problem):
    with pytest.raises(TypeError, match=problem):
        Statement("s", "SELECT :a, :b").args(values)


def test_the_storage_layer_names_its_statements_uniquely():
    names = [s.name for s in STATEMENTS]
    assert len(names) == len(set(names))
    assert len(STATEMENTS) >= 30
