"""Integration tests of app/telemetry: metrics and traces."""
