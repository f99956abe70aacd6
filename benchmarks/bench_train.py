"""Training throughput and peak memory of a config (default: configs/qm9.yaml).

    python benchmarks/bench_train.py [--config configs/qm9.yaml] [--steps 300] [--repeats 3]

Reports generator steps/s and generated molecules/s (batch size x steps/s, each step also runs
``n_critic`` critic updates) as the median over repeats, and the peak resident memory of the
process (dataset, models, optimisers and evaluation included).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from molgan.config import load_config
from molgan.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "qm9.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        tau = trainer.tau()
        rates = []
        for _ in range(args.repeats + 1):  # the first round warms up
            started = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(tau)
                trainer.state.step += 1
            rates.append(args.steps / (time.perf_counter() - started))
        eval_started = time.perf_counter()
        trainer.evaluate()
        eval_s = time.perf_counter() - eval_started
    steps_per_s = statistics.median(rates[1:])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batch = config.train.batch_size
    print(
        "| config | threads | batch | n_critic | generator steps/s | molecules/s "
        f"| eval of {config.train.eval_samples} (s) | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.config.name} | {torch.get_num_threads()} | {batch} | {config.train.n_critic} "
        f"| {steps_per_s:.2f} | {steps_per_s * batch:.0f} | {eval_s:.1f} | {peak_mb:.0f} |"
    )


if __name__ == "__main__":
    main()
