"""Turn a run's best checkpoint into the checkpoint bundled with the package.

    python scripts/bundle_checkpoint.py runs/qm9/best.safetensors --out qm9-new.safetensors \
        [--samples 10000] [--temperature T] [--min-p P]
    python scripts/bundle_checkpoint.py runs/qm9/best.safetensors --force   # replace the bundled one

Keeps only the generator (what sampling needs), sets the default sampling temperature and min-p if given,
evaluates it with ``molgan.evaluation.evaluate_sampler`` (seed 0, FCD and the property objectives
included) and stores that evaluation in the checkpoint's metadata and beside it as JSON. A
conditional model is also evaluated at the grid of targets (``molgan evaluate --targets``, seed 0,
beside the bundled ``qm9``), stored beside it as ``<name>.targets.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from molgan.checkpoint import BUNDLED_NAME, Checkpoint, CheckpointWriter, load_checkpoint
from molgan.evaluation import dataset_references, evaluate_sampler
from molgan.sampling import MoleculeSampler, generator_from_checkpoint
from molgan.target_evaluation import evaluate_targets, format_report

ASSETS = Path(__file__).resolve().parents[1] / "molgan" / "assets"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Where to write the checkpoint.")
    parser.add_argument("--force", action="store_true",
                        help=f"Without --out: replace the bundled molgan/assets/{BUNDLED_NAME}.")
    args = parser.parse_args()
    if args.out is None and not args.force:
        parser.error(f"give --out PATH, or --force to replace the bundled molgan/assets/{BUNDLED_NAME}")
    out: Path = args.out or ASSETS / BUNDLED_NAME

    ckpt = load_checkpoint(args.checkpoint)
    meta = {k: v for k, v in ckpt.meta.items() if k in ("config", "vocab", "step", "metrics", "conditions")}
    if args.temperature is not None:
        meta["config"]["sampling"]["temperature"] = args.temperature
    if args.min_p is not None:
        meta["config"]["sampling"]["min_p"] = args.min_p
    generator_tensors = {k: v for k, v in ckpt.tensors.items() if k.startswith("generator.")}
    generator, config, vocab = generator_from_checkpoint(Checkpoint(generator_tensors, meta, ckpt.path))
    sampler = MoleculeSampler(generator, vocab, config, meta)
    evaluation = evaluate_sampler(sampler, args.samples, seed=0, fcd=True, objectives=True)

    writer = CheckpointWriter(meta | {"evaluation": evaluation})
    writer.tensors.update(generator_tensors)
    writer.write(out)
    report = out.with_suffix(".eval.json")
    report.write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n")
    print(json.dumps(evaluation, indent=2, sort_keys=True))
    if sampler.conditions is not None:
        train_smiles, _ = dataset_references(config.data)
        targets = evaluate_targets(sampler, MoleculeSampler.load("qm9"), 2000, seed=0,
                                   train_smiles=train_smiles)
        out.with_suffix(".targets.json").write_text(json.dumps(targets, indent=2) + "\n")
        print(format_report(targets))


if __name__ == "__main__":
    main()
