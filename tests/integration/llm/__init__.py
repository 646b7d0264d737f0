"""Integration tests of app/llm: providers over real HTTP, routing, plugins."""
