"""The HTML pages: the molecule browser at ``/`` and the interactive API documentation at ``/docs``.

Swagger UI's script, stylesheet and icon come from the fastapi-offline package and are served by
the app itself under ``/docs-assets``, so /docs works without internet access and no page
loads anything from another site (their Content-Security-Policy says so to the browser).
"""

import functools
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = "/docs-assets"

_PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
# Swagger UI runs an inline start-up script and loads its files, the OpenAPI document and
# "Try it out" requests from this server only.
_DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)

pages = APIRouter(include_in_schema=False)


def docs_assets() -> StaticFiles:
    """Swagger UI's files (swagger-ui-bundle.js, swagger-ui.css, favicon.png), to mount at
    ``DOCS_ASSETS``."""
    return StaticFiles(packages=[("fastapi_offline", "static")])


@functools.cache
def _index_page() -> str:
    return (resources.files("molgan.api") / "static" / "index.html").read_text(encoding="utf-8")


@pages.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse(_index_page(), headers={"Content-Security-Policy": _PAGE_CSP})


@pages.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    # Behind a proxy that mounts the app under a prefix, the page's URLs need that prefix too.
    root = request.scope.get("root_path", "").rstrip("/")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        # Swagger UI would otherwise show a badge fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = _DOCS_CSP
    return page
