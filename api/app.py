"""The HTTP service: molecules from a trained generator, their drawings and the model's metadata.

    uvicorn --factory molgan.api.app:create_app       # or: molgan serve

``create_app(settings)`` wires the parts together: the lifespan that loads the checkpoint once
(``api.service``), the routes (``api.routes``, ``api.pages``) and the middleware. Route handlers
get the settings, metrics and loaded model through ``api.deps``.
"""

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException

from molgan.api.body_limit import BodySizeLimit
from molgan.api.errors import http_error, invalid_request
from molgan.api.metrics import MetricsMiddleware, ServiceMetrics
from molgan.api.pages import DOCS_ASSETS, docs_assets, pages
from molgan.api.routes import model_routes, molecule_routes, operations
from molgan.api.service import QuietStartupFailure, lifespan
from molgan.api.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for ``settings`` (default: ``get_settings()``, i.e. the environment)."""
    settings = settings if settings is not None else get_settings()
    app = FastAPI(
        title="molgan",
        version="1",
        summary="Small molecules from a MolGAN-style graph generator.",
        lifespan=lifespan,
        # /docs is served by api.pages from local files; ReDoc would load its script from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # What api.deps hands to route handlers; the lifespan sets `service` once the model is loaded.
    app.state.settings = settings
    app.state.metrics = metrics = ServiceMetrics()
    app.state.service = None
    app.state.checkpoint_failed = False

    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.include_router(molecule_routes(settings))
    app.include_router(model_routes)
    app.include_router(operations)
    app.include_router(pages)
    app.mount(DOCS_ASSETS, docs_assets(), name="docs-assets")

    # Added innermost first: metrics see every answer, including 413s and CORS preflights.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"], max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(QuietStartupFailure, failed=lambda: app.state.checkpoint_failed)
    return app
