"""Conditions of a conditional generator: the molecular properties a user can ask a value of.

A conditional model (``model.conditions``, e.g. ``[logp, qed]``) takes, beside its noise, one
target per condition. Targets travel through the models *standardised* with the training split's
mean and spread, which the checkpoint stores (``ConditionSet``), as a tensor (B, C) in which NaN
means "unset": the model then draws that property as the data would, given the others (it was
trained with each condition dropped at random, ``train.condition_dropout``). The networks read a
condition tensor through ``condition_features``: its values with NaN as 0, and a flag per value.

Properties (``PROPERTIES``) are those of ``molgan.metrics.mol_properties``: Crippen logP, QED, the
SA score and molecular weight. Those of a dataset's molecules are computed once and cached beside
its featurized graphs (``dataset_properties``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from molgan.chem import is_valid_mol, sanitized_mol
from molgan.files import atomic_write
from molgan.metrics import PROPERTY_FUNCTIONS, mol_properties

PROPERTIES = ("logp", "qed", "sa", "mol_weight")
"""What a model can be conditioned on (the names of ``molgan.metrics.mol_properties``)."""

TOLERANCES: dict[str, float] = {"logp": 0.25, "qed": 0.03, "sa": 0.25, "mol_weight": 5.0}
"""How close an achieved value must be to its target to count as a hit in the evaluation."""

GRID_PERCENTILES = (10, 25, 50, 75, 90)
"""The training data's percentiles the evaluation asks each condition for."""

RANGE_PERCENTILES = (0.5, 99.5)
"""A target must lie within these percentiles of the training data, widened by ``RANGE_MARGIN``
of their span on each side: beyond, the model never saw such a molecule."""
RANGE_MARGIN = 0.05


class TargetError(ValueError):
    """A target the model cannot take; ``field`` names it (``targets.logp``, or ``targets``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Condition:
    """One property a model is conditioned on, with its training split's statistics."""

    name: str
    mean: float
    std: float
    low: float
    """Lowest target the model takes."""
    high: float
    """Highest target the model takes."""
    percentiles: dict[int, float]
    """The training split's ``GRID_PERCENTILES``."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std, "low": self.low,
                "high": self.high, "percentiles": {str(k): v for k, v in self.percentiles.items()},
                "tolerance": TOLERANCES[self.name]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        return cls(str(d["name"]), float(d["mean"]), float(d["std"]), float(d["low"]),
                   float(d["high"]), {int(k): float(v) for k, v in d["percentiles"].items()})


@dataclass(frozen=True)
class ConditionSet:
    """The conditions of one model, in the order of its condition tensors (B, C)."""

    conditions: tuple[Condition, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions)

    def __len__(self) -> int:
        return len(self.conditions)

    def __getitem__(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(name)

    @classmethod
    def from_values(cls, names: Sequence[str], values: np.ndarray) -> ConditionSet:
        """Statistics of the training split's property values (M, C), in the order of ``names``;
        rows with a NaN (a molecule without a value) are left out."""
        rows = values[~np.isnan(values).any(axis=1)]
        if len(rows) < 2:
            raise ValueError("conditions need property values of at least two training molecules")
        out = []
        for i, name in enumerate(names):
            column = rows[:, i]
            lo, hi = np.percentile(column, RANGE_PERCENTILES)
            margin = RANGE_MARGIN * (hi - lo)
            out.append(Condition(
                name, float(column.mean()), float(max(column.std(), 1e-8)), float(lo - margin),
                float(hi + margin), {p: float(np.percentile(column, p)) for p in GRID_PERCENTILES},
            ))
        return cls(tuple(out))

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-safe form, as checkpoints store it (``meta["conditions"]``)."""
        return [c.to_dict() for c in self.conditions]

    @classmethod
    def from_list(cls, items: Sequence[Mapping[str, Any]]) -> ConditionSet:
        return cls(tuple(Condition.from_dict(d) for d in items))

    def check(self, targets: Mapping[str, Any]) -> dict[str, float]:
        """``targets`` as floats, each named by a condition and within its range; TargetError
        naming the first that is not."""
        out: dict[str, float] = {}
        for name, value in targets.items():
            field = f"targets.{name}"
            if name not in self.names:
                known = ", ".join(self.names)
                raise TargetError(field, f"this model is conditioned on {known}, not {name!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TargetError(field, f"must be a number, got {value!r}") from None
            c = self[name]
            if not math.isfinite(number) or not c.low <= number <= c.high:
                raise TargetError(field, f"must be within [{c.low:.3g}, {c.high:.3g}] (the "
                                  f"training data's range), got {value!r}")
            out[name] = number
        return out

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        """Raw property values (..., C) -> standardised (NaN stays NaN)."""
        mean = values.new_tensor([c.mean for c in self.conditions])
        std = values.new_tensor([c.std for c in self.conditions])
        return (values - mean) / std

    def encode(self, targets: Mapping[str, Any], batch: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """The condition tensor (B, C) of ``batch`` graphs that all ask for ``targets`` (checked
        by ``check``), standardised, NaN where a condition is unset."""
        checked = self.check(targets)
        raw = torch.tensor([checked.get(n, math.nan) for n in self.names], dtype=torch.float32)
        return self.standardise(raw).to(device).expand(batch, -1).clone()


def no_targets(targets: Mapping[str, Any] | None) -> None:
    """For a model without conditions: TargetError when ``targets`` asks for anything."""
    if targets:
        name = next(iter(targets))
        raise TargetError(f"targets.{name}", "this model is not conditional: it takes no targets")


def condition_features(conditions: torch.Tensor) -> torch.Tensor:
    """What a network reads of a condition tensor (B, C): ``[values, is_set]`` (B, 2C), with an
    unset (NaN) value as 0 and its flag 0."""
    is_set = ~torch.isnan(conditions)
    return torch.cat([torch.nan_to_num(conditions, nan=0.0), is_set.to(conditions.dtype)], dim=-1)


def closeness(achieved: torch.Tensor, targets: torch.Tensor, width: float | torch.Tensor) -> torch.Tensor:
    """How near each graph came to its targets, (B,) in [0, 1]: ``exp(-d^2 / 2)`` with ``d`` the
    distance over the set conditions in standardised units, each divided by its ``width`` (one
    number, or (C,) one per condition); 1 with no condition set, 0 where a target is set and the
    graph has no value (not a molecule).

    achieved, targets: (B, C), standardised, NaN for "no value" / "unset".
    """
    is_set = ~torch.isnan(targets)
    gap = torch.where(is_set, (achieved - targets) / width, torch.zeros_like(targets))
    gap = torch.nan_to_num(gap, nan=math.inf)  # a set target that the graph has no value for
    return torch.exp(-0.5 * gap.pow(2).sum(-1))


def quantile_edges(values: torch.Tensor, bins: int, offset: float = 0.0) -> torch.Tensor:
    """(C, K) the inner edges of ``bins`` equally populated bins of each column of ``values``
    (M, C), NaN left out: what ``target_labels`` sorts targets by. ``offset`` in [0, 1) shifts
    the edges by that share of a bin (K = bins - 1 without, bins with: the end bins are then
    partial), so that a second grid's bins are centred on the first grid's edges."""
    levels = [(i + offset) / bins for i in range(bins) if 0.0 < (i + offset) / bins < 1.0]
    q = torch.tensor(levels, dtype=values.dtype, device=values.device)
    return torch.stack([torch.nanquantile(values[:, i], q) for i in range(values.shape[1])])


def target_labels(targets: torch.Tensor, edges: torch.Tensor, names: Sequence[str]) -> list[tuple[str, ...]]:
    """For each of B graphs, which bin its target of each condition lies in: ``"logp:0"`` (the
    lowest) ... or ``"logp:unset"``, one label per condition. targets (B, C) and the ``edges``
    (C, K) of ``quantile_edges``, in the same (standardised) units."""
    columns = []
    for i, name in enumerate(names):
        target = targets[:, i].contiguous()
        bins = torch.searchsorted(edges[i].to(target), target).tolist()
        unset = torch.isnan(target).tolist()
        columns.append([f"{name}:unset" if u else f"{name}:{b}" for b, u in zip(bins, unset, strict=True)])
    return list(zip(*columns, strict=True))


@functools.lru_cache(maxsize=1 << 12)
def _valid_mol(smiles: str) -> Chem.Mol | None:
    mol = sanitized_mol(smiles)
    return mol if mol is not None and is_valid_mol(mol) else None


@functools.lru_cache(maxsize=1 << 17)
def _value(name: str, smiles: str) -> float:
    # Training scores the same molecules again and again: each (property, SMILES) once.
    mol = _valid_mol(smiles)
    return math.nan if mol is None else PROPERTY_FUNCTIONS[name](mol)


def property_values(smiles: Sequence[str | None], names: Sequence[str]) -> np.ndarray:
    """(M, C) float64 values of ``names`` for each SMILES; NaN rows for what is not a strictly
    valid molecule. Each value is computed once per SMILES (least recently used cache)."""
    out = np.full((len(smiles), len(names)), np.nan)
    for i, s in enumerate(smiles):
        if s is not None:
            out[i] = [_value(name, s) for name in names]
    return out


def _all_properties(smiles: Sequence[str]) -> np.ndarray:
    rows = []
    for s in smiles:
        mol = _valid_mol.__wrapped__(s)  # each dataset molecule once: no need to cache
        props = mol_properties(mol) if mol is not None else {}
        rows.append([props.get(name, math.nan) for name in PROPERTIES])
    return np.array(rows, dtype=float).reshape(len(smiles), len(PROPERTIES))


def _save(path: Path, table: np.ndarray) -> None:
    with path.open("wb") as fh:  # a file object: np.save would add ".npy" to a path
        np.save(fh, table, allow_pickle=False)


def dataset_properties(smiles: Sequence[str], names: Sequence[str], cache_dir: Path | None = None,
                       workers: int = 2) -> np.ndarray:
    """(M, C) values of ``names`` for a dataset's molecules (canonical SMILES), computed once
    for all of ``PROPERTIES`` and cached under ``cache_dir`` (default: the featurized data's,
    ``molgan.data.default_cache_dir``), keyed by the molecules themselves."""
    from molgan.data import default_cache_dir

    digest = hashlib.sha256("\n".join(smiles).encode()).hexdigest()[:32]
    file = (cache_dir or default_cache_dir()) / f"{digest}.properties.npy"
    table = None
    if file.is_file():
        try:
            table = np.load(file, allow_pickle=False)
            if table.shape != (len(smiles), len(PROPERTIES)):
                table = None
        except (OSError, ValueError):
            table = None
    if table is None:
        chunks = [smiles[i:i + 4096] for i in range(0, len(smiles), 4096)]
        if workers > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(workers) as pool:
                parts = list(pool.map(_all_properties, chunks))
        else:
            parts = [_all_properties(c) for c in chunks]
        table = np.concatenate(parts) if parts else np.zeros((0, len(PROPERTIES)))
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(file, lambda tmp: _save(tmp, table))
        except OSError:
            pass  # a read-only cache must not stop training
    return table[:, [PROPERTIES.index(n) for n in names]]
