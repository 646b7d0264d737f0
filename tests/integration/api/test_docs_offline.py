"""`/docs` and `/redoc` load nothing from outside: every script, stylesheet and icon they name is
served by the service itself (tests/integration/console/test_browser.py opens them in Chromium)."""

from __future__ import annotations

import re

import httpx
import pytest

REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']|(?:url|openapi_url|spec-url)\s*[:=]\s*["']([^"']+)["']""")


def references(html: str) -> set[str]:
    return {a or b for a, b in REFERENCE.findall(html)}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_documentation_pages_name_only_same_origin_assets_and_each_is_served(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    named = references(response.text)
    assert any(url.endswith(".js") for url in named), named
    assert "/openapi.json" in named
    for url in named:
        assert url.startswith("/"), f"{page} names {url}"
        assert not url.startswith("//"), f"{page} names {url}"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content
    assert "googleapis" not in response.text
    assert "cdn." not in response.text


async def test_an_unknown_asset_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs/assets/nothing.js")).status_code == 404
