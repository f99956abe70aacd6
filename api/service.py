"""The loaded model and the pool that samples from it, set up once by the app's lifespan.

The lifespan reads the app's settings from ``app.state.settings`` and leaves the ``Service`` in
``app.state.service`` (``None`` until it is loaded and after shut-down); route handlers get it
through ``api.deps``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molgan.api.pool import WorkPool
from molgan.api.schemas import Limits, ModelInfo, ModelSummary, json_safe
from molgan.api.settings import Settings
from molgan.checkpoint import CheckpointError, bundled_checkpoint_path
from molgan.device import DeviceError
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingError

log = logging.getLogger("molgan.api")


@dataclass
class Service:
    """What the lifespan sets up: the loaded model and the pool that samples from it."""

    sampler: MoleculeSampler
    pool: WorkPool
    summary: ModelSummary
    info: ModelInfo


def model_info(sampler: MoleculeSampler, checkpoint: Path, settings: Settings) -> ModelInfo:
    """What ``GET /v1/model`` answers. The checkpoint is named by its file name and sha256 only:
    the directory it lies in is the server's business."""
    meta = sampler.describe()
    return ModelInfo(
        name=meta["name"],
        step=meta["step"],
        checkpoint=checkpoint.name,
        sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        vocab=meta["vocab"],
        sampling=meta["sampling"],
        z_dim=meta["z_dim"],
        metrics=json_safe(meta["metrics"]),  # an evaluation may have saved NaN
        versions={str(k): str(v) for k, v in meta["versions"].items()},
        limits=Limits(
            max_molecules=settings.max_molecules,
            max_body_bytes=settings.max_body_bytes,
            request_timeout_s=settings.request_timeout_s,
        ),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the checkpoint of ``app.state.settings`` and start the sampling pool; stop it at the end.

    A checkpoint that cannot be loaded, or default sampling settings that do not resolve over its
    own, are logged as one line and stop start-up; either also sets
    ``app.state.checkpoint_failed`` so that ``QuietStartupFailure`` keeps the server from
    repeating the error as a traceback.
    """
    settings: Settings = app.state.settings
    checkpoint = settings.checkpoint if settings.checkpoint is not None else bundled_checkpoint_path()
    started = time.perf_counter()
    try:
        sampler = MoleculeSampler.load(checkpoint, device=settings.device).with_defaults(
            settings.mode, settings.temperature, settings.min_p
        )
    except (CheckpointError, SamplingError, DeviceError) as exc:
        app.state.checkpoint_failed = True
        log.error("cannot start: %s", exc)
        raise
    previous_threads = torch.get_num_threads()
    torch_threads = settings.effective_torch_threads()
    torch.set_num_threads(torch_threads)
    # Also in each sampling thread, in case the intra-op setting is per thread (OpenMP).
    pool = WorkPool(settings.worker_threads, settings.max_queue,
                    initializer=lambda: torch.set_num_threads(torch_threads))
    info = model_info(sampler, checkpoint, settings)
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
