"""The documentation stands on the code: every setting described and in the generated table,
every cited test real, nothing pointing outside the repository. No database needed."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
HOOK = DOCS / "hooks" / "settings_table.py"

# `tests/<path>.py::<test function>`, as the docs cite a test.
CITED_TEST = re.compile(r"(tests/[\w./-]+\.py)::(\w+)")
# Written in two pieces so that this file does not contain what it looks for.
OUTSIDE_REFERENCES = ("../" + "shared", "DESIGN" + ".md")


def _hook() -> ModuleType:
    """docs/hooks/settings_table.py, imported by path, as mkdocs does."""
    spec = importlib.util.spec_from_file_location("settings_table_hook", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documentation() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_every_setting_has_a_description():
    undescribed = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert undescribed == [], f"give these Settings fields a description=: {undescribed}"


def test_the_configuration_table_names_every_setting():
    hook = _hook()
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert hook.SETTINGS_MARKER in page, "docs/configuration.md lost the marker the table replaces"

    table = hook.render(page)
    assert hook.SETTINGS_MARKER not in table
    rows = {line.split("|")[1].strip(" `") for line in table.splitlines() if line.startswith("| `")}
    for name, field in Settings.model_fields.items():
        variable = name.upper()
        assert variable in rows, f"{variable} is missing from the configuration table"
        assert hook.env_name(name) == variable
        assert " ".join((field.description or "").split()) in table


def test_the_provider_endpoint_table_names_every_field():
    hook = _hook()
    table = hook.endpoint_table()
    for name in hook.ProviderEndpoint.model_fields:
        assert f"| `{name}` |" in table


def test_every_cited_test_exists():
    cited = {(path, name) for doc in _documentation() for path, name in CITED_TEST.findall(doc.read_text("utf-8"))}
    assert cited, "the docs cite no test at all: has the pattern changed?"
    missing = []
    for path, name in sorted(cited):
        source = ROOT / path
        if not source.is_file():
            missing.append(f"{path}::{name} (no such file)")
        elif not re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", source.read_text("utf-8"), re.MULTILINE):
            missing.append(f"{path}::{name} (no such test in it)")
    assert missing == [], "the docs cite tests that do not exist:\n" + "\n".join(missing)


def test_nothing_in_the_product_refers_outside_the_repository():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    offenders = []
    for relative in filter(None, listed.split("\0")):
        path = ROOT / relative
        if relative.startswith(".ci/") or not path.is_file():
            continue
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue  # binary
        offenders += [f"{relative}: {ref}" for ref in OUTSIDE_REFERENCES if ref in text]
    assert offenders == [], "the product refers to files outside its repository:\n" + "\n".join(offenders)
