"""The console in a real browser: Debian's Chromium driven by Playwright against the app under
uvicorn on 127.0.0.1. An auditor signs in, finds a task, opens it (and sees the `read` its view
made, channel `console`), places a hold and signs out; a client cannot open another client's task;
/docs and /redoc render; no request ever leaves the origin; and axe-core finds no serious or
critical accessibility violation on any console page. Screenshots go to the test's
artifacts folder (`tmp_path/screenshots`)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright, expect

from app.domain import Role
from app.main import create_app
from tests.support.app import Caller, key, running
from tests.support.authz import on_loopback
from tests.support.routes import RUN
from tests.support.settings import make_settings

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)")


@dataclass
class Site:
    base: str
    browser: Browser
    shots: Path
    app: object
    requests: list[str] = field(default_factory=list)  # every request that went out on the network
    blocked: list[str] = field(default_factory=list)  # stopped in the browser by the page's CSP
    csp_violations: list[str] = field(default_factory=list)

    async def context(self) -> BrowserContext:
        """A fresh browser profile whose every request and console error is recorded; any request
        off the origin that the page's policy let through is aborted (and recorded, so it fails)."""
        context = await self.browser.new_context(base_url=self.base)

        def failed(request: Request) -> None:
            if request.failure in ("csp", "net::ERR_BLOCKED_BY_CSP"):
                self.blocked.append(request.url)
            else:
                self.requests.append(request.url)

        context.on("requestfinished", lambda request: self.requests.append(request.url))
        context.on("requestfailed", failed)
        await context.route(lambda url: not url.startswith(self.base + "/"), lambda route: route.abort())

        def on_page(page: Page) -> None:
            page.on(
                "console",
                lambda message: (
                    self.csp_violations.append(message.text) if "Content Security Policy" in message.text else None
                ),
            )

        context.on("page", on_page)
        return context

    async def shot(self, page: Page, name: str) -> None:
        await page.screenshot(path=self.shots / f"{name}.png", full_page=True)


@pytest.fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    app = create_app(make_settings(database_url))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with running(app), on_loopback(app) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield Site(base, browser, shots, app)
        finally:
            await browser.close()


async def run_task(base: str, caller: Caller) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        answer = await http.post(RUN, json={"prompt": "What is our refund policy?"}, headers=caller.headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["task_id"])


async def sign_in(page: Page, caller: Caller) -> None:
    await page.goto("/console")
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await page.get_by_label("API key").fill(caller.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks", level=1)).to_be_visible()


async def test_an_auditor_finds_a_task_reads_it_holds_it_and_signs_out(site: Site, db) -> None:
    alice, auditor = await key(site.app, Role.CLIENT), await key(site.app, Role.AUDITOR)  # type: ignore[arg-type]
    for expired in range(3):  # purge runs for the retention page's chart: 0, 1 and 2 expired tasks
        for _ in range(expired):
            await db.execute(
                "UPDATE agent_task SET expires_at = now() WHERE id = $1", uuid.UUID(await run_task(site.base, alice))
            )
        await site.app.state.components.purger.run()  # type: ignore[attr-defined]
    task_id = await run_task(site.base, alice)
    context = await site.context()
    page = await context.new_page()

    await page.goto("/console/sign-in")
    await page.keyboard.press("Tab")  # the first stop is the skip link, then the form
    await expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    await site.shot(page, "sign-in")
    await sign_in(page, auditor)
    await site.shot(page, "tasks")

    await page.get_by_label("Model").fill("offline:nope")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("No tasks match.")).to_be_visible()
    await page.get_by_label("Model").fill("")
    await page.get_by_label("Owner key id").fill(str(alice.key_id))
    await page.get_by_label("Created from (UTC)").fill("2026-01-01T00:00:00")
    await page.get_by_label("Task id").fill(task_id)
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("row")).to_have_count(2)  # the header and the one task
    await site.shot(page, "tasks-filtered")
    await page.get_by_role("link", name=task_id).click()
    await expect(page.get_by_role("heading", name=f"Task {task_id}", level=1)).to_be_visible()
    trail = page.get_by_role("table", name="What was done to this task, newest first")
    await expect(trail.get_by_role("row").filter(has_text=re.compile(r"read\s+ok\s+console"))).to_have_count(1)
    await expect(page.get_by_label("The task's output")).to_contain_text("No language model was called.")
    await site.shot(page, "task")

    await page.get_by_label("Matter reference").fill("MATTER-2026-17")
    await page.get_by_role("button", name="Place a legal hold").click()
    holds = page.get_by_role("table", name="Holds in force on this task")
    await expect(holds).to_contain_text("MATTER-2026-17")
    await site.shot(page, "task-held")

    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    await page.get_by_label("Action").select_option("hold_place")
    await page.get_by_label("Channel").select_option("console")
    await page.get_by_role("button", name="Filter").click()
    log = page.get_by_role("table", name="Audit events, newest first")
    await expect(log.get_by_role("row")).to_have_count(2)  # the header and the hold just placed
    await expect(log).to_contain_text(task_id)
    await site.shot(page, "audit")

    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Retention").click()
    await expect(page.get_by_role("heading", name="Retention", level=1)).to_be_visible()
    await expect(page.get_by_role("table", name="Purge runs, newest first")).to_be_visible()
    await expect(page.get_by_role("img", name="Rows deleted per purge run")).to_be_visible()
    await site.shot(page, "retention")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await page.goto("/console/tasks")  # signed out: back to the form
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await context.close()

    reads = await db.fetch(
        "SELECT action, outcome FROM audit_event WHERE task_id = $1 AND actor_id = $2 AND channel = 'console'"
        " ORDER BY id",
        uuid.UUID(task_id),
        auditor.key_id,
    )
    # The filtered listings (audited with the id asked for), the view, its trail, the hold, the view after it.
    assert [tuple(r) for r in reads] == [
        ("list", "ok"),
        ("read", "ok"),
        ("audit_read", "ok"),
        ("hold_place", "ok"),
        ("read", "ok"),
        ("audit_read", "ok"),
    ]
    assert await db.fetchval("SELECT count(*) FROM console_session") == 0
    assert all(url.startswith(site.base + "/") for url in site.requests), site.requests
    assert site.csp_violations == []


async def test_an_admin_makes_and_revokes_a_key_checks_health_and_exports_the_audit_log(site: Site, db) -> None:
    admin = await key(site.app, Role.ADMIN)  # type: ignore[arg-type]
    await run_task(site.base, admin)
    await site.app.state.components.trail.seal()  # type: ignore[attr-defined]
    context = await site.context()
    page = await context.new_page()
    await sign_in(page, admin)

    # Keys: make a client key; the page showing it once says so, and is not to be cached.
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Keys").click()
    await expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    await page.get_by_label("Name").fill("Support desk")
    await page.get_by_label("Requests a minute").fill("30")
    await page.get_by_label("Store output").select_option("never")
    await page.get_by_label("Retention ceiling (days)").fill("7")
    async with page.expect_response(lambda r: r.url.endswith("/console/keys") and r.request.method == "POST") as made:
        await page.get_by_role("button", name="Make the key").click()
    assert (await made.value).headers["cache-control"] == "no-store"
    await expect(page.get_by_role("heading", name="Key made: Support desk", level=1)).to_be_visible()
    new_key = await page.locator("#new-key").inner_text()
    await expect(page.locator("#new-webhook-secret")).to_contain_text("whsec_")
    await site.shot(page, "key-made")  # an artifact only: it shows a key (never in the docs)

    # The new key signs in elsewhere; revoking it ends that session at once.
    other = await site.context()
    desk = await other.new_page()
    await sign_in(desk, Caller(uuid.uuid4(), new_key, Role.CLIENT))
    await page.get_by_role("link", name="Back to the keys").click()
    keys = page.get_by_role("table", name="API keys, oldest first")
    await expect(keys.get_by_role("row").filter(has_text="Support desk")).to_contain_text("never")
    await expect(keys).not_to_contain_text(new_key)
    await site.shot(page, "keys")
    await keys.get_by_role("link", name="Support desk").click()
    await expect(page.get_by_role("heading", name="Key Support desk", level=1)).to_be_visible()
    await page.get_by_label("Running tasks at once").fill("2")
    await page.get_by_role("button", name="Save the limits").click()
    await expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    await keys.get_by_role("link", name="Support desk").click()
    await site.shot(page, "key")
    await page.get_by_label("Yes, revoke the key Support desk").check()
    await page.get_by_role("button", name="Revoke the key").click()
    await expect(keys.get_by_role("row").filter(has_text="Support desk")).not_to_contain_text("active")
    await desk.reload()
    await expect(desk.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await other.close()

    # Health: readiness and the figures.
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Health").click()
    await expect(page.get_by_role("heading", name="Health", level=1)).to_be_visible()
    await expect(page.get_by_role("table", name="Readiness checks")).to_contain_text("database")
    await expect(page.get_by_role("table", name="Live tasks by status, every owner's")).to_be_visible()
    await expect(page.get_by_role("table", name="Tasks finished by this process, by status")).to_be_visible()
    await site.shot(page, "health")

    # The audit log: the acts just done, a verifiable export, the chain check.
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit log").click()
    await page.get_by_label("Channel").select_option("console")
    await page.get_by_label("Actor key id").fill(str(admin.key_id))
    await page.get_by_role("button", name="Filter").click()
    log = page.get_by_role("table", name="Audit events, newest first")
    for action in ("key_create", "key_limits", "key_revoke", "sign_in"):
        await expect(log.get_by_role("cell", name=action, exact=True)).to_have_count(1)
    await site.shot(page, "audit-keys")
    async with page.expect_download() as downloading:
        await page.get_by_role("button", name="Download the export").click()
    download = await downloading.value
    assert download.suggested_filename.startswith("audit-export-")
    exported = Path(await download.path()).read_bytes().splitlines()
    assert exported[0].startswith(b'{"created_at"')  # the header (canonical JSON: keys sorted)
    assert b'"type":"manifest"' in exported[-1]
    await page.get_by_role("link", name="Check the seal chain now").click()
    await expect(page.get_by_role("status")).to_contain_text("The chain verifies")
    await site.shot(page, "audit-verify")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await context.close()

    acts = await db.fetch(
        "SELECT action FROM audit_event WHERE actor_id = $1 AND channel = 'console'"
        " AND action IN ('key_create', 'key_limits', 'key_revoke', 'audit_export', 'sign_in', 'sign_out') ORDER BY id",
        admin.key_id,
    )
    assert [r["action"] for r in acts] == [
        "sign_in", "key_create", "key_limits", "key_revoke", "audit_export", "sign_out"
    ]  # fmt: skip
    assert all(url.startswith(site.base + "/") for url in site.requests), site.requests
    assert site.csp_violations == []


async def test_a_client_sees_its_own_tasks_and_not_another_clients(site: Site) -> None:
    alice, bob = await key(site.app), await key(site.app)  # type: ignore[arg-type]
    mine, theirs = await run_task(site.base, alice), await run_task(site.base, bob)
    context = await site.context()
    page = await context.new_page()

    await sign_in(page, alice)
    await expect(page.get_by_role("link", name=mine)).to_be_visible()
    await expect(page.get_by_role("link", name=theirs)).to_have_count(0)
    await expect(page.get_by_role("heading", name="Audit trail")).to_have_count(0)
    answer = await page.goto(f"/console/tasks/{theirs}")
    assert answer is not None
    assert answer.status == 404
    await expect(page.get_by_role("heading", name="Not found", level=1)).to_be_visible()
    await site.shot(page, "not-found")
    await context.close()
    assert all(url.startswith(site.base + "/") for url in site.requests), site.requests
    assert site.csp_violations == []


async def test_the_api_documentation_renders_with_nothing_from_outside(site: Site) -> None:
    context = await site.context()
    page = await context.new_page()
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("LLM Agent Service")
    await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    await site.shot(page, "docs")
    await page.goto("/redoc")
    await expect(page.get_by_role("heading", name=re.compile("LLM Agent Service"), level=1)).to_be_visible()
    await site.shot(page, "redoc")
    await context.close()
    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in site.requests)
    assert all(url.startswith(site.base + "/") for url in site.requests), site.requests
    # ReDoc's sidebar always shows Redocly's logo from their CDN: the pages' policy stops it.
    assert set(site.blocked) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}


async def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page, as `rule: target` lines (axe runs in
    the page through the browser's debugging protocol, which the page's CSP does not govern)."""
    results = await Axe().run(page)
    assert results.response["testEngine"]["name"] == "axe-core"  # it did run
    return [
        f"{v['id']}: {', '.join(str(t) for node in v['nodes'] for t in node['target'])}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def test_every_console_page_passes_axe_core(site: Site, db) -> None:
    alice, auditor = await key(site.app), await key(site.app, Role.ADMIN)  # type: ignore[arg-type]
    await db.execute(
        "UPDATE agent_task SET expires_at = now() WHERE id = $1", uuid.UUID(await run_task(site.base, alice))
    )
    await site.app.state.components.purger.run()  # type: ignore[attr-defined]
    task_id = await run_task(site.base, alice)
    context = await site.context()
    page = await context.new_page()
    found: dict[str, list[str]] = {}

    await page.goto("/console/sign-in")
    found["sign-in"] = await serious_violations(page)
    await sign_in(page, auditor)
    for name, path in [
        ("tasks", "/console/tasks"),
        ("task", f"/console/tasks/{task_id}"),
        ("audit", "/console/audit"),
        ("retention", "/console/retention"),
        ("not-found", f"/console/tasks/{uuid.uuid4()}"),
        ("refused filter", "/console/audit?action=nope"),
        ("refused task filter", "/console/tasks?created_from=nope"),
        ("keys", "/console/keys"),
        ("key", f"/console/keys/{alice.key_id}"),
        ("health", "/console/health"),
        ("audit verify", "/console/audit/verify"),
    ]:
        await page.goto(path)
        found[name] = await serious_violations(page)
    await page.goto("/console/keys")
    await page.get_by_label("Name").fill("axe")
    await page.get_by_role("button", name="Make the key").click()
    await expect(page.get_by_role("heading", name="Key made: axe", level=1)).to_be_visible()
    found["key made"] = await serious_violations(page)
    await context.close()
    client_context = await site.context()
    page = await client_context.new_page()
    await sign_in(page, alice)
    for name, path, status in [("forbidden", "/console/keys", 403), ("client health", "/console/health", 200)]:
        answer = await page.goto(path)
        assert answer is not None
        assert answer.status == status, name
        found[name] = await serious_violations(page)
    await page.goto("/console/keys")
    await expect(page.get_by_role("heading", name="Not allowed", level=1)).to_be_visible()
    await site.shot(page, "forbidden")
    await client_context.close()
    assert found == {name: [] for name in found}
    assert site.csp_violations == []
