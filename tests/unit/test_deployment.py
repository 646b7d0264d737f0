"""The deployment files say what the README promises (no Docker engine here to run them)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def test_compose_runs_postgres_then_a_one_shot_migration_then_the_api():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "api"}
    assert "healthcheck" in services["db"]
    assert "pgdata" in compose["volumes"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["api"]["env_file"] == ".env"
    assert services["api"]["ports"] == ["8000:8000"]


def test_the_image_is_multi_stage_non_root_with_a_healthcheck_and_no_secrets():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2
    assert "uv sync --frozen --no-dev" in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile
    assert "/healthz" in dockerfile
    assert "EXPOSE 8000" in dockerfile
    assert not re.search(r"(PROMPT_HASH_KEY|OPENAI_API_KEY|LOGFIRE_TOKEN)=", dockerfile)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".data", ".venv", ".git"} <= set(ignored)


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert {name.upper() for name in Settings.model_fields} <= listed
