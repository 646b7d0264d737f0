"""Unit tests: no PostgreSQL, no subprocess; seconds in all."""
