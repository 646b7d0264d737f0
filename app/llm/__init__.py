"""LLM providers: one small protocol, a registry, and the built-in providers."""
