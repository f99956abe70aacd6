"""Pictures of a run: training curves and a grid of sampled molecules, written beside the metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The object API draws straight to files: no pyplot state, no display backend.
from matplotlib.figure import Figure

from molgan.draw import grid_png
from molgan.sampling import MoleculeSampler
from molgan.training.run_dir import RunDir


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, evaluation records) from a run's ``metrics.jsonl``.

    Records from before a resume can repeat steps; the later record wins.
    """
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "eval" in record:
            evals[record["step"]] = {"step": record["step"], **record["eval"]}
        else:
            train[record["step"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def evaluations_in_time(path: Path) -> list[dict[str, float]]:
    """Every evaluation in a run's ``metrics.jsonl`` with the minutes of training logged at or
    before its step (evaluations included): step, minutes, Gumbel-Max validity and uniqueness.
    An evaluation before any logged time is left out."""
    train, evals = read_metrics(path)
    minutes_at = {r["step"]: r["elapsed_s"] / 60 for r in train if "elapsed_s" in r}
    rows = []
    for e in evals:
        logged = [s for s in minutes_at if s <= e["step"]]
        if logged:
            rows.append({"step": e["step"], "minutes": minutes_at[max(logged)],
                         "validity": e["gumbel_validity"], "uniqueness": e["gumbel_uniqueness"]})
    return rows


def plot_curves(metrics_path: Path, out: Path) -> Path:
    train, evals = read_metrics(metrics_path)
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = [
        (axes[0, 0], train, ("d_loss", "g_loss"), "losses"),
        (axes[0, 1], train, ("w_distance", "gp"), "critic"),
        (axes[1, 0], train, ("reward", "batch_valid", "tau"), "reward, batch validity, temperature"),
        (axes[1, 1], evals, ("validity", "uniqueness", "novelty", "score"), "evaluation"),
    ]
    for ax, records, keys, title in panels:
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=key)
        ax.set_title(title)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.savefig(out, dpi=100)
    return out


def write_report(run_dir: Path, n_molecules: int = 32, seed: int = 0) -> list[Path]:
    """Write ``curves.png`` and ``molecules.png`` (samples of the best checkpoint) into ``run_dir``."""
    run = RunDir(run_dir)
    written = []
    if run.metrics.is_file():
        written.append(plot_curves(run.metrics, run.curves))
    checkpoint = run.best_or_last()
    if checkpoint is not None:
        samples = MoleculeSampler.load(checkpoint).sample(n_molecules, seed=seed)
        # Cells show their SMILES; graphs that do not sanitize are empty cells marked "invalid".
        written.append(grid_png([s.smiles for s in samples], run.molecules))
    return written
