"""Integration tests of app/access: per-key limits shared through PostgreSQL."""
