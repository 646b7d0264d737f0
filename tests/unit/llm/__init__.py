"""Unit tests of app/llm: templates, the provider registry, plugins."""
