"""The LLM Agent Service.

Imports flow one way (checked by `uv run lint-imports`):

    main, cli        the ASGI app and the `agent-service` command
    api              the two thin faces: REST (FastAPI) and MCP (FastMCP)
    service          the operations, written once, and the wiring that builds them
    access, llm,     who may call (keys, hashing, limits); the providers; the public contract
      schemas
    storage          PostgreSQL: the pool, the tables, the migrations, every SQL statement
    domain, settings, the types of a task's life; configuration; logs, traces, metrics;
      telemetry, devdb  the embedded development database
"""
