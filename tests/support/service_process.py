"""The service as a user runs it: `agent-service` commands and `agent-service serve` processes.

One harness for every test that starts the server as a subprocess: `ServiceProcess` (one process,
on one port across restarts, its output in a file), `serving` (one process for a block) and
`replicas` (several started together, in a folder of their own). `cli` runs any other command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.devdb.cluster import free_port
from tests.support.settings import TEST_RESULT_KEYS, TEST_SIGNING_KEY

CLI = str(Path(sys.executable).parent / "agent-service")
# What a developer's shell may set that would change what the service under test does.
CONFIG_VARS = (
    "DATABASE_URL",
    "PROMPT_HASH_KEY",
    "RESULT_ENCRYPTION_KEYS",
    "AUDIT_SIGNING_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "DEFAULT_MODEL",
    "DATA_DIR",
)


def environment(**values: str) -> dict[str, str]:
    """This process's environment without the service's configuration, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    if "PROMPT_HASH_KEY" in values:  # a configured database: it needs its result and signing keys too
        env["RESULT_ENCRYPTION_KEYS"] = TEST_RESULT_KEYS
        env["AUDIT_SIGNING_KEY"] = TEST_SIGNING_KEY
    env.update(values)
    return env


def cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, check: bool = True, command: str = CLI
) -> subprocess.CompletedProcess[str]:
    """`agent-service *args` to its end (at most 120 s); with `check`, a non-zero exit fails the test."""
    result = subprocess.run(
        [command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"agent-service {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


class ServiceProcess:
    """`agent-service serve` on one port across restarts, its output (stdout and stderr) in a file.

    `start()` launches it and waits until `ready` answers 200; `stop()` sends SIGTERM (SIGKILL if it
    has not ended 30 s later); `kill()` sends SIGKILL; `output()` is everything it printed, in every
    run, also after `close()`.
    """

    def __init__(
        self, env: dict[str, str], *, cwd: Path | str | None = None, command: str = CLI, ready: str = "/healthz"
    ) -> None:
        self.env = env
        self.cwd = cwd
        self.command = command
        self.ready = ready
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="agent-service-serve-", suffix=".log")
        os.close(fd)
        self._log = Path(name)
        self._output: str | None = None  # kept once closed

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def launch(self) -> None:
        """Start the process, without waiting for it to answer."""
        with self._log.open("ab") as log:  # appended to: a restart adds to what the last run printed
            self.process = subprocess.Popen(
                [self.command, "serve", "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 90) -> None:
        """Until `ready` answers 200; fails if the process ends first or `timeout` s pass."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}{self.ready}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not answer {self.ready} within {timeout:g} s:\n{self.output()}")
            time.sleep(0.1)

    def start(self, timeout: float = 90) -> None:
        self.launch()
        self.wait_ready(timeout)

    def terminate(self) -> None:
        """SIGTERM, without waiting for the process to end."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then wait for the end (SIGKILL after 30 s)."""
        if self.process is None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost host would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def output(self) -> str:
        if self._output is not None:
            return self._output
        return self._log.read_bytes().decode(errors="replace")

    def close(self) -> None:
        """Stop the process and remove its log (its output stays readable)."""
        self.stop()
        if self._output is None:
            self._output = self.output()
            self._log.unlink(missing_ok=True)


@contextmanager
def serving(
    env: dict[str, str], cwd: Path | None = None, command: str = CLI, ready: str = "/healthz"
) -> Iterator[ServiceProcess]:
    """`agent-service serve` on a free port, until it answers `ready`; SIGTERM afterwards."""
    service = ServiceProcess(env, cwd=cwd, command=command, ready=ready)
    try:
        service.start()
        yield service
    finally:
        service.close()


@contextmanager
def replicas(env: dict[str, str], count: int = 2) -> Iterator[list[ServiceProcess]]:
    """`count` service processes on free ports, started together; each until /readyz answers 200.

    They run in an empty folder of their own, so that no stray .env is read.
    """
    workdir = tempfile.mkdtemp(prefix="agent-service-replicas-")
    started = [ServiceProcess(env, cwd=workdir, ready="/readyz") for _ in range(count)]
    try:
        for service in started:
            service.launch()
        for service in started:
            service.wait_ready()
        yield started
    finally:
        for service in started:  # SIGTERM to all of them at once, then each waited for
            service.terminate()
        for service in started:
            service.close()
        os.rmdir(workdir)
