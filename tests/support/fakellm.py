"""The `fakellm` package (PyPI) as a real Anthropic-compatible server: `fakellm serve` in a subprocess
on loopback, its rules in a `fakellm.yaml` of the test's own.

Its rules match on the model name (`model_matches`) or the prompt (`messages_contain`) and can force
an HTTP status with an error message; anything else gets its deterministic answer
(`[mock response for MODEL, fingerprint ...]`, with usage). Rules are rewritten and reloaded
(`POST /_fakellm/reload`) without a restart; `/_fakellm/stats` counts the requests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.devdb.cluster import free_port

FAKELLM = Path(sys.executable).with_name("fakellm")


class FakeLLM:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.config = folder / "fakellm.yaml"
        self.rules([])

    @property
    def base_url(self) -> str:
        """The Anthropic SDK's base URL (it adds `/v1/messages`)."""
        return f"http://127.0.0.1:{self.port}"

    def rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the rules (applied at once when the server runs)."""
        self.config.write_text(yaml.safe_dump({"version": 1, "rules": rules}))
        if getattr(self, "_running", False):
            httpx.post(f"{self.base_url}/_fakellm/reload", timeout=5).raise_for_status()

    def fail(self, model: str, status: int, message: str = "refused") -> None:
        """`model` is answered with `status` and an Anthropic-shaped error carrying `message`."""
        self.rules(
            [
                {
                    "name": f"fail-{model}",
                    "when": {"model_matches": model},
                    "respond": {"status": status, "error": message},
                }
            ]
        )

    @property
    def count(self) -> int:
        """How many requests it has answered."""
        stats = httpx.get(f"{self.base_url}/_fakellm/stats", timeout=5).json()
        return int(stats["total_requests"])

    @contextmanager
    def running(self) -> Iterator[FakeLLM]:
        command = [str(FAKELLM), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--config", str(self.config)]
        process = subprocess.Popen(
            command, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"{self.base_url}/_fakellm/stats", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("fakellm did not start") from None
                    time.sleep(0.05)
            self._running = True
            yield self
        finally:
            self._running = False
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
