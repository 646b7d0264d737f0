"""Provider plugins (the entry-point group agent_service.providers): the installed example plugin is
found and registered, without a database."""

from __future__ import annotations

from app.llm.registry import build_registry
from tests.support.settings import UNUSED_DB, make_settings


def test_the_installed_example_plugin_is_registered():
    registry = build_registry(make_settings(UNUSED_DB))
    assert "example" in registry.names
    assert registry.route("example:anything").resolved == "example:anything"
