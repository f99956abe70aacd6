"""Batch-size sweep of configs/qm9.yaml: validity and uniqueness against training time.

    python experiments/batch_sweep.py --batch-sizes 128,256,512,1024 --minutes 20
    python experiments/batch_sweep.py --tabulate runs/sweep/b128 runs/sweep/b512   # existing runs

Each batch size trains for the same wall-clock time (one torch thread, as configs/qm9.yaml sets),
evaluating 10,000 raw Gumbel-Max samples at T = 1 (no min-p) every ``--eval-every`` steps. The
table shows, per run, the evaluation closest to each of ``--at`` minutes and the best validity x
uniqueness of the run. Runs are independent, so two can share a 2-core machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from molgan.config import load_config
from molgan.training.report import evaluations_in_time
from molgan.training.run_dir import RunDir
from molgan.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def evaluations(run_dir: Path) -> tuple[int, list[dict[str, float]]]:
    """Batch size and every evaluation of a run with its training time in minutes."""
    run = RunDir(run_dir)
    return load_config(run.config).train.batch_size, evaluations_in_time(run.metrics)


def tabulate(run_dirs: list[Path], at: list[float]) -> str:
    header = "| batch | " + " | ".join(f"~{m:g} min" for m in at) + " | best V x U (step, min) |"
    lines = [header, "|---:|" + "---|" * (len(at) + 1)]
    for run_dir in run_dirs:
        batch, rows = evaluations(run_dir)
        cells = []
        for m in at:
            near = min(rows, key=lambda r: abs(r["minutes"] - m))
            cells.append(
                f"{near['validity']:.1%} / {near['uniqueness']:.1%}" if abs(near["minutes"] - m) < 2 else "-"
            )
        best = max(rows, key=lambda r: r["validity"] * r["uniqueness"])
        cells.append(
            f"{best['validity']:.1%} / {best['uniqueness']:.1%} ({best['step']}, {best['minutes']:.0f})"
        )
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=str, default="128,256,512,1024")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--at", type=str, default="5,10,20")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "batch-sweep")
    parser.add_argument("--tabulate", type=Path, nargs="+", default=None, help="Only tabulate these runs.")
    args = parser.parse_args()
    at = [float(m) for m in args.at.split(",")]

    run_dirs = args.tabulate
    if run_dirs is None:
        run_dirs = []
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            overrides = [
                f"train.batch_size={batch}",
                f"train.max_minutes={args.minutes}",
                f"train.eval_every={args.eval_every}",
                "train.eval_samples=10000",
            ]
            run_dir = args.out / f"b{batch}"
            trainer = Trainer(load_config(ROOT / "configs" / "qm9.yaml", overrides), run_dir, progress=False)
            if trainer.train()["stopped_by"]:
                raise SystemExit(f"interrupted at batch size {batch}")
            run_dirs.append(run_dir)
    print(tabulate(run_dirs, at))


if __name__ == "__main__":
    main()
