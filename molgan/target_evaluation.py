"""How well a conditional model hits the property values it is asked for (`molgan evaluate --targets`).

The grid asks for each condition alone at the training data's ``GRID_PERCENTILES`` (the others
unset), and, with two or more conditions, for the first two together at (25th, 75th) and (75th,
25th) percentiles. At each target, ``n`` raw samples (no correction, the model's own sampling
settings unless given) are scored:

- validity and uniqueness as ``molgan.metrics`` defines them;
- per condition set: the mean and spread of the achieved value over valid samples, the mean
  absolute error to the target, and the share of *all* samples that are valid and within the
  tolerance (``molgan.conditions.TOLERANCES``: logP +-0.25, QED +-0.03);
- the same achieved-value figures for a baseline (an unconditional model, by default the bundled
  ``qm9``): what a user would get by sampling at random and filtering.

Plus, per condition, the Spearman correlation of target and achieved value over the valid samples
of its five single-condition targets (``spearman``), and over the five targets and the mean values
achieved at them (``spearman_of_means``: 1 when the means rise with the targets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from molgan.conditions import GRID_PERCENTILES, TOLERANCES, ConditionSet, property_values
from molgan.metrics import evaluate_smiles
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings

BARS: dict[str, float] = {"validity": 0.95, "uniqueness": 0.70, "mae_logp": 0.35, "mae_qed": 0.05,
                          "spearman": 0.9, "within_ratio": 2.5}
"""What a bundled conditional model must reach: validity and uniqueness at every target, the MAE
of each property at every target it is set in, the Spearman correlation of each condition, and
at its 10th and 90th percentile targets the share within tolerance over the baseline's."""


def missed_bars(report: Mapping[str, Any]) -> list[str]:
    """The ``BARS`` an ``evaluate_targets`` report misses, each as a short phrase (empty: none).
    The within-tolerance ratio is checked where the report has a baseline."""
    missed = []
    for row in report["rows"]:
        for key in ("validity", "uniqueness"):
            if row[key] < BARS[key]:
                missed.append(f"{row['target']}: {key} {row[key]:.1%}")
        for name in row["targets"]:
            mae, bar = row[name]["mae"], BARS.get(f"mae_{name}")
            if bar is not None and (mae is None or mae > bar):
                missed.append(f"{row['target']}: MAE of {name} {mae}")
            base = row.get(f"baseline_{name}")
            if base is not None and len(row["targets"]) == 1 and row["target"].endswith(("p10", "p90")):
                ratio = row[name]["within"] / max(base["within"], 1e-9)
                if ratio < BARS["within_ratio"]:
                    missed.append(f"{row['target']}: within tolerance {ratio:.2f}x the baseline's")
    for name, rho in report["spearman"].items():
        if rho is None or rho < BARS["spearman"]:
            missed.append(f"Spearman of {name} {rho}")
    return missed


@dataclass(frozen=True)
class GridTarget:
    label: str
    """e.g. ``logp p10`` or ``logp p25 + qed p75``."""
    targets: dict[str, float]


def target_grid(conditions: ConditionSet) -> list[GridTarget]:
    """The targets of the evaluation (module docstring), in order."""
    grid = [
        GridTarget(f"{c.name} p{p}", {c.name: c.percentiles[p]})
        for c in conditions.conditions for p in GRID_PERCENTILES
    ]
    if len(conditions) >= 2:
        a, b = conditions.conditions[:2]
        for pa, pb in ((25, 75), (75, 25)):
            grid.append(GridTarget(f"{a.name} p{pa} + {b.name} p{pb}",
                                   {a.name: a.percentiles[pa], b.name: b.percentiles[pb]}))
    return grid


def achieved_figures(
    values: np.ndarray, target: float, tolerance: float, n: int
) -> dict[str, float | None]:
    """Figures of the achieved values of the valid samples (NaN for invalid ones) against one
    target, ``n`` samples in all: mean, std, MAE (``None`` without a valid sample) and the share
    of the ``n`` samples within ``tolerance``."""
    valid = values[~np.isnan(values)]
    if len(valid) == 0:
        return {"mean": None, "std": None, "mae": None, "within": 0.0}
    gaps = np.abs(valid - target)
    return {"mean": float(valid.mean()), "std": float(valid.std()), "mae": float(gaps.mean()),
            "within": float((gaps <= tolerance).sum() / n)}


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their average rank); ``None`` when either is
    constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inverse]


def evaluate_targets(
    sampler: MoleculeSampler,
    baseline: MoleculeSampler | None = None,
    n: int = 2000,
    *,
    seed: int = 0,
    settings: SamplingSettings | None = None,
    train_smiles: set[str] | None = None,
) -> dict[str, Any]:
    """The grid's rows (one per target) and the Spearman correlation per condition. ``settings``
    (``None``: the model's defaults) apply to ``sampler``; the baseline samples at its own
    defaults, once (it does not see the targets). ``train_smiles`` gives novelty."""
    if sampler.conditions is None:
        raise ValueError("the model is not conditional: it has no targets to evaluate")
    conditions = sampler.conditions
    names = conditions.names
    base_values = None
    if baseline is not None:
        base_smiles = [s.smiles if s.valid else None for s in baseline.sample(n, seed=seed)]
        base_values = property_values(base_smiles, names)
    rows: list[dict[str, Any]] = []
    pairs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    means: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    for point in target_grid(conditions):
        samples = sampler.sample(n, seed=seed, settings=settings, targets=point.targets)
        smiles = [s.smiles for s in samples]
        values = property_values([s.smiles if s.valid else None for s in samples], names)
        metrics = evaluate_smiles(smiles, train_smiles or set()).to_dict()
        row: dict[str, Any] = {"target": point.label, "targets": point.targets,
                               "validity": metrics["validity"], "uniqueness": metrics["uniqueness"]}
        if train_smiles is not None:
            row["novelty"] = metrics["novelty"]
        for name, target in point.targets.items():
            i = names.index(name)
            row[name] = achieved_figures(values[:, i], target, TOLERANCES[name], n)
            if base_values is not None:
                row[f"baseline_{name}"] = achieved_figures(base_values[:, i], target, TOLERANCES[name], n)
            if len(point.targets) == 1:
                kept = values[:, i][~np.isnan(values[:, i])]
                pairs[name][0].extend([target] * len(kept))
                pairs[name][1].extend(kept.tolist())
                if len(kept):
                    means[name][0].append(target)
                    means[name][1].append(float(kept.mean()))
        rows.append(row)
    return {"n": n, "seed": seed, "rows": rows,
            "spearman": {name: spearman(*pairs[name]) for name in names},
            "spearman_of_means": {name: spearman(*means[name]) for name in names}}


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table of ``evaluate_targets``'s result."""
    lines = [f"{'target':<24} {'valid':>6} {'unique':>6}  per condition: target -> mean (std), MAE, "
             "within tolerance [baseline within]"]
    for row in report["rows"]:
        parts = []
        for name, target in row["targets"].items():
            f = row[name]
            base = row.get(f"baseline_{name}")
            extra = f" [{base['within']:.1%}]" if base else ""
            parts.append(f"{name} {target:.3f} -> {_num(f['mean'])} ({_num(f['std'])}), "
                         f"MAE {_num(f['mae'])}, {f['within']:.1%}{extra}")
        lines.append(f"{row['target']:<24} {row['validity']:>6.1%} {row['uniqueness']:>6.1%}  "
                     + "; ".join(parts))
    lines.append("Spearman (target, achieved) over the samples: "
                 + ", ".join(f"{k} {_num(v)}" for k, v in report["spearman"].items())
                 + "; over the targets' means: "
                 + ", ".join(f"{k} {_num(v)}" for k, v in report["spearman_of_means"].items()))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
