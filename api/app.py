"""The HTTP service: molecules from a trained generator, their drawings and the model's metadata.

    uvicorn --factory molgan.api.app:create_app       # or: molgan serve

``create_app(settings)`` builds an app whose lifespan loads the checkpoint once. Sampling is
CPU-bound, so it runs on a bounded thread pool (see ``api.pool``), never on the event loop;
when the pool's queue is full the answer is 503 with Retry-After.
"""

import asyncio
import functools
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from molgan.api.body_limit import BodySizeLimit
from molgan.api.metrics import ASGIApp, Message, MetricsMiddleware, Receive, Scope, Send, ServiceMetrics
from molgan.api.pool import PoolFull, WorkPool
from molgan.api.schemas import (
    MAX_SEED,
    ErrorMessage,
    GenerateRequestBase,
    GenerateResponse,
    GenerateStats,
    Health,
    Limits,
    ModelInfo,
    ModelSummary,
    Readiness,
    generate_request_model,
)
from molgan.api.settings import Settings, get_settings
from molgan.checkpoint import CheckpointError, bundled_checkpoint_path
from molgan.draw import MAX_SIZE, MIN_SIZE, smiles_to_svg
from molgan.metrics import properties
from molgan.sampling import MoleculeSampler, Sample, sample_filtered
from molgan.sampling_settings import SamplingError

log = logging.getLogger("molgan.api")

MAX_DEPICT_SMILES = 500
_PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
_SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"


@dataclass
class Service:
    """What the lifespan sets up: the loaded model and the pool that samples from it."""

    sampler: MoleculeSampler
    pool: WorkPool
    summary: ModelSummary
    info: ModelInfo


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: those become text ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _field_error(where: str, field: str, message: str, value: Any) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    error = {"type": "value_error", "loc": (where, field), "msg": message, "input": value}
    return RequestValidationError([error])


@functools.lru_cache(maxsize=2048)
def _svg(smiles: str, width: int, height: int) -> str:
    return smiles_to_svg(smiles, width, height)


def _model_info(sampler: MoleculeSampler, checkpoint: Path, settings: Settings) -> ModelInfo:
    meta = sampler.describe()
    return ModelInfo(
        name=meta["name"],
        step=meta["step"],
        checkpoint=str(checkpoint),
        vocab=meta["vocab"],
        sampling=meta["sampling"],
        z_dim=meta["z_dim"],
        metrics=_json_safe(meta["metrics"]),  # an evaluation may have saved NaN
        versions={str(k): str(v) for k, v in meta["versions"].items()},
        limits=Limits(
            max_molecules=settings.max_molecules,
            max_body_bytes=settings.max_body_bytes,
            request_timeout_s=settings.request_timeout_s,
        ),
    )


_NO_PROPERTIES: dict[str, float | None] = {"qed": None, "logp": None, "sa": None, "mol_weight": None}


def _molecules(samples: list[Sample], with_properties: bool) -> list[dict[str, Any]]:
    """The ``Molecule`` objects of the answer as plain dicts (a thousand of them are encoded
    several times faster so than as models)."""
    if not with_properties:
        return [{"smiles": s.smiles, "valid": s.valid} for s in samples]
    cache: dict[str, dict[str, float]] = {}
    out = []
    for s in samples:
        if s.smiles is None:
            props: dict[str, float | None] = _NO_PROPERTIES
        else:
            if s.smiles not in cache:
                cache[s.smiles] = properties(s.smiles)
            props = cache[s.smiles]
        out.append({"smiles": s.smiles, "valid": s.valid, **props})
    return out


class _QuietStartupFailure:
    """Turns a failed checkpoint load into the one log line the lifespan wrote, without the
    server repeating the traceback (the server still exits)."""

    def __init__(self, app: ASGIApp, failed: Callable[[], bool]) -> None:
        self.app = app
        self.failed = failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.failed():
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        await self.app(scope, receive, quiet_send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for ``settings`` (default: ``get_settings()``, i.e. the environment)."""
    settings = settings if settings is not None else get_settings()
    checkpoint = settings.checkpoint if settings.checkpoint is not None else bundled_checkpoint_path()
    metrics = ServiceMetrics()
    GenerateRequest = generate_request_model(settings.max_molecules)
    page = (resources.files("molgan.api") / "static" / "index.html").read_text(encoding="utf-8")
    checkpoint_failed = False

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal checkpoint_failed
        started = time.perf_counter()
        try:
            sampler = MoleculeSampler.load(checkpoint)
        except CheckpointError as exc:
            checkpoint_failed = True
            log.error("cannot start: %s", exc)
            raise
        previous_threads = torch.get_num_threads()
        torch_threads = settings.effective_torch_threads()
        torch.set_num_threads(torch_threads)
        # Also in each sampling thread, in case the intra-op setting is per thread (OpenMP).
        pool = WorkPool(settings.worker_threads, settings.max_queue,
                        initializer=lambda: torch.set_num_threads(torch_threads))
        info = _model_info(sampler, checkpoint, settings)
        summary = ModelSummary(name=info.name, step=info.step, checkpoint=info.checkpoint)
        app.state.service = Service(sampler, pool, summary, info)
        log.info(
            "loaded %s (%s, step %s) in %.2f s; %d sampling threads x %d torch threads, queue %d",
            checkpoint, info.name, info.step, time.perf_counter() - started,
            settings.worker_threads, torch_threads, settings.max_queue,
        )
        try:
            yield
        finally:
            app.state.service = None
            pool.shutdown()
            torch.set_num_threads(previous_threads)

    app = FastAPI(
        title="molgan",
        version="1",
        summary="Small molecules from a MolGAN-style graph generator.",
        lifespan=lifespan,
    )
    app.state.service = None
    app.state.settings = settings
    app.state.metrics = metrics

    async def get_service(request: Request) -> Service:  # async: FastAPI runs a sync one in a thread
        service: Service | None = request.app.state.service
        if service is None:
            raise _NotReady()
        return service

    ServiceDep = Annotated[Service, Depends(get_service)]
    busy = {
        503: {"model": ErrorMessage, "description": "Busy (see Retry-After) or no model loaded.",
              "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}},
    }

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(_NotReady)
    async def not_ready(_request: Request, _exc: _NotReady) -> JSONResponse:
        return JSONResponse({"detail": "the model is not loaded"}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})

    @app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses={
            400: {"model": ErrorMessage, "description": "Unreadable body (not UTF-8, nested too deep)."},
            413: {"model": ErrorMessage, "description": "The body is larger than the limit."},
            **busy,
            504: {"model": ErrorMessage, "description": "Took longer than the timeout."},
        },
        summary="Generate molecules",
        tags=["molecules"],
    )
    async def generate(body: GenerateRequest, service: ServiceDep) -> Response:  # type: ignore[valid-type]
        """Sample ``n`` molecules. With ``valid_only`` or ``unique`` the server keeps sampling
        until it has ``n`` or has drawn 20 n graphs; ``stats.fell_short`` says which."""
        started = time.perf_counter()
        request: GenerateRequestBase = body
        sampler = service.sampler
        try:
            use = sampler.settings(request.mode, request.temperature, request.min_p)
        except SamplingError as exc:
            raise _field_error("body", exc.field, str(exc), getattr(request, exc.field)) from None
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)

        def work() -> tuple[bytes, GenerateStats]:
            """Sample, then encode the answer, all off the event loop."""
            result = sample_filtered(
                sampler, request.n, seed=seed, settings=use,
                valid_only=request.valid_only, unique=request.unique,
            )
            valid = [s.smiles for s in result.samples if s.valid]
            stats = GenerateStats(
                requested=request.n, returned=len(result.samples), sampled=result.sampled, valid=len(valid),
                unique=len(set(valid)), fell_short=result.fell_short, seed=seed, mode=use.mode,
                temperature=use.temperature, min_p=use.min_p,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            answer = {
                "molecules": _molecules(result.samples, request.properties),
                "stats": stats.model_dump(),
                "model": service.summary.model_dump(),
            }
            return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode(), stats

        try:
            body, stats = await service.pool.run(work, settings.request_timeout_s)
        except PoolFull:
            metrics.rejected.labels("busy").inc()
            return JSONResponse(
                {"detail": f"the server is busy ({service.pool.pending} requests queued or running); "
                           f"retry after {settings.retry_after_s} s"},
                status_code=503, headers={"Retry-After": str(settings.retry_after_s)},
            )
        except asyncio.TimeoutError:
            metrics.rejected.labels("timeout").inc()
            return JSONResponse(
                {"detail": f"sampling took longer than the request timeout of "
                           f"{settings.request_timeout_s:g} s; ask for fewer molecules or retry later"},
                status_code=504,
            )
        metrics.record_generation(stats.sampled, stats.returned, stats.valid)
        # Encoded by `work` rather than by FastAPI, whose validation of a thousand molecules against
        # GenerateResponse would take longer than sampling them; the tests check the schema instead.
        return Response(body, media_type="application/json")

    @app.get(
        "/v1/depict",
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}},
                         "description": "The molecule drawn by RDKit, as SVG."}},
        summary="Draw a molecule",
        tags=["molecules"],
    )
    def depict(
        smiles: Annotated[str, Query(min_length=1, max_length=MAX_DEPICT_SMILES, description="SMILES")],
        width: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="Pixels.")] = 250,
        height: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="Pixels.")] = 200,
    ) -> Response:
        """SVG drawing of a SMILES string; 422 when RDKit cannot parse or sanitize it."""
        try:
            svg = _svg(smiles, width, height)
        except (ValueError, RuntimeError) as exc:
            raise _field_error("query", "smiles", str(exc), smiles) from None
        return Response(svg, media_type="image/svg+xml", headers={
            "Cache-Control": "public, max-age=86400",
            "Content-Security-Policy": _SVG_CSP,
            "X-Content-Type-Options": "nosniff",
        })

    @app.get("/v1/model", response_model=ModelInfo, responses=busy, summary="Model metadata", tags=["model"])
    async def model(service: ServiceDep) -> ModelInfo:
        """Checkpoint metadata: name, training step, vocabulary, sampling defaults, evaluation
        metrics, package versions and this server's limits."""
        return service.info

    @app.get("/health", response_model=Health, summary="Liveness", tags=["operations"])
    async def health() -> Health:
        """200 while the process is serving requests."""
        return Health(status="ok")

    @app.get(
        "/ready", response_model=Readiness, summary="Readiness", tags=["operations"],
        responses={503: {"model": Readiness, "description": "The model is not loaded."}},
    )
    async def ready(request: Request) -> Any:
        """200 once the model is loaded, 503 before."""
        service: Service | None = request.app.state.service
        if service is None:
            return JSONResponse(Readiness(status="not ready").model_dump(), status_code=503)
        return Readiness(status="ready", model=service.summary.name)

    @app.get(
        "/metrics", response_class=Response, summary="Prometheus metrics", tags=["operations"],
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                         "description": "Prometheus text format."}},
    )
    async def prometheus(request: Request) -> Response:
        """Requests, latencies, molecules generated and their valid rate, in Prometheus text format."""
        service: Service | None = request.app.state.service
        metrics.queue.set(service.pool.pending if service is not None else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_CSP})

    # Added innermost first: metrics see every answer, including 413s and CORS preflights.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"], max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(_QuietStartupFailure, failed=lambda: checkpoint_failed)
    return app


class _NotReady(Exception):
    """A request reached an endpoint that needs the model before it was loaded."""
