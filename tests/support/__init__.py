"""Helpers the tests import (never from a conftest.py, never from another test module)."""
