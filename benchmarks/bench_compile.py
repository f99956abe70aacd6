"""Does ``torch.compile`` of the critic and the generator pay for a training step here?

    python benchmarks/bench_compile.py [--config configs/qm9.yaml] [--overlay OVERLAY] [--steps 10]

Builds the trainer of the config (one process, one thread), then times ``train_step`` with the
models as they are, with the generator wrapped by ``torch.compile`` (default inductor backend),
and with the critic compiled too, the variants taking turns round after round. A compiled critic
must also take the gradient penalty's double backward, which the compiler may not support: the
error is reported instead of a rate. Compilation time is excluded (a warm-up step per round).
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = load_config(args.config, ["train.threads=1", "train.processes=1", "train.device=cpu"],
                         overlays=args.overlay)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        generator = torch.compile(trainer.generator)
        variants = {
            "eager": (trainer.ddp_generator, trainer.ddp_critic),
            "compiled generator": (generator, trainer.ddp_critic),
            "compiled generator and critic": (generator, torch.compile(trainer.discriminator)),
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        errors: dict[str, str] = {}
        tau = trainer.tau()
        for _ in range(args.rounds):
            for name, (gen, critic) in variants.items():
                if name in errors:
                    continue
                trainer.ddp_generator, trainer.ddp_critic = gen, critic
                try:
                    trainer.train_step(tau)  # warm-up: compiles on the first round
                    started = time.perf_counter()
                    for _ in range(args.steps):
                        trainer.train_step(tau)
                    rates[name].append(args.steps / (time.perf_counter() - started))
                except Exception as exc:  # any compiler failure is the result
                    errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                print(f"{name}: {rates[name][-1:] or errors[name]}", file=sys.stderr)
    overlays = " + ".join(p.name for p in args.overlay) or "-"
    print(f"| models ({args.config.name} + {overlays}) | generator steps/s (median) | rounds |")
    print("|---|---:|---|")
    for name, found in rates.items():
        if name in errors:
            print(f"| {name} | fails | {errors[name]} |")
        else:
            print(f"| {name} | {statistics.median(found):.2f} | "
                  f"{', '.join(f'{r:.2f}' for r in found)} |")


if __name__ == "__main__":
    main()
