"""A picture of a conditional model at low, middle and high targets of one property.

    python experiments/target_pictures.py --model qm9-cond --property logp \
        --out docs/models/qm9-cond-molecules.png

One row per target (the training data's 10th, 50th and 90th percentiles, the other conditions
unset), the first ``--per-row`` distinct valid molecules of seed ``--seed`` at the model's own
sampling settings, each labelled with its achieved value.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from molgan.conditions import property_values
from molgan.draw import grid_png
from molgan.sampling import MoleculeSampler, sample_filtered

NAMES = {"logp": "logP", "qed": "QED", "sa": "SA", "mol_weight": "MW"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qm9-cond")
    parser.add_argument("--property", default="logp")
    parser.add_argument("--per-row", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sampler = MoleculeSampler.load(args.model)
    if sampler.conditions is None:
        parser.error(f"{args.model} is not a conditional model")
    condition = sampler.conditions[args.property]
    smiles: list[str | None] = []
    legends: list[str] = []
    label = NAMES[args.property]
    for p in (10, 50, 90):
        target = condition.percentiles[p]
        found = sample_filtered(sampler, args.per_row, seed=args.seed, valid_only=True, unique=True,
                                targets={args.property: target}).samples
        values = property_values([s.smiles for s in found], [args.property])[:, 0]
        smiles += [s.smiles for s in found]
        legends += [f"{label} {v:.2f} (asked {target:.2f})" for v in values]
    grid_png(smiles, args.out, per_row=args.per_row, legends=legends, size=250)
    print(args.out)


if __name__ == "__main__":
    main()
