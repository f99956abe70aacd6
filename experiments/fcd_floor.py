"""The FCD a perfect generator would score: real molecules against the FCD reference.

    python experiments/fcd_floor.py [--config configs/qm9.yaml] [-n 10000] [--seeds 0,1,2]

``molgan evaluate --fcd`` compares n generated samples with the test split of the checkpoint's
dataset. Here n molecules drawn from the training split take the samples' place, with the same
code and sample size, so the printed FCD is the floor that finite samples set: a model's FCD
is only read against it.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from molgan.config import load_config
from molgan.evaluation import dataset_references
from molgan.metrics import frechet_chemnet_distance

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "qm9.yaml")
    parser.add_argument("-n", type=int, default=10_000, help="Training molecules per draw.")
    parser.add_argument("--seeds", default="0,1,2", help="One draw of n molecules per seed.")
    args = parser.parse_args()

    training, reference = dataset_references(load_config(args.config).data)
    pool = sorted(training)
    values = []
    for seed in (int(s) for s in args.seeds.split(",")):
        draw = random.Random(seed).sample(pool, args.n)
        values.append(frechet_chemnet_distance(draw, reference))
        print(f"seed {seed}: FCD(train sample of {args.n:,} vs test split) = {values[-1]:.3f}")
    spread = f" (min {min(values):.3f}, max {max(values):.3f})" if len(values) > 1 else ""
    print(f"median over {len(values)} draws: {statistics.median(values):.3f}{spread}")


if __name__ == "__main__":
    main()
