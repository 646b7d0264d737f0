"""System tests: real processes (`agent-service` commands, `serve` subprocesses, built wheels)."""
