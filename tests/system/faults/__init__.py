"""Faults, with nothing lost: one module per fault; the machinery is in tests/support/faults.py."""
