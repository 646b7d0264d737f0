"""The auditor's web console at /console: server-rendered pages over the same operations as REST and MCP."""
