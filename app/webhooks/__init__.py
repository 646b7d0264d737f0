"""Sending completion webhooks: the address rules (SSRF), Standard Webhooks signing, the HTTP POST.

No database here and nothing of the service: `app.service.deliveries` claims the deliveries and
records what happened to them.
"""
