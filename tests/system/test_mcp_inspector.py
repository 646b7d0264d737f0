"""MCP Inspector's CLI (2.12, from the npm registry) against a real `agent-service serve`: with a
wrong key the user reads that the key is wrong, whether the Inspector may start OAuth (a
terminal) or not (`--stored-auth-only`); with the right key it lists the tools."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess

import pytest

from tests.support.service_process import cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")
WRONG_KEY = "ask_" + "w" * 43

pytestmark = pytest.mark.skipif(shutil.which("npx") is None or shutil.which("script") is None, reason="needs Node")


@pytest.fixture(scope="module")
def inspector() -> list[str]:
    command = ["npx", "-y", INSPECTOR, "--cli"]
    try:
        subprocess.run([*command, "--help"], capture_output=True, timeout=300, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"MCP Inspector could not be installed from the npm registry: {type(exc).__name__}")
    return command


def inspect(command: list[str], *args: str, terminal: bool = False) -> dict[str, object]:
    """The Inspector's JSON answer (its last line of output), run on a pseudo-terminal if asked."""
    argv = [*command, *args]
    if terminal:  # `script` gives it a TTY, as a user at a shell has: it may then start OAuth
        argv = ["script", "-qec", shlex.join(argv), "/dev/null"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    starts = [m.start() for m in re.finditer(r"^\{", output, re.MULTILINE)]  # its answer, after any notices
    assert starts, f"the Inspector answered no JSON: {output[-500:]}"
    answer, _ = json.JSONDecoder().raw_decode(output[starts[-1] :])
    return answer


def test_the_inspector_tells_the_user_that_the_key_is_wrong_and_works_with_the_right_one(inspector, empty_database_url):
    env = environment(
        DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY, AUDIT_SIGNING_KEY=TEST_SIGNING_KEY
    )
    cli("migrate", env=env)
    key = KEY.search(cli("keys", "create", "inspector", env=env).stdout).group(0)  # type: ignore[union-attr]
    with serving(env) as service:
        url = f"{service.base}/mcp"

        def as_user(key: str, *extra: str, terminal: bool = False) -> dict[str, object]:
            common = ["--transport", "http", "--header", f"Authorization: Bearer {key}", "--method", "tools/list"]
            return inspect(inspector, url, *common, *extra, terminal=terminal)

        unattended = as_user(WRONG_KEY, "--stored-auth-only")
        at_a_terminal = as_user(WRONG_KEY, terminal=True)
        right = as_user(key)

    assert "unauthenticated: a valid API key is required" in json.dumps(unattended)
    # At a terminal it tries OAuth (any 401 makes it), and shows what the server said to that.
    assert "this server does not use OAuth: it takes an API key" in json.dumps(at_a_terminal)
    assert "run_agent_task" in {tool["name"] for tool in right["tools"]}  # type: ignore[index, union-attr]
