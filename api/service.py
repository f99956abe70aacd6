"""The loaded models and the pool that samples from them, set up once by the app's lifespan.

The lifespan reads the app's settings from ``app.state.settings`` and leaves the ``Service`` in
``app.state.service`` (``None`` until every model is loaded and after shut-down); route handlers
get it through ``api.deps``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molgan.api.catalog import CatalogError, default_model, served_checkpoints
from molgan.api.pool import WorkPool
from molgan.api.schemas import Limits, ModelInfo, ModelSummary, json_safe
from molgan.api.settings import Settings
from molgan.checkpoint import CheckpointError, evaluation_report
from molgan.device import DeviceError
from molgan.objectives import rewarded_objectives
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingError

log = logging.getLogger("molgan.api")

# Without MOLGAN_MAX_HEAVY_ATOMS, a SMILES sent to the service may have this many times the heavy
# atoms of the largest graph a served model generates: room for molecules from elsewhere, while
# the work one SMILES costs (2D coordinates, drawing, properties) stays in milliseconds.
HEAVY_ATOM_MARGIN = 4


class UnknownModel(LookupError):
    """A request named a model this server does not serve; the message lists those it does."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded checkpoint: its sampler (with the server's default sampling) and its metadata."""

    sampler: MoleculeSampler
    summary: ModelSummary
    info: ModelInfo


@dataclass
class Service:
    """What the lifespan sets up: the loaded models, by name, and the pool that samples."""

    models: dict[str, ServedModel]
    default: str
    pool: WorkPool
    max_heavy_atoms: int
    """Heavy atoms a SMILES sent to export or depict may have."""

    def model(self, name: str | None) -> ServedModel:
        """The model called ``name`` (``None``: the default); ``UnknownModel`` if none is."""
        if name is None:
            return self.models[self.default]
        if name not in self.models:
            raise UnknownModel(f"unknown model {name!r}; this server serves: {', '.join(self.models)}")
        return self.models[name]


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints a server's settings name, each loaded once."""

    files: dict[str, Path]
    samplers: dict[str, MoleculeSampler]
    default: str


def load_checkpoints(settings: Settings) -> Checkpoints:
    """Every checkpoint the settings name (``api.catalog``), loaded with its own sampling
    defaults, and the name of the default model.

    Raises ``CatalogError``, ``CheckpointError`` or ``DeviceError``, each with a one-line message.
    """
    files = served_checkpoints(settings.models, settings.checkpoint)
    default = default_model(list(files), settings.default_model)
    samplers = {name: MoleculeSampler.load(path, device=settings.device) for name, path in files.items()}
    return Checkpoints(files, samplers, default)


def max_heavy_atoms(settings: Settings, samplers: Iterable[MoleculeSampler]) -> int:
    """``MOLGAN_MAX_HEAVY_ATOMS``, else ``HEAVY_ATOM_MARGIN`` times the largest served graph."""
    if settings.max_heavy_atoms is not None:
        return settings.max_heavy_atoms
    return HEAVY_ATOM_MARGIN * max(sampler.vocab.max_atoms for sampler in samplers)


def model_info(name: str, sampler: MoleculeSampler, checkpoint: Path, settings: Settings,
               default: bool, heavy_atoms: int) -> ModelInfo:
    """What ``GET /v1/model?name=`` answers. The checkpoint is named by its file name and sha256
    only: the directory it lies in is the server's business."""
    meta = sampler.describe()
    figures = evaluation_report(checkpoint)
    return ModelInfo(
        name=name,
        config=meta["name"],
        step=meta["step"],
        checkpoint=checkpoint.name,
        sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        objectives=rewarded_objectives(sampler.config.reward.weights),
        vocab=meta["vocab"],
        sampling=meta["sampling"],
        z_dim=meta["z_dim"],
        conditions=meta["conditions"],
        metrics=json_safe(figures if figures is not None else meta["metrics"]),  # NaN is possible
        versions={str(k): str(v) for k, v in meta["versions"].items()},
        limits=Limits(
            max_molecules=settings.max_molecules,
            max_body_bytes=settings.max_body_bytes,
            request_timeout_s=settings.request_timeout_s,
            max_heavy_atoms=heavy_atoms,
        ),
        default=default,
    )


def served_model(name: str, sampler: MoleculeSampler, checkpoint: Path, settings: Settings,
                 default: bool, heavy_atoms: int) -> ServedModel:
    info = model_info(name, sampler, checkpoint, settings, default, heavy_atoms)
    summary = ModelSummary(name=name, config=info.config, step=info.step, checkpoint=info.checkpoint)
    return ServedModel(sampler, summary, info)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the checkpoints of ``app.state.settings`` and start the sampling pool; stop it at the end.

    Settings that name no usable set of checkpoints, a checkpoint that cannot be loaded, or
    default sampling settings that do not resolve over a checkpoint's own, are logged as one line
    and stop start-up; each also sets ``app.state.checkpoint_failed`` so that
    ``QuietStartupFailure`` keeps the server from repeating the error as a traceback.
    """
    settings: Settings = app.state.settings
    started = time.perf_counter()
    try:
        loaded = load_checkpoints(settings)
        heavy_atoms = max_heavy_atoms(settings, loaded.samplers.values())
        models = {
            name: served_model(
                name, sampler.with_defaults(settings.mode, settings.temperature, settings.min_p),
                loaded.files[name], settings, name == loaded.default, heavy_atoms,
            )
            for name, sampler in loaded.samplers.items()
        }
    except (CatalogError, CheckpointError, SamplingError, DeviceError) as exc:
        app.state.checkpoint_failed = True
        log.error("cannot start: %s", exc)
        raise
    previous_threads = torch.get_num_threads()
    torch_threads = settings.effective_torch_threads()
    torch.set_num_threads(torch_threads)
    # Also in each sampling thread, in case the intra-op setting is per thread (OpenMP).
    pool = WorkPool(settings.worker_threads, settings.max_queue,
                    initializer=lambda: torch.set_num_threads(torch_threads))
    app.state.metrics.add_models(list(models))
    app.state.service = Service(models, loaded.default, pool, heavy_atoms)
    log.info(
        "loaded %s in %.2f s (default %s); %d sampling threads x %d torch threads, queue %d; "
        "SMILES of up to %d heavy atoms",
        ", ".join(f"{name} ({m.info.config}, step {m.info.step})" for name, m in models.items()),
        time.perf_counter() - started, loaded.default,
        settings.worker_threads, torch_threads, settings.max_queue, heavy_atoms,
    )
    try:
        yield
    finally:
        app.state.service = None
        pool.shutdown()
        torch.set_num_threads(previous_threads)


class QuietStartupFailure:
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
