"""A stand-in HTTP server on loopback, run by uvicorn in a thread of its own: what the fake
providers and the webhook receiver share, so a test's event loop never serves them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def serving_in_thread(config: uvicorn.Config, what: str) -> Iterator[uvicorn.Server]:
    """`config`'s server, started (or a RuntimeError naming `what` within 10 s), stopped afterwards."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
