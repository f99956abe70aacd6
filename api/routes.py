"""The API's operations: molecules (generate, export, depict), the models' metadata, and health,
readiness and metrics for whoever runs the service.

CPU-bound work (sampling, properties, coordinates) runs on the service's bounded pool, never on
the event loop; a full queue, or one that the request would not get through before its timeout,
is a 503 with Retry-After at once, a request that waits too long after all a 504. The work of one
SMILES is bounded by its heavy atoms (``Service.max_heavy_atoms``), checked before RDKit does
anything costly with it.
"""

import asyncio
import functools
import io
import json
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rdkit import Chem, rdBase

from molgan.api.deps import MaybeServiceDep, MetricsDep, ServiceDep, SettingsDep
from molgan.api.errors import field_error
from molgan.api.json_body import MAX_JSON_DEPTH, JsonBodyRoute
from molgan.api.metrics import ServiceMetrics
from molgan.api.pool import PoolFull, retry_after
from molgan.api.schemas import (
    MAX_MODEL_NAME_LENGTH,
    MAX_SEED,
    MAX_SMILES_LENGTH,
    ErrorMessage,
    ExportFormat,
    ExportRequestBase,
    GenerateRequestBase,
    GenerateResponse,
    GenerateStats,
    Health,
    ModelInfo,
    ModelList,
    Readiness,
    export_request_model,
    generate_request_model,
)
from molgan.api.service import ServedModel, Service, UnknownModel
from molgan.api.settings import Settings
from molgan.chem import is_valid, to_mol
from molgan.conditions import TargetError
from molgan.draw import MAX_SIZE, MIN_SIZE, smiles_to_svg
from molgan.export import write_samples
from molgan.metrics import properties
from molgan.sampling import MoleculeSampler, Sample, sample_filtered
from molgan.sampling_settings import SamplingError

T = TypeVar("T")

_SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
EXPORT_MEDIA_TYPES = {"csv": "text/csv", "sdf": "chemical/x-mdl-sdfile"}

_BUSY = {
    503: {"model": ErrorMessage, "description": "Busy (see Retry-After) or no model loaded.",
          "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}},
}
_POOLED = {
    400: {"model": ErrorMessage,
          "description": f"Unreadable body (not UTF-8, nested more than {MAX_JSON_DEPTH} levels deep)."},
    413: {"model": ErrorMessage, "description": "The body is larger than the limit."},
    415: {"model": ErrorMessage, "description": "The body is not sent as application/json."},
    **_BUSY,
    504: {"model": ErrorMessage, "description": "Took longer than the timeout."},
}


def _served(service: Service, name: str | None, loc: tuple[str, str]) -> ServedModel:
    """The model a request names (``None``: the default); a 422 at ``loc`` listing the served
    models if it is not one of them."""
    try:
        return service.model(name)
    except UnknownModel as exc:
        raise field_error(loc, str(exc), name) from None


async def _on_pool(work: Callable[[], T], service: Service, settings: Settings, metrics: ServiceMetrics,
                   kind: str, units: int) -> T:
    """``work()`` (``units`` of ``kind``: see ``api.pool``) on the service's pool: 503 at once when
    its queue is full or the work is not expected to finish before the request timeout, 504 after
    that timeout."""
    try:
        return await service.pool.run(work, settings.request_timeout_s, kind, units)
    except PoolFull as exc:
        metrics.rejected.labels("busy" if exc.reason == "queue" else "estimate").inc()
        wait = retry_after(exc.retry_after_s, settings.retry_after_s)
        raise HTTPException(
            503, f"the server is busy: {exc}; retry after {wait} s", headers={"Retry-After": str(wait)},
        ) from None
    except asyncio.TimeoutError:
        metrics.rejected.labels("timeout").inc()
        raise HTTPException(
            504,
            f"the request took longer than the request timeout of {settings.request_timeout_s:g} s; "
            "ask for fewer molecules or retry later",
        ) from None


# --------------------------------------------------------------------------- generate and export

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


def check_targets(sampler: MoleculeSampler, targets: dict[str, float] | None) -> None:
    """A 422 at ``("body", "targets", <property>)`` for a target the model cannot take (an unknown
    property, a value out of range, any target for an unconditional model)."""
    try:
        sampler.check_targets(targets)
    except TargetError as exc:
        # The field is "targets.<name>" or "targets"; a name may itself hold a dot.
        _, _, name = exc.field.partition(".")
        loc: tuple[str, ...] = ("body", "targets", name) if name else ("body", "targets")
        value = targets.get(name) if name and targets else targets
        raise field_error(loc, str(exc).removeprefix(f"{exc.field}: "), value) from None


async def generate_molecules(
    request: GenerateRequestBase, service: Service, settings: Settings, metrics: ServiceMetrics
) -> Response:
    """The answer to ``POST /v1/generate``: molecules, stats and the model's summary as JSON."""
    started = time.perf_counter()
    served = _served(service, request.model, ("body", "model"))
    sampler = served.sampler
    try:
        use = sampler.settings(request.mode, request.temperature, request.min_p)
    except SamplingError as exc:
        raise field_error(("body", exc.field), str(exc), getattr(request, exc.field)) from None
    check_targets(sampler, request.targets)  # here, not on the pool: a bad target costs no sampling
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)

    def work() -> tuple[bytes, GenerateStats]:
        """Sample, then encode the answer, all off the event loop."""
        result = sample_filtered(
            sampler, request.n, seed=seed, settings=use, valid_only=request.valid_only, unique=request.unique,
            targets=request.targets,
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
            "model": served.summary.model_dump(),
        }
        return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode(), stats

    # Properties and the filters' extra sampling cost far more per molecule than sampling alone.
    kind = (f"generate {served.summary.name} properties={request.properties} "
            f"filtered={request.valid_only or request.unique}")
    body, stats = await _on_pool(work, service, settings, metrics, kind, request.n)
    metrics.record_generation(served.summary.name, stats.sampled, stats.returned, stats.valid)
    # Encoded by `work` rather than by FastAPI, whose validation of a thousand molecules against
    # GenerateResponse would take longer than sampling them; the tests check the schema instead.
    return Response(body, media_type="application/json")


def heavy_atoms(smiles: str) -> int | None:
    """Heavy atoms of a SMILES as written, read without sanitizing (linear in its length, unlike
    what sanitizing, coordinates or drawing cost); ``None`` if it does not parse even so."""
    with rdBase.BlockLogs():  # bad input is expected and answered with a 422
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    return None if mol is None else mol.GetNumHeavyAtoms()


def check_heavy_atoms(smiles: str, limit: int, loc: tuple[str | int, ...]) -> None:
    """A 422 at ``loc`` if ``smiles`` has more than ``limit`` heavy atoms."""
    atoms = heavy_atoms(smiles)
    if atoms is not None and atoms > limit:
        raise field_error(loc, f"SMILES has {atoms} heavy atoms; this server takes at most {limit}", smiles)


def export_text(smiles: list[str], fmt: ExportFormat, max_heavy_atoms: int) -> str:
    """The molecules as a CSV or SDF file (molgan.export's writers, as `molgan sample -o` uses).

    Raises a 422 naming the first SMILES that has more than ``max_heavy_atoms`` heavy atoms or
    that RDKit cannot parse.
    """
    samples = []
    for i, s in enumerate(smiles):
        check_heavy_atoms(s, max_heavy_atoms, ("body", "smiles", i))
        if to_mol(s) is None:
            raise field_error(("body", "smiles", i), "SMILES does not parse/sanitize", s)
        samples.append(Sample(s, is_valid(s)))
    out = io.StringIO()
    write_samples(samples, out, fmt)
    return out.getvalue()


async def export_molecules(
    request: ExportRequestBase, service: Service, settings: Settings, metrics: ServiceMetrics
) -> Response:
    """A download of the given molecules as CSV or SDF."""
    text = await _on_pool(
        lambda: export_text(request.smiles, request.format, service.max_heavy_atoms),
        service, settings, metrics, f"export {request.format}", len(request.smiles),
    )
    return Response(text, media_type=EXPORT_MEDIA_TYPES[request.format], headers={
        "Content-Disposition": f'attachment; filename="molecules.{request.format}"',
    })


def molecule_routes(settings: Settings) -> APIRouter:
    """``POST /v1/generate`` and ``POST /v1/export``.

    Their request bodies carry this server's limits on molecules and body size in their schema
    (so that /docs and /openapi.json state them), which is why this router is built for each app.
    """
    GenerateRequest = generate_request_model(settings.max_molecules)
    ExportRequest = export_request_model(settings.max_molecules, settings.max_body_bytes)
    router = APIRouter(prefix="/v1", tags=["molecules"], route_class=JsonBodyRoute)

    @router.post(
        "/generate", response_model=GenerateResponse, responses=_POOLED, summary="Generate molecules"
    )
    async def generate(
        body: GenerateRequest,  # type: ignore[valid-type]
        service: ServiceDep, settings: SettingsDep, metrics: MetricsDep,
    ) -> Response:
        """Sample ``n`` molecules from ``model`` (default: the server's default model). With
        ``valid_only`` or ``unique`` the server keeps sampling until it has ``n`` or has drawn 20 n
        graphs; ``stats.fell_short`` says which. An unknown model is a 422 listing the served ones.
        A conditional model (``conditions`` of GET /v1/models) takes ``targets``, a value per
        property; a target it cannot take is a 422 naming it."""
        return await generate_molecules(body, service, settings, metrics)

    @router.post(
        "/export",
        response_class=Response,
        responses={
            200: {"content": {media: {"schema": {"type": "string"}} for media in EXPORT_MEDIA_TYPES.values()},
                  "description": "The file, as an attachment named molecules.csv or molecules.sdf."},
            **_POOLED,
        },
        summary="Download molecules as CSV or SDF",
    )
    async def export(
        body: ExportRequest,  # type: ignore[valid-type]
        service: ServiceDep, settings: SettingsDep, metrics: MetricsDep,
    ) -> Response:
        """The given molecules as a CSV file (SMILES, validity, properties) or an SDF file (valid
        molecules with 2D coordinates); 422 names the first SMILES that RDKit cannot parse or that
        has more heavy atoms than the server takes (``limits.max_heavy_atoms`` of GET /v1/model)."""
        return await export_molecules(body, service, settings, metrics)

    return router


# --------------------------------------------------------------------------- depict and model

model_routes = APIRouter(prefix="/v1")


@functools.lru_cache(maxsize=2048)
def _svg(smiles: str, width: int, height: int) -> str:
    return smiles_to_svg(smiles, width, height)


@model_routes.get(
    "/depict",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}},
                     "description": "The molecule drawn by RDKit, as SVG."}, **_BUSY},
    summary="Draw a molecule",
    tags=["molecules"],
)
def depict(
    service: ServiceDep,
    smiles: Annotated[str, Query(min_length=1, max_length=MAX_SMILES_LENGTH, description="SMILES")],
    width: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="Pixels.")] = 250,
    height: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="Pixels.")] = 200,
) -> Response:
    """SVG drawing of a SMILES string; 422 when RDKit cannot parse or sanitize it, or when it has
    more heavy atoms than the server takes (``limits.max_heavy_atoms`` of GET /v1/model)."""
    check_heavy_atoms(smiles, service.max_heavy_atoms, ("query", "smiles"))
    try:
        svg = _svg(smiles, width, height)
    except (ValueError, RuntimeError) as exc:
        raise field_error(("query", "smiles"), str(exc), smiles) from None
    return Response(svg, media_type="image/svg+xml", headers={
        "Cache-Control": "public, max-age=86400",
        "Content-Security-Policy": _SVG_CSP,
        "X-Content-Type-Options": "nosniff",
    })


@model_routes.get(
    "/model", response_model=ModelInfo, responses=_BUSY, summary="Model metadata", tags=["model"]
)
async def model(
    service: ServiceDep,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_MODEL_NAME_LENGTH,
              description="A served model's name (GET /v1/models); omitted: the default model."),
    ] = None,
) -> ModelInfo:
    """One model's metadata: name, checkpoint file name and sha256, training step, vocabulary,
    sampling defaults, conditions (the properties it takes targets for), evaluation figures,
    package versions and this server's limits. An unknown
    name is a 422 listing the served models."""
    return _served(service, name, ("query", "name")).info


@model_routes.get(
    "/models", response_model=ModelList, responses=_BUSY, summary="Every served model", tags=["model"]
)
async def models(service: ServiceDep) -> ModelList:
    """The default model's name and the metadata of every served model (as ``GET /v1/model``)."""
    return ModelList(default=service.default, models=[m.info for m in service.models.values()])


# --------------------------------------------------------------------------- operations

operations = APIRouter(tags=["operations"])


@operations.get("/health", response_model=Health, summary="Liveness")
async def health() -> Health:
    """200 while the process is serving requests."""
    return Health(status="ok")


@operations.get(
    "/ready", response_model=Readiness, summary="Readiness",
    responses={503: {"model": Readiness, "description": "The model is not loaded."}},
)
async def ready(service: MaybeServiceDep) -> Any:
    """200 once every model is loaded, 503 before."""
    if service is None:
        return JSONResponse(Readiness(status="not ready").model_dump(), status_code=503)
    return Readiness(status="ready", model=service.default, models=list(service.models))


@operations.get(
    "/metrics", response_class=Response, summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                     "description": "Prometheus text format."}},
)
async def prometheus(service: MaybeServiceDep, metrics: MetricsDep) -> Response:
    """Requests, latencies, molecules generated and their valid rate, in Prometheus text format."""
    metrics.queue.set(service.pool.pending if service is not None else 0)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
