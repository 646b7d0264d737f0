"""A short run of scripts/load.py: under concurrent mixed load nothing is lost and every read is audited once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def test_a_short_load_run_loses_nothing_and_audits_every_read_exactly_once(database_url, tmp_path):
    report_file = tmp_path / "load.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "load.py"),
            "--clients",
            "20",
            "--seconds",
            "5",
            "--database-url",
            database_url,  # a fresh migrated database of the test server: no cluster of its own to start
            "--json",
            str(report_file),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_file.read_text())
    lost, audit, operations = report["lost"], report["audit"], report["operations"]
    print(f"[load] lost={lost['lost']} audit mismatches={audit['mismatches']} requests={report['totals']['requests']}")
    assert lost["lost"] == 0, lost
    assert audit["mismatches"] == 0, audit
    assert lost["acknowledged"] > 0
    assert lost["deleted_on_purpose"] > 0
    # Every kind of call was made, and answered without a server error.
    assert set(operations) == {
        "submit (wait)",
        "submit (wait=false)",
        "submit (cache)",
        "submit (idempotent)",
        "read",
        "list",
        "delete",
        "auditor read",
        "audit log",
    }
    assert not [status for status in report["totals"]["errors_by_status"] if not status.startswith("4")]
    assert report["cache_hits"] > 0
    assert report["replays"] > 0
    assert audit["found_rows"]["read"] >= audit["expected_rows"]["read"] > 0
