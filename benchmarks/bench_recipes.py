"""Two or more training recipes timed side by side: generator steps/s and the ratio to the first.

    python benchmarks/bench_recipes.py [--config configs/qm9.yaml] \
        [--variant qm9.yaml= --variant cheap=configs/ablation/cheap_critic.yaml] [--processes 1,2]

Each variant is ``NAME=OVERLAY`` (a partial config laid over ``--config``; empty: the config as it
is). Every variant runs ``benchmarks/bench_train.py`` with one thread per process, as one process
and as P processes under torchrun (each training its share of the global batch), taking the
variants in turn, round after round, so that a machine that slows down or speeds up during the
benchmark affects them alike. Prints the median over rounds and the ratio to the first variant
with the same number of processes. Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from bench_cores import BENCH_TRAIN, ROOT, run

DEFAULT_VARIANTS = ["qm9-2026-12=configs/ablation/qm9-2026-12.yaml", "qm9.yaml="]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "qm9.yaml")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME=OVERLAY",
                        help=f"Repeatable (default: {' '.join(DEFAULT_VARIANTS)}).")
    parser.add_argument("--processes", default="1,2", help="Comma-separated process counts.")
    parser.add_argument("--steps", type=int, default=20, help="Timed generator steps per repeat.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed repeats inside one run.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of every variant, interleaved.")
    args = parser.parse_args()

    variants = dict(item.split("=", 1) for item in (args.variant or DEFAULT_VARIANTS))
    counts = [int(p) for p in args.processes.split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rates: dict[tuple[str, int], list[float]] = {(n, p): [] for p in counts for n in variants}
    for round_ in range(args.rounds):
        for (name, processes), found in rates.items():
            overlay = variants[name]
            bench = [str(BENCH_TRAIN), "--config", str(args.config), "--steps", str(args.steps),
                     "--repeats", str(args.repeats), "--device", "cpu", "--json",
                     "--set", "train.threads=1", "--set", f"train.processes={processes}",
                     *(["--overlay", overlay] if overlay else [])]
            launcher = [sys.executable] if processes == 1 else [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={processes}"]
            row, _ = run([*launcher, *bench], env)
            found.append(row["steps_per_s"])
            print(f"round {round_ + 1}/{args.rounds}: {name}, {processes} process(es): "
                  f"{row['steps_per_s']:.3f} steps/s", file=sys.stderr)

    print(f"| recipe ({args.config.name} + overlay) | processes x threads | generator steps/s "
          "(median) | rounds | vs the first |")
    print("|---|---|---:|---|---:|")
    for (name, processes), found in rates.items():
        first = statistics.median(rates[(next(iter(variants)), processes)])
        rate = statistics.median(found)
        shown = ", ".join(f"{r:.2f}" for r in found)
        print(f"| {name} | {processes} x 1 | {rate:.2f} | {shown} | {rate / first:.2f}x |")


if __name__ == "__main__":
    main()
