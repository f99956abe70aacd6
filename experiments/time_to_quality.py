"""Minutes of training until a run's own evaluation first reaches a validity and a uniqueness.

    python experiments/time_to_quality.py runs/old-s0 runs/new-s0 [--validity 0.97] [--uniqueness 0.85]

Reads each run's ``metrics.jsonl``: the trainer's evaluations (10,000 Gumbel-Max samples at the
training temperature, no min-p, every ``train.eval_every`` steps) and the elapsed training time
logged with the steps. A run's minutes at an evaluation are those logged at its step (evaluation
time included, as a user waits for it too). Prints a markdown table: the first evaluation at or
above both floors, or "not reached" with the run's best validity x uniqueness and its length.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from molgan.training.report import evaluations_in_time
from molgan.training.run_dir import RunDir


def first_reaching(
    rows: list[dict[str, float]], validity: float, uniqueness: float
) -> dict[str, float] | None:
    """The earliest evaluation at or above both floors, or ``None``."""
    return next((r for r in rows if r["validity"] >= validity and r["uniqueness"] >= uniqueness), None)


def tabulate(run_dirs: list[Path], validity: float, uniqueness: float) -> str:
    lines = [f"| run | first evaluation with validity >= {validity:.0%} and uniqueness >= "
             f"{uniqueness:.0%} | its validity / uniqueness | run length |",
             "|---|---|---|---|"]
    for run_dir in run_dirs:
        rows = evaluations_in_time(RunDir(run_dir).metrics)
        if not rows:
            raise SystemExit(f"{run_dir}: no evaluation with a logged time in metrics.jsonl")
        last = rows[-1]
        length = f"{last['step']:,} steps, {last['minutes']:.1f} min"
        hit = first_reaching(rows, validity, uniqueness)
        if hit is None:
            best = max(rows, key=lambda r: r["validity"] * r["uniqueness"])
            lines.append(f"| {run_dir.name} | not reached | best {best['validity']:.1%} / "
                         f"{best['uniqueness']:.1%} (step {best['step']:,}) | {length} |")
        else:
            lines.append(f"| {run_dir.name} | step {hit['step']:,}, {hit['minutes']:.1f} min | "
                         f"{hit['validity']:.1%} / {hit['uniqueness']:.1%} | {length} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--validity", type=float, default=0.97)
    parser.add_argument("--uniqueness", type=float, default=0.85)
    args = parser.parse_args()
    for run in args.runs:
        if not RunDir(run).metrics.is_file():
            parser.error(f"{run}: no metrics.jsonl (is it a run directory?)")
    print(tabulate(args.runs, args.validity, args.uniqueness))


if __name__ == "__main__":
    main()
