"""The operations REST and MCP expose, written once, and the wiring that builds them."""
