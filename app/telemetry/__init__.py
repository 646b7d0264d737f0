"""Logs, traces and metrics, private by default: nothing leaves the machine without LOGFIRE_TOKEN,
and no prompt, message, request body, tool argument or SQL parameter is ever recorded."""
