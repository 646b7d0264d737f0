"""Integration tests of app/service: running tasks, retention."""
