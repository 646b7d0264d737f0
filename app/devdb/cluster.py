"""A private PostgreSQL cluster started from the local server binaries.

One launcher for the three places that need a database nobody set up: the
embedded default of `agent-service serve`, the test suite and the benchmarks.
`initdb` and `pg_ctl` refuse to run as root, so as root the cluster belongs to
the unprivileged `postgres` user and every server command runs through `runuser`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

SERVICE_USER = "postgres"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
SUPERUSER = "postgres"


class DevDatabaseError(RuntimeError):
    """The embedded development database cannot run here; the message says what to do instead."""


class PostgresNotFoundError(DevDatabaseError):
    """No PostgreSQL server binaries on this machine."""

    def __init__(self) -> None:
        super().__init__(
            "No PostgreSQL server binaries (initdb, pg_ctl) were found.\n"
            "Three ways forward:\n"
            "  1. install PostgreSQL locally (Debian/Ubuntu: apt-get install postgresql),\n"
            "  2. set DATABASE_URL (and PROMPT_HASH_KEY) to use an existing PostgreSQL,\n"
            "  3. run everything in containers: docker compose up"
        )


def find_bin_dir() -> Path:
    """The newest local PostgreSQL bin folder holding initdb and pg_ctl."""
    candidates: list[Path] = []
    if explicit := os.environ.get("PG_BIN_DIR"):
        candidates.append(Path(explicit))
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p) for p in versions]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/pgsql*/bin"))]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresNotFoundError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """A cluster under `root`: `pgdata/` for the server, `password` for the superuser."""

    def __init__(self, root: Path, bin_dir: Path | None = None) -> None:
        self.root = root.absolute()
        self.bin_dir = bin_dir or find_bin_dir()
        self.pgdata = self.root / "pgdata"
        self.password_file = self.root / "password"
        self.log_file = self.pgdata / "server.log"
        self._as_root = os.geteuid() == 0

    # -- lifecycle -----------------------------------------------------------------

    def ensure_initialized(self) -> None:
        """Run initdb once; later calls find the cluster and do nothing."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password)
        self.password_file.chmod(0o600)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._check_reachable()
        pwfile = self.pgdata.parent / ".initdb-pw"
        pwfile.write_text(password)
        try:
            self._hand_over(pwfile, self.pgdata)
            self._run_server_cmd(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def running_port(self) -> int | None:
        """The port of the running server, or None when it is not running."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        status = self._run_server_cmd("pg_ctl", "-D", str(self.pgdata), "status", check=False)
        if status.returncode != 0:
            return None
        lines = pidfile.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def start(self, port: int | None = None) -> int:
        """Start the server on 127.0.0.1 (TCP only) and return its port."""
        if (running := self.running_port()) is not None:
            return running
        port = port or free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=on -c max_connections=200"
        )
        self._run_server_cmd(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-o", options, "-w", "-t", "30", "start"
        )
        return port

    def stop(self) -> None:
        if self.running_port() is None:
            return
        self._run_server_cmd("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop", check=False)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize start-up between processes sharing one cluster folder."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- databases -----------------------------------------------------------------

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, port: int, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{port}/{dbname}"

    def create_database(self, port: int, dbname: str) -> None:
        """Create `dbname` unless it exists."""
        if not _IDENTIFIER.fullmatch(dbname):
            raise ValueError("a database name here is letters, digits and underscores")
        env = {**os.environ, "PGPASSWORD": self.password}
        query = f"SELECT 1 FROM pg_database WHERE datname = '{dbname}'"
        base = ["-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER]
        found = subprocess.run(
            [str(self.bin_dir / "psql"), *base, "-d", "postgres", "-tAc", query],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        if found.stdout.strip() != "1":
            subprocess.run([str(self.bin_dir / "createdb"), *base, dbname], env=env, check=True, capture_output=True)

    # -- helpers -------------------------------------------------------------------

    def _hand_over(self, *paths: Path) -> None:
        """As root, give the server's files to the unprivileged user."""
        if not self._as_root:
            return
        user = pwd.getpwnam(SERVICE_USER)
        for path in (self.root, *paths):
            os.chown(path, user.pw_uid, user.pw_gid)

    def _check_reachable(self) -> None:
        if not self._as_root:
            return
        probe = subprocess.run(["runuser", "-u", SERVICE_USER, "--", "test", "-x", str(self.root.parent)], check=False)
        if probe.returncode != 0:
            raise DevDatabaseError(
                f"The '{SERVICE_USER}' user cannot reach {self.root.parent}, so the local PostgreSQL cluster "
                "cannot live there. Make the folders above it traversable (chmod o+x), choose another "
                "DATA_DIR, or set DATABASE_URL."
            )

    def _run_server_cmd(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
        if check and result.returncode != 0:
            detail = result.stderr.strip() or result.stdout.strip()
            raise DevDatabaseError(f"{tool} failed ({result.returncode}): {detail}")
        return result
