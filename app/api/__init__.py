"""The two faces of the service: REST (FastAPI) and MCP (FastMCP)."""
