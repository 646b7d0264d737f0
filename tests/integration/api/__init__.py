"""Integration tests of app/api: REST and MCP, authentication and authorization, input, fuzzing."""
