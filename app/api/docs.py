"""`/docs` (Swagger UI) and `/redoc` (ReDoc), with every asset served by the service itself.

FastAPI's own pages load their scripts from a CDN, so in an air-gapped deployment they are blank.
Here the scripts, the stylesheet and the favicon come from the `fastapi-offline` package's files
(Swagger UI 5, ReDoc 2), mounted under `/docs/assets`: nothing the pages load leaves the origin.
Swagger UI's validator badge (an image from validator.swagger.io) and ReDoc's Google Fonts are off
for the same reason, and a Content-Security-Policy keeps the pages to this origin whatever the
bundles would fetch (ReDoc's sidebar shows Redocly's logo from their CDN: blocked, so never requested).
The pages' inline start-up scripts and the bundles' injected styles need `'unsafe-inline'`; the
console (`app.console`) has no such need and a stricter policy.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))

router = APIRouter(include_in_schema=False)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'self'"
)


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def assets() -> Mount:
    """The Swagger UI and ReDoc files, as shipped by the package (its wheel carries them)."""
    return Mount(ASSETS, app=StaticFiles(directory=ASSETS_DIR), name="docs-assets")


def _openapi_url(request: Request) -> str:
    return str(request.app.openapi_url)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return _confined(
        get_swagger_ui_html(
            openapi_url=_openapi_url(request),
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return _confined(
        get_redoc_html(
            openapi_url=_openapi_url(request),
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
    )
