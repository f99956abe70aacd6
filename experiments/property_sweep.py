"""The trade-off of a property objective: its score against uniqueness, over the property's weight.

    python experiments/property_sweep.py --objective qed --weights 1,2,4 --minutes 15 --out runs/sweep-qed
    python experiments/property_sweep.py --tabulate runs/sweep-qed        # table and plot again

For each weight w, trains ``--config`` (default ``configs/qm9.yaml``) with ``molgan train``, the
reward ``{validity: 1, uniqueness: 1, OBJECTIVE: w}`` combined by ``--combine`` (default
``product``) and the generator started from ``--init`` (default the bundled ``qm9``; ``none`` to
start afresh); further ``--set`` options go to every run. Then scores 10,000 raw samples of each
run's last generator at its own sampling settings (seed 0) with the paper's objectives
(:mod:`molgan.objectives`) and writes ``sweep.jsonl``, ``sweep.md`` and ``sweep.png`` (the
normalized score against uniqueness, one point per weight) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from molgan.evaluation import evaluate_sampler
from molgan.objectives import OBJECTIVES
from molgan.sampling import MoleculeSampler
from molgan.training.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
# MolGAN's own rows on QM9 in its paper's Table 2 (De Cao & Kipf 2018): the objective's normalized
# score and the share of unique molecules, marked on the plot as the point to beat.
PAPER = {"qed": (0.62, 0.022), "sa": (0.95, 0.021), "logp": (0.89, 0.020)}


def train(config: Path, run_dir: Path, objective: str, weight: float, args: argparse.Namespace) -> None:
    overrides = [f"reward.weights={{validity: 1.0, uniqueness: 1.0, {objective}: {weight}}}",
                 f"reward.combine={args.combine}", *args.overrides]
    if args.minutes is not None:
        overrides += [f"train.max_minutes={args.minutes}", "train.steps=1000000"]
    if args.init != "none":
        overrides.append(f"train.init_generator={args.init}")
    command = [sys.executable, "-m", "molgan", "train", "--config", str(config), "--run-dir", str(run_dir)]
    for override in overrides:
        command += ["--set", override]
    subprocess.run(command, check=True)


def score(run_dir: Path, objective: str, weight: float, samples: int) -> dict[str, Any]:
    sampler = MoleculeSampler.load(RunDir(run_dir).last)
    metrics = evaluate_sampler(sampler, samples, seed=0, objectives=True)
    return {"run": run_dir.name, "objective": objective, "weight": weight, **metrics}


def tabulate(rows: list[dict[str, Any]]) -> str:
    objective = rows[0]["objective"]
    rule = rows[0][f"{objective}_hit_rule"]
    lines = [f"| weight of {objective} | steps | validity | uniqueness | novelty | {objective} "
             f"(normalized) | mean {objective} of valid | hits per 10,000 ({rule}) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["weight"]):
        lines.append(f"| {r['weight']:g} | {r['step']:,} | {r['validity']:.1%} | {r['uniqueness']:.1%} | "
                     f"{r['novelty']:.1%} | {r[f'{objective}_normalized']:.3f} | "
                     f"{r[f'{objective}_valid_mean']:.3f} | {r[f'{objective}_hits']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    objective = rows[0]["objective"]
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    ordered = sorted(rows, key=lambda r: r["weight"])
    xs = [r["uniqueness"] for r in ordered]
    ys = [r[f"{objective}_normalized"] for r in ordered]
    ax.plot(xs, ys, "o-", label="molgan, by the property's weight")
    paper_score, paper_unique = PAPER[objective]
    ax.plot([paper_unique], [paper_score], "r*", markersize=12, label="MolGAN paper (Table 2)")
    for r, x, y in zip(ordered, xs, ys, strict=True):
        ax.annotate(f"w={r['weight']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("uniqueness (unique valid / valid)")
    ax.set_ylabel(f"{objective} score, normalized (invalid = 0)")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def write_outputs(out: Path, rows: list[dict[str, Any]]) -> None:
    (out / "sweep.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    table = tabulate(rows)
    (out / "sweep.md").write_text(table + "\n")
    plot(rows, out / "sweep.png")
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objective", choices=OBJECTIVES, default="qed")
    parser.add_argument("--weights", default="1,2,4", help="Comma-separated weights of the property.")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "qm9.yaml")
    parser.add_argument("--init", default="qm9", help="Generator to fine-tune ('none': start afresh).")
    parser.add_argument("--combine", choices=("mean", "product"), default="product")
    parser.add_argument("--minutes", type=float, default=None, help="Training minutes of each run.")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tabulate", type=Path, default=None, metavar="OUT",
                        help="Only rebuild the table and plot of a finished sweep.")
    args = parser.parse_args()

    if args.tabulate is not None:
        found = args.tabulate / "sweep.jsonl"
        if not found.is_file():
            parser.error(f"{found} does not exist")
        write_outputs(args.tabulate, [json.loads(line) for line in found.read_text().splitlines()])
        return
    if args.out is None:
        parser.error("--out is required (or --tabulate)")
    try:
        weights = [float(w) for w in args.weights.split(",")]
    except ValueError:
        parser.error(f"--weights must be comma-separated numbers, got {args.weights!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for weight in weights:
        run_dir = args.out / f"{args.objective}-w{weight:g}"
        if not RunDir(run_dir).last.is_file():
            train(args.config, run_dir, args.objective, weight, args)
        rows.append(score(run_dir, args.objective, weight, args.samples))
    write_outputs(args.out, rows)


if __name__ == "__main__":
    main()
