"""Choose a conditional run's generator snapshot and sampling settings on the grid of targets.

    python scripts/select_conditional.py runs/qm9-cond [--samples 500] [--seed 1]
        [--temperatures 0.8,1.0] [--min-ps 0,0.1] [--from-step S] [--every K] [--out scores.jsonl]

Scores every snapshot of the run (``train.keep_snapshots``) at each Gumbel-Max setting with
``molgan.target_evaluation.evaluate_targets`` (no baseline: the ratio to it does not depend on
the snapshot's choice of molecules for other targets) and prints, best first, the settings by the
number of bars they miss (``missed_bars``), then by the mean of each MAE over its bar. Seed 1, so
that the headline evaluation (``molgan evaluate --targets``, seed 0) is made on other samples.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings
from molgan.target_evaluation import BARS, evaluate_targets, missed_bars
from molgan.training.run_dir import RunDir


def mean_relative_mae(report: dict[str, Any]) -> float:
    """The MAE of every set condition at every target over its bar, averaged (lower is better)."""
    ratios = [row[name]["mae"] / BARS[f"mae_{name}"] for row in report["rows"] for name in row["targets"]
              if row[name]["mae"] is not None and f"mae_{name}" in BARS]
    return sum(ratios) / len(ratios) if ratios else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--temperatures", default="0.8,1.0")
    parser.add_argument("--min-ps", default="0,0.1")
    parser.add_argument("--from-step", type=int, default=0)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    snapshots = [(step, path) for step, path in RunDir(args.run).snapshots(args.from_step)
                 if step % args.every == 0]
    if not snapshots:
        parser.error(f"no snapshots from step {args.from_step} in {args.run}")
    grid = list(itertools.product([float(t) for t in args.temperatures.split(",")],
                                  [float(p) for p in args.min_ps.split(",")]))
    rows = []
    for (step, path), (temperature, min_p) in tqdm(list(itertools.product(snapshots, grid))):
        sampler = MoleculeSampler.load(path)
        report = evaluate_targets(sampler, None, args.samples, seed=args.seed,
                                  settings=SamplingSettings("gumbel", temperature, min_p))
        rows.append({"snapshot": str(path), "step": step, "temperature": temperature,
                     "min_p": min_p, "missed": missed_bars(report), "relative_mae": mean_relative_mae(report),
                     "min_validity": min(r["validity"] for r in report["rows"]),
                     "min_uniqueness": min(r["uniqueness"] for r in report["rows"]),
                     "spearman": report["spearman"]})
    rows.sort(key=lambda r: (len(r["missed"]), r["relative_mae"]))
    if args.out is not None:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
