"""Ablation of the design choices of configs/qm9.yaml: each variant trains for the same number
of generator steps, then its best checkpoint is scored on raw samples.

    python benchmarks/ablation.py --steps 3000 --samples 5000 [--fcd] [--variants base,lam05] \
        [--set train.batch_size=128 ...]

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

# Aromatic bonds as a fifth bond type; NH is pyrrole-type nitrogen, which QM9's atoms need then.
_AROMATIC = ["data.aromatic=true", "data.atoms=[C, N, O, F, NH]"]

# name -> (what it changes, overrides on top of configs/qm9.yaml)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "qm9": ("configs/qm9.yaml as shipped", []),
    "reward_net": ("paper's RL term: reward network through ST graphs", ["train.rl_estimator=reward_net"]),
    "validity_only": ("reward of validity alone (no uniqueness term)", ["reward.weights={validity: 1.0}"]),
    "no_entropy_ms": (
        "no entropy bonus, no mode-seeking term",
        ["train.entropy_weight=0", "train.mode_seeking_weight=0"],
    ),
    "all_atoms": ("charged atom types kept in the vocabulary", ["data.atoms=null"]),
    "gan_only": ("lambda = 1: WGAN only, no RL", ["train.lam=1.0"]),
    "critic_reward_01": ("critic's score of exact samples in the reward, w = 0.1",
                         ["train.critic_reward_weight=0.1"]),
    "critic_reward_03": ("critic's score of exact samples in the reward, w = 0.3",
                         ["train.critic_reward_weight=0.3"]),
    "critic_penalty_03": ("only the critic's below-average scores in the reward, w = 0.3",
                          ["train.critic_reward_weight=0.3", "train.critic_reward_mode=penalty"]),
    "critic_penalty_05": ("only the critic's below-average scores in the reward, w = 0.5",
                          ["train.critic_reward_weight=0.5", "train.critic_reward_mode=penalty"]),
    "aromatic_penalty_03": ("aromatic bonds and the critic's below-average scores in the reward, w = 0.3", [
        *_AROMATIC, "train.critic_reward_weight=0.3", "train.critic_reward_mode=penalty"]),
    "pack2": ("PacGAN: the critic scores packs of 2 graphs", ["model.pack=2"]),
    "pack4": ("PacGAN: the critic scores packs of 4 graphs", ["model.pack=4"]),
    "aromatic_pack2": ("aromatic bonds and a critic that scores packs of 2 graphs",
                       [*_AROMATIC, "model.pack=2"]),
    "rloo2": ("REINFORCE with 2 samples per noise vector, leave-one-out baseline",
              ["train.rl_samples_per_z=2"]),
    "aromatic": ("aromatic bonds as a fifth bond type, NH atoms", _AROMATIC),
    "aromatic_cr03": ("aromatic bonds and the critic's score in the reward, w = 0.3",
                      [*_AROMATIC, "train.critic_reward_weight=0.3"]),
    "atoms_first": ("bonds computed from the sampled atom types", ["model.generator=atoms_first"]),
    "memory_100k": ("uniqueness reward counts repeats among the last 100,000 valid samples",
                    ["reward.memory_size=100000"]),
    "memory_100k_cr03": ("uniqueness memory of 100,000 and the critic's score in the reward, w = 0.3",
                         ["reward.memory_size=100000", "train.critic_reward_weight=0.3"]),
    "memory_100k_aromatic": ("uniqueness memory of 100,000 and aromatic bonds",
                             ["reward.memory_size=100000", *_AROMATIC]),
    "uniqueness_2": ("uniqueness reward weighs twice validity",
                     ["reward.weights={validity: 1.0, uniqueness: 2.0}"]),
    "est_gumbel": ("critic path: soft Gumbel-Softmax (no straight-through)", ["model.estimator=gumbel"]),
    "est_softmax": ("critic path: plain softmax (no noise)", ["model.estimator=softmax"]),
    "est_st": ("critic path: plain straight-through (argmax forward, softmax backward)",
               ["model.estimator=st"]),
}
# Each critic-path estimator under the two kinds of temperature schedule. The shipped schedule
# anneals over 20,000 steps, so a short ablation sees it as nearly constant at 1.0; these
# variants hold the temperature at 0.5, or anneal 1.0 -> 0.2 within the ablation's own budget.
_ESTIMATORS = {"st_gumbel": "straight-through Gumbel-Softmax", "gumbel": "soft Gumbel-Softmax",
               "softmax": "plain softmax", "st": "plain straight-through"}
for _name, _what in _ESTIMATORS.items():
    VARIANTS[f"{_name}_const05"] = (f"critic path: {_what}, temperature constant at 0.5", [
        f"model.estimator={_name}", "temperature.schedule=constant", "temperature.tau_start=0.5",
        "temperature.tau_min=0.5"])
    VARIANTS[f"{_name}_anneal"] = (f"critic path: {_what}, temperature 1.0 -> 0.2 over the budget", [
        f"model.estimator={_name}", "temperature.schedule=exponential", "temperature.tau_start=1.0",
        "temperature.tau_min=0.2", "temperature.anneal_steps={steps}"])


def run_variant(name: str, overrides: list[str], args: argparse.Namespace, seed: int) -> dict[str, object]:
    config = load_config(
        ROOT / "configs" / "qm9.yaml",
        [*args.set, *(o.replace("{steps}", str(args.steps)) for o in overrides), f"train.steps={args.steps}",
         f"train.seed={seed}", "train.max_minutes=null"],
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
    parser.add_argument("--variants", type=str, default=",".join(VARIANTS))
    parser.add_argument("--fcd", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="Override for every variant (repeatable).")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    args = parser.parse_args()

    rows = []
    for name in args.variants.split(","):
        _, overrides = VARIANTS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run_variant(name, overrides, args, seed))
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
        change = VARIANTS[str(row["variant"])][0]
        lines.append(f"| {row['variant']} | {change} | {row['seed']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(table + "\n")
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
