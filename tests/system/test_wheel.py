"""The built wheel runs without a checkout: installed into a fresh virtual environment outside the
repository, `agent-service migrate` and `serve` work against a PostgreSQL of their own and against
the embedded default, and `/readyz` says the database is at the head migration."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.service_process import cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

ROOT = Path(__file__).resolve().parents[2]  # the checkout
UV = os.environ.get("UV") or shutil.which("uv") or str(Path(sys.executable).parent / "uv")


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The `agent-service` command of the wheel, installed with the locked dependencies into a
    virtual environment in a folder outside the checkout."""
    outside = Path(tempfile.mkdtemp(prefix="agent-service-wheel-"))
    outside.chmod(0o755)  # the embedded cluster's `postgres` user must traverse it
    try:
        _run(UV, "build", "--wheel", "--out-dir", str(outside / "dist"), cwd=ROOT)
        (wheel,) = (outside / "dist").glob("agent_service-*.whl")
        requirements = outside / "requirements.txt"
        _run(UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "-q", "-o", str(requirements),
             cwd=ROOT)  # fmt: skip
        venv = outside / "venv"
        _run(UV, "venv", "-q", "--python", sys.executable, str(venv), cwd=outside)
        _run(UV, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r", str(requirements), str(wheel),
             cwd=outside)  # fmt: skip
        yield venv / "bin" / "agent-service"
    finally:
        subprocess.run(["rm", "-rf", str(outside)], check=False)


def test_the_wheel_carries_migrations_and_templates_and_no_tests(installed):
    site = next((installed.parent.parent / "lib").glob("python3*/site-packages"))
    assert (site / "app" / "_migrations" / "env.py").is_file()
    assert list((site / "app" / "_migrations" / "versions").glob("*.py"))
    assert list((site / "app" / "prompt_templates").glob("*/*.toml"))
    assert (site / "app" / "console" / "templates" / "base.html").is_file()  # the console's pages and style
    assert (site / "app" / "console" / "static" / "console.css").is_file()
    for folder in ("templates", "static"):  # every page and asset, the keys and health pages' too
        shipped = {p.name for p in (site / "app" / "console" / folder).iterdir()}
        assert {p.name for p in (ROOT / "app" / "console" / folder).iterdir()} <= shipped, folder
    assert list((site / "app" / "_migrations" / "versions").glob("*_7d8e9f0a1b2c_*.py"))  # the latest
    assert (site / "fastapi_offline" / "static" / "swagger-ui-bundle.js").is_file()  # /docs with no CDN
    assert not (site / "tests").exists()
    assert not (site / "migrations").exists()  # inside the package, not a top-level `migrations` module


async def test_the_installed_service_migrates_and_serves_a_postgresql_of_its_own(installed, empty_database_url):
    cwd = Path(tempfile.mkdtemp(prefix="agent-service-wheel-run-"))
    env = environment(
        DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY, AUDIT_SIGNING_KEY=TEST_SIGNING_KEY
    )
    try:
        assert "(head)" in cli("migrate", env=env, cwd=cwd, command=str(installed)).stdout
        created = cli("keys", "create", "wheel-user", env=env, cwd=cwd, command=str(installed)).stdout
        key = created.split("key:")[1].split()[0]
        with serving(env, cwd=cwd, command=str(installed)) as service:
            async with httpx.AsyncClient(base_url=service.base, timeout=30) as http:
                ready = await http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["migrations"] == "ok"
                ran = await http.post(
                    "/tools/run_agent_task",
                    json={"prompt": "The wheel ships its templates.", "template": "summarize"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert ran.status_code == 200, ran.text
                assert ran.json()["template"] == "summarize@2"
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


async def test_the_installed_service_serves_the_embedded_default(installed):
    cwd = Path(tempfile.mkdtemp(prefix="agent-service-wheel-embedded-"))
    cwd.chmod(0o755)
    try:
        with serving(environment(), cwd=cwd, command=str(installed)) as service:
            async with httpx.AsyncClient(base_url=service.base, timeout=30) as http:
                ready = await http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["migrations"] == "ok"
        assert (cwd / ".data" / "pg" / "pgdata" / "PG_VERSION").is_file()
        assert not (cwd / ".data" / "pg" / "pgdata" / "postmaster.pid").exists()  # stopped with the service
    finally:
        subprocess.run(["rm", "-rf", str(cwd)], check=False)
