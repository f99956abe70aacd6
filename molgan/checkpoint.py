"""Checkpoints: one safetensors file holding weights, optimiser and RNG state, plus JSON metadata.

safetensors stores only tensors and a string-to-string header, so loading a checkpoint never
runs code from the file. The metadata (config, vocabulary, step, metrics, package versions) is
enough to rebuild the generator without any other file.

Tensor names: ``<module>.<parameter>`` for modules, ``optim.<name>.<param index>.<key>`` for
optimiser state, ``rng.<name>`` for random generator states.

Checkpoints do not depend on a device: tensors are written from the CPU and read onto any device
(``load_checkpoint``'s ``map_location``), so a model trained on a GPU samples on a CPU-only server
and the other way round. Random generator states are the exception: they are CPU byte tensors
whose layout depends on the kind of device that made them (the trainer records which).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from molgan.files import atomic_write

FORMAT = "molgan-checkpoint"
FORMAT_VERSION = 1
DEFAULT_MODEL = "qm9"
BUNDLED_NAME = f"{DEFAULT_MODEL}.safetensors"
_ASSETS = Path(__file__).resolve().parent / "assets"


class CheckpointError(ValueError):
    """A file that is not a usable molgan checkpoint (missing, corrupted, or for another model)."""


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes, in name order: what a checkpoint's
    metadata records of its tensors (``tensors_sha256``), so that a damaged file is refused."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """What a checkpoint file holds: tensors by name and the JSON metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path | None = None

    def state_dict(self, module: str) -> dict[str, torch.Tensor]:
        """The tensors saved for ``module`` (prefix stripped)."""
        prefix = f"{module}."
        state = {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{self._where()} holds no weights for {module!r}")
        return state

    def has(self, module: str) -> bool:
        prefix = f"{module}."
        return any(k.startswith(prefix) for k in self.tensors)

    def optimizer_state(self, name: str) -> dict[str, Any]:
        groups = self.meta.get("optimizers", {}).get(name)
        if groups is None:
            raise CheckpointError(f"{self._where()} holds no optimiser state for {name!r}")
        prefix = f"optim.{name}."
        state: dict[int, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            if key.startswith(prefix):
                index, _, slot = key[len(prefix) :].partition(".")
                state.setdefault(int(index), {})[slot] = value
        return {"state": state, "param_groups": groups}

    def rng_state(self, name: str) -> torch.Tensor:
        key = f"rng.{name}"
        if key not in self.tensors:
            raise CheckpointError(f"{self._where()} holds no random state for {name!r}")
        return self.tensors[key]

    def _where(self) -> str:
        return str(self.path) if self.path else "checkpoint"


@dataclass
class CheckpointWriter:
    """Collects modules, optimisers and RNG states, then writes them atomically."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def add_module(self, name: str, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            self.tensors[f"{name}.{key}"] = value.detach().cpu()

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        state = optimizer.state_dict()
        for index, slots in state["state"].items():
            for slot, value in slots.items():
                tensor = value if torch.is_tensor(value) else torch.tensor(value)
                self.tensors[f"optim.{name}.{index}.{slot}"] = tensor.detach().cpu()
        self.meta.setdefault("optimizers", {})[name] = state["param_groups"]

    def add_rng(self, name: str, generator: torch.Generator) -> None:
        self.tensors[f"rng.{name}"] = generator.get_state()

    def write(self, path: str | Path) -> Path:
        """Write to a temporary file beside ``path`` and rename it over ``path``.

        A reader (or a crash mid-write) sees either the old file or the new one, never half.
        """
        path = Path(path)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": package_versions()}
        meta.update(self.meta)
        # safetensors refuses shared or non-contiguous storage.
        tensors = {k: v.contiguous().clone() for k, v in self.tensors.items()}
        meta["tensors_sha256"] = tensor_digest(tensors)
        header = {"molgan": json.dumps(meta, sort_keys=True)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
        return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint, its tensors onto ``map_location`` (random generator states stay on the
    CPU, where ``torch.Generator.set_state`` wants them); any problem with the file is a
    ``CheckpointError`` that names it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"checkpoint not readable by this user (permissions): {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupted?): {exc}"
        ) from None
    try:
        meta = json.loads(header["molgan"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is a safetensors file but not a molgan checkpoint") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is a safetensors file but its molgan metadata is not a mapping")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a molgan checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('format_version')}, "
            f"this molgan reads version {FORMAT_VERSION}"
        )
    _check_tensors(path, tensors, meta)
    device = torch.device(map_location)
    if device.type != "cpu":
        tensors = {k: v if k.startswith("rng.") else v.to(device) for k, v in tensors.items()}
    return Checkpoint(tensors, meta, path)


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Refuse tensors that are not those written (checkpoints written since the digest was
    recorded), and weights that are not finite: a diverged run's generator would load and then
    sample nothing valid without a word."""
    recorded = meta.get("tensors_sha256")
    if recorded is not None and recorded != tensor_digest(tensors):
        raise CheckpointError(
            f"{path} is damaged: its tensors do not match the digest written with them"
        )
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckpointError(f"{path} holds NaN or infinite values in {bad[0]}{more}: not loaded")


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a clear error when names or shapes do not match the architecture."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(f"{what} does not match the configured architecture or vocabulary: {details}")
    module.load_state_dict(state)


def bundled_models() -> list[str]:
    """Names of the checkpoints shipped inside the package (their file names less the suffix)."""
    return sorted(path.stem for path in _ASSETS.glob("*.safetensors"))


def bundled_checkpoints() -> dict[str, Path]:
    """Every bundled model's checkpoint file, by name (sorted)."""
    return {name: _ASSETS / f"{name}.safetensors" for name in bundled_models()}


def evaluation_report(checkpoint: Path) -> dict[str, Any] | None:
    """The evaluation saved beside a checkpoint as ``<stem>.eval.json`` (what
    scripts/bundle_checkpoint.py writes next to a bundled model), or ``None`` if there is none.

    A file that is there but is not a JSON object is a ``CheckpointError`` naming it: a figure
    shown to users should not be silently dropped.
    """
    report = checkpoint.with_name(f"{checkpoint.stem}.eval.json")
    if not report.is_file():
        return None
    try:
        figures = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{report} is not a readable JSON evaluation: {exc}") from None
    if not isinstance(figures, dict):
        raise CheckpointError(f"{report} is not a JSON object of evaluation figures")
    return figures


def bundled_checkpoint_path(name: str = DEFAULT_MODEL) -> Path:
    """The checkpoint of a bundled model; CheckpointError naming the bundled ones if unknown."""
    bundled = bundled_checkpoints()
    if name not in bundled:
        raise CheckpointError(f"no bundled model named {name!r}; bundled: {', '.join(bundled)}")
    return bundled[name]


def resolve_checkpoint(model: str | Path | None) -> Path:
    """A checkpoint file from a bundled model's name or a path (``None``: the default model).

    A ``Path``, or a string that looks like a file (a folder separator or the ``.safetensors``
    suffix), is a path; any other string names a bundled model. Names never depend on what the
    working directory holds.
    """
    if model is None:
        return bundled_checkpoint_path()
    if isinstance(model, Path) or "/" in model or os.sep in model or model.endswith(".safetensors"):
        return Path(model)
    return bundled_checkpoint_path(model)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("molgan", "torch", "rdkit", "numpy"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions
