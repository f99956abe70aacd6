"""Service settings, read from ``MOLGAN_*`` environment variables (or passed in directly).

    MOLGAN_MODELS=/models MOLGAN_DEFAULT_MODEL=qm9 MOLGAN_MAX_MOLECULES=500 molgan serve

The checkpoints come only from here: requests choose among them by name, never by a path.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from molgan.device import check_device_name
from molgan.sampling_settings import SamplingMode, check_min_p, check_temperature


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers' cpusets narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOLGAN_", extra="ignore", frozen=True)

    checkpoint: Path | None = None
    """One checkpoint to serve (``molgan serve --checkpoint``); see ``models`` for several."""
    models: str | None = None
    """Checkpoints to serve: a folder (every ``*.safetensors`` in it) or a comma-separated list of
    files, each named by its file's stem (``api.catalog``). With neither this nor ``checkpoint``:
    every model bundled with the package."""
    default_model: str | None = None
    """The model of requests that name none; ``None``: ``qm9`` if served, else the first."""
    device: Annotated[str, AfterValidator(check_device_name)] = "cpu"
    """Where the generator runs (``molgan.device``): on the CPU a seed gives the same molecules
    on every machine."""
    mode: SamplingMode | None = None
    temperature: Annotated[float, AfterValidator(check_temperature)] | None = None
    min_p: Annotated[float, AfterValidator(check_min_p)] | None = None
    """Default sampling of this server (``None``: the checkpoint's), for requests that do not
    say; resolved over the checkpoint's defaults as a request is (``MoleculeSampler.with_defaults``)."""
    max_molecules: int = Field(1000, ge=1, le=100_000)
    """Largest ``n`` one ``POST /v1/generate`` may ask for."""
    request_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Longest a request waits for its molecules, queueing included; then 504."""
    worker_threads: int = Field(default_factory=lambda: min(4, available_cpus()), ge=1, le=64)
    """Threads that sample (per server process)."""
    torch_threads: int | None = Field(None, ge=1, le=256)
    """Intra-op threads of torch; ``None``: the CPU count divided among the worker threads."""
    max_queue: int = Field(32, ge=0, le=10_000)
    """Requests that may wait for a free worker thread; more are answered 503 with Retry-After.
    Fewer may wait: a request that the pool estimates would not finish within
    ``request_timeout_s`` is refused at once the same way (``api.pool``)."""
    retry_after_s: int = Field(1, ge=1, le=3600)
    """The Retry-After value (seconds) of 503 answers; the least one when it is estimated."""
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Larger request bodies are refused with 413."""
    max_heavy_atoms: int | None = Field(None, ge=1, le=1000)
    """Heavy atoms a SMILES sent to ``POST /v1/export`` or ``GET /v1/depict`` may have (a 422
    beyond), which bounds the work each one costs; ``None``: ``HEAVY_ATOM_MARGIN`` times the
    largest ``max_atoms`` of the served models."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the API from a browser (comma-separated in the environment);
    empty: same origin only."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def effective_torch_threads(self) -> int:
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, available_cpus() // self.worker_threads)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once; ``get_settings.cache_clear()`` re-reads them."""
    return Settings()
