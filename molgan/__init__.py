"""molgan: a MolGAN-style generator of small molecular graphs.

    import molgan

    model = molgan.load("qm9")
    molecules = model.generate(10, seed=1, min_p=0.1, properties=True)
    molgan.evaluate([m.smiles for m in molecules])

The names below are the public Python interface (``molgan.interface``). They are imported on
first use, so that ``import molgan.config`` and the command line's start stay free of torch and
RDKit until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molgan.checkpoint import CheckpointError, bundled_models
    from molgan.interface import Model, evaluate, load
    from molgan.sampling import Sample
    from molgan.sampling_settings import SamplingError, SamplingSettings

_EXPORTS = {
    "load": "molgan.interface",
    "evaluate": "molgan.interface",
    "Model": "molgan.interface",
    "Sample": "molgan.sampling",
    "SamplingSettings": "molgan.sampling_settings",
    "SamplingError": "molgan.sampling_settings",
    "CheckpointError": "molgan.checkpoint",
    "bundled_models": "molgan.checkpoint",
}

__all__ = [
    "CheckpointError",
    "Model",
    "Sample",
    "SamplingError",
    "SamplingSettings",
    "bundled_models",
    "evaluate",
    "load",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'molgan' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
