"""Integration tests of app/storage: statements, tasks, audit, keys, migrations, outages."""
