"""Starting the HTTP service from the command line's options (``molgan serve``).

The checkpoints are loaded once here, before uvicorn starts, so that a missing or broken one, a
bad setting, or default sampling that does not resolve over a checkpoint's own is one line and
a usage error, rather than each worker process failing (and being restarted) at start-up. The
options reach uvicorn's worker processes through ``MOLGAN_*`` environment variables, which every
worker reads as its ``Settings``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from molgan.api.catalog import CatalogError
from molgan.api.service import load_checkpoints
from molgan.api.settings import Settings, available_cpus, get_settings
from molgan.checkpoint import CheckpointError
from molgan.device import DeviceError, resolve_device
from molgan.errors import UsageError
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingError


def serve(
    checkpoint: Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    mode: str | None = None,
    temperature: float | None = None,
    min_p: float | None = None,
    device: str | None = None,
) -> None:
    """Check the settings and checkpoints, then serve ``molgan.api.app`` with uvicorn until
    stopped. ``UsageError`` (naming the option or ``MOLGAN_*`` variable) before uvicorn starts."""
    if checkpoint is not None:
        os.environ["MOLGAN_CHECKPOINT"] = str(checkpoint.resolve())
    if device is not None:
        try:
            resolve_device(device)
        except DeviceError as exc:
            raise UsageError(f"--device {exc}") from None
        os.environ["MOLGAN_DEVICE"] = device
    if workers > 1:
        # Processes share the CPUs: unless told otherwise, each gets its share of sampling threads
        # and torch runs single-threaded in them.
        share = max(1, min(4, available_cpus() // workers))
        os.environ.setdefault("MOLGAN_WORKER_THREADS", str(share))
        os.environ.setdefault("MOLGAN_TORCH_THREADS", "1")
    settings = _read_settings()
    try:
        samplers = load_checkpoints(settings).samplers.values()
    except DeviceError as exc:
        raise UsageError(f"MOLGAN_DEVICE {exc}") from None
    except (CatalogError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    _set_default_sampling(samplers, settings, mode, temperature, min_p)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["molgan"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        "molgan.api.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_config=log_config, timeout_graceful_shutdown=3,
    )


def _read_settings() -> Settings:
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MOLGAN_{str(error['loc'][0]).upper()}: {error['msg']}" for error in exc.errors()
        )
        raise UsageError(f"invalid setting {problems}") from None


def _set_default_sampling(
    samplers: Iterable[MoleculeSampler],
    settings: Settings,
    mode: str | None,
    temperature: float | None,
    min_p: float | None,
) -> None:
    """The server's default sampling: the options, if any is given, replace the environment's
    ``MOLGAN_MODE/TEMPERATURE/MIN_P`` as a whole (and so reach every worker); either must
    resolve over every checkpoint's own defaults."""
    options = {"mode": mode, "temperature": temperature, "min_p": min_p}
    given = any(value is not None for value in options.values())
    try:
        for sampler in samplers:
            if given:
                sampler.settings(mode, temperature, min_p)
            else:
                sampler.with_defaults(settings.mode, settings.temperature, settings.min_p)
    except SamplingError as exc:
        raise UsageError(exc.option if given else f"MOLGAN_{exc.field.upper()} {exc.problem}") from None
    if not given:
        return
    for name, value in options.items():
        os.environ.pop(f"MOLGAN_{name.upper()}", None)
        if value is not None:
            os.environ[f"MOLGAN_{name.upper()}"] = str(value)
    get_settings.cache_clear()
