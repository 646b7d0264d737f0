"""Rotating the result key as an operator does: a new key first, `encryption status`, an online
`encryption reencrypt` while the service serves, then the old key retired, and every answer
still reads; a key that seals rows and is removed shows as retired."""

from __future__ import annotations

import re

import httpx

from tests.support.routes import GET, RUN
from tests.support.service_process import cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_RESULT_KEYS


def status_rows(text: str) -> dict[str, tuple[int, str]]:
    """`encryption status` as {key id: (rows, state)}."""
    found = {}
    for line in text.splitlines()[1:]:
        match = re.match(r"(\S+)\s+(\d+)\s+(\d+)\s+\S+(?: \S+)?\s+(.+)$", line)
        assert match, line
        found[match.group(1)] = (int(match.group(2)), match.group(4).strip())
    return found


def test_a_key_is_rotated_reencrypted_online_and_retired(empty_database_url):
    old = environment(DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY)
    cli("migrate", env=old)
    plain = re.search(r"ask_\S+", cli("keys", "create", "rotating", env=old).stdout).group(0)  # type: ignore[union-attr]
    auth = {"Authorization": f"Bearer {plain}"}
    with serving(old) as service:
        answers = [
            httpx.post(f"{service.base}{RUN}", json={"prompt": f"p{i}", "cache": False}, headers=auth).json()
            for i in range(5)
        ]
    new_entry = cli("encryption", "new-key", "k2", env=old).stdout.strip()
    assert new_entry.startswith("k2:")
    assert len(new_entry) == 3 + 44
    rotated = old | {"RESULT_ENCRYPTION_KEYS": f"{new_entry},{TEST_RESULT_KEYS}"}

    before = status_rows(cli("encryption", "status", env=rotated).stdout)
    # Five tasks, and the API key's webhook signing secret, sealed under the same ring.
    assert before == {"test1": (6, "configured"), "k2": (0, "active")}
    with serving(rotated) as service:
        fresh = httpx.post(f"{service.base}{RUN}", json={"prompt": "new", "cache": False}, headers=auth).json()
        moved = cli("encryption", "reencrypt", "--batch-rows", "2", env=rotated).stdout
        for answer in [*answers, fresh]:  # the service kept serving, and reads every row
            read = httpx.get(f"{service.base}{GET.format(answer['task_id'])}", headers=auth)
            assert read.json()["output"] == answer["output"]
    assert "Re-encrypted 6 rows to key 'k2' (3 batches" in moved
    after = status_rows(cli("encryption", "status", env=rotated).stdout)
    assert after == {"k2": (7, "active"), "test1": (0, "seals nothing: can be retired")}

    retired = old | {"RESULT_ENCRYPTION_KEYS": new_entry}
    with serving(retired) as service:
        for answer in [*answers, fresh]:
            read = httpx.get(f"{service.base}{GET.format(answer['task_id'])}", headers=auth)
            assert (read.status_code, read.json()["output"]) == (200, answer["output"])
    # Dropping the new key instead, which seals every row, leaves them unreadable, and says so.
    assert status_rows(cli("encryption", "status", env=old).stdout) == {"k2": (7, "retired"), "test1": (0, "active")}
