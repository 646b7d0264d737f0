"""Provider plugins (the entry-point group agent_service.providers) through the REST API: a task runs
through the example plugin, and a broken plugin is logged (without its message) and skipped."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from app.llm.plugins import ENTRY_POINT_GROUP
from tests.support.providers import run_task, serve
from tests.support.routes import RUN


async def test_a_task_runs_through_the_example_plugin(database_url, db):
    async with serve(database_url) as (http, caller):
        prompt = "Count these five words"
        result = await run_task(http, caller, prompt=prompt, model="example:anything")
        read = await http.get(f"/resources/get_agent_result/{result['task_id']}", headers=caller.headers)

    assert result["status"] == "succeeded"
    assert result["output"] == "example provider: 4 words"
    assert prompt not in result["output"]
    assert result["model"] == "example:anything"
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8, "cost_usd": None}
    assert read.json()["output"] == "example provider: 4 words"
    assert await db.fetchval("SELECT model FROM agent_task") == "example:anything"


BROKEN_PLUGINS = """
from example_provider import ExampleProvider

class Named(ExampleProvider):
    def __init__(self, name):
        super().__init__()
        self.name = name

def explode(settings):
    raise RuntimeError("SECRET-IN-MESSAGE")

def not_a_provider(settings):
    return object()

def wrong_name(settings):
    return Named("somebody-else")

def impostor(settings):
    return Named("offline")

def good(settings):
    return Named("goodplugin")

NOT_CALLABLE = 42
"""


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution on sys.path whose entry points fail in every way, and one good one."""
    module = f"broken_plugins_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(BROKEN_PLUGINS)
    dist_info = tmp_path / f"{module}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        f"missing = {module}:does_not_exist\n"
        f"unimportable = no_such_module_{module}:factory\n"
        f"explode = {module}:explode\n"
        f"notaprovider = {module}:not_a_provider\n"
        f"notcallable = {module}:NOT_CALLABLE\n"
        f"wrongname = {module}:wrong_name\n"
        f"offline = {module}:impostor\n"
        f"Bad:Name = {module}:good\n"
        f"goodplugin = {module}:good\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


async def test_a_broken_plugin_is_logged_and_skipped(database_url, broken_plugins, caplog):
    caplog.set_level(logging.INFO, logger="app.llm.plugins")
    async with serve(database_url) as (http, caller):
        good = await run_task(http, caller, model="goodplugin:m")
        offline = await run_task(http, caller, model="offline:echo")
        unknown = await http.post(RUN, json={"prompt": "x", "model": "explode:m"}, headers=caller.headers)

    assert good["output"] == "example provider: 2 words"
    assert offline["output"].startswith("[offline provider")  # the impostor did not replace it
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_model"
    errors = {r.getMessage().split("'")[1]: r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    assert set(errors) == {
        "missing",
        "unimportable",
        "explode",
        "notaprovider",
        "notcallable",
        "wrongname",
        "offline",
        "Bad:Name",
    }
    assert errors["explode"].endswith("failed to build (RuntimeError)")
    assert errors["missing"].endswith("could not be loaded (AttributeError)")
    assert errors["unimportable"].endswith("could not be loaded (ModuleNotFoundError)")
    assert "already in use" in errors["offline"]
    assert "names must match" in errors["wrongname"]
    assert all("SECRET-IN-MESSAGE" not in r.getMessage() for r in caplog.records)
