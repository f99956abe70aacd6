"""Ablation of the design choices of configs/qm9.yaml: each variant trains for the same number
of generator steps, then its best checkpoint is scored on raw samples.

    python experiments/ablation.py --steps 3000 --samples 5000 [--fcd] [--variants qm9,pack2] \
        [--set train.batch_size=128 ...]

A variant is a partial config, ``configs/ablation/NAME.yaml``, laid over configs/qm9.yaml (each
field it names replaces the shipped one); ``--set`` applies to every variant, after it.

Prints a markdown table and writes it, with the raw numbers, under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from molgan.config import load_config
from molgan.evaluation import evaluate_sampler
from molgan.sampling import MoleculeSampler
from molgan.training.run_dir import RunDir
from molgan.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "qm9.yaml"
VARIANTS = ROOT / "configs" / "ablation"
"""One partial config per variant, laid over ``BASE``; its leading comment says what it changes."""


def variant_names() -> list[str]:
    return sorted(path.stem for path in VARIANTS.glob("*.yaml"))


def description(name: str) -> str:
    """The first comment line of a variant's file."""
    first = (VARIANTS / f"{name}.yaml").read_text().splitlines()[0]
    return first.removeprefix("#").strip()


def run_variant(name: str, args: argparse.Namespace, seed: int) -> dict[str, object]:
    config = load_config(
        BASE, [*args.set, f"train.steps={args.steps}", f"train.seed={seed}", "train.max_minutes=null"],
        overlays=[VARIANTS / f"{name}.yaml"],
    )
    run_dir = args.out / f"{name}-s{seed}"
    started = time.perf_counter()
    trainer = Trainer(config, run_dir, progress=False)
    if trainer.train()["stopped_by"]:
        # Ctrl-C / SIGTERM stop the trainer gracefully; they should stop the whole ablation too.
        raise SystemExit(f"interrupted during {name}")
    minutes = (time.perf_counter() - started) / 60
    metrics = evaluate_sampler(
        MoleculeSampler.load(RunDir(run_dir).best), args.samples, seed=seed, fcd=args.fcd
    )
    return {"variant": name, "seed": seed, "minutes": round(minutes, 1)} | metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seeds", type=str, default="0")
    parser.add_argument("--variants", type=str, default=",".join(variant_names()),
                        help="Comma-separated names of configs/ablation/*.yaml (default: all).")
    parser.add_argument("--fcd", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="Override for every variant (repeatable).")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    args = parser.parse_args()

    names = args.variants.split(",")
    unknown = sorted(set(names) - set(variant_names()))
    if unknown:
        parser.error(f"no variant {', '.join(unknown)} in {VARIANTS.relative_to(ROOT)}/")
    rows = []
    for name in names:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run_variant(name, args, seed))
            print(json.dumps(rows[-1]), flush=True)

    keys = ["validity", "uniqueness", "novelty", "vun", "qed_mean", "fcd", "minutes"]
    lines = [
        "| variant | change | seed | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for row in rows:
        cells = [
            f"{row[k]:.3f}" if isinstance(row.get(k), float) else str(row.get(k, "-")) for k in keys
        ]
        change = description(str(row["variant"]))
        lines.append(f"| {row['variant']} | {change} | {row['seed']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(table + "\n")
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
