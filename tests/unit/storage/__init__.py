"""Unit tests of app/storage: tables and records, named statements compiled."""
