"""Training throughput and peak memory of a config (default: configs/qm9.yaml).

    python benchmarks/bench_train.py [--config configs/qm9.yaml] [--steps 300] [--repeats 3]
    python benchmarks/bench_train.py --overlay configs/ablation/cheap_critic.yaml   # a variant
    python benchmarks/bench_train.py --device cuda
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_train.py --set train.threads=1

Reports generator steps/s and generated molecules/s (batch size x steps/s, each step also runs
``n_critic`` critic updates) as the median over repeats, and the peak resident memory of the
process (dataset, models, optimisers and evaluation included). On CUDA the clock waits for the
GPU's queued work before it reads the time, and the table adds the peak GPU memory allocated
(``torch.cuda.max_memory_allocated``). Under torchrun every process trains its share of the
global batch; the figures are rank 0's clock and the peak memory of all ranks added up.
``--json`` prints the row as one JSON object instead (``benchmarks/bench_cores.py`` reads it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from molgan.config import ConfigError, load_config
from molgan.training import distributed
from molgan.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "qm9.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:K or mps (default: train.device)")
    parser.add_argument("--overlay", type=Path, action="append", default=[],
                        help="A partial config laid over --config (configs/ablation/*.yaml; repeatable).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a config key, as `molgan train --set` does (repeatable).")
    parser.add_argument("--json", action="store_true", help="Print the row as one JSON object.")
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="Then profile K more steps with torch.profiler and print where the "
                        "time went: the step's parts and the top operators by self CPU time.")
    args = parser.parse_args()

    overrides = [*args.overrides, *([f"train.device={args.device}"] if args.device else [])]
    try:
        config = load_config(args.config, overrides, overlays=args.overlay)
    except ConfigError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory() as tmp, distributed.start(config.train.device) as processes:
        try:
            trainer = Trainer(config, tmp, progress=False, processes=processes)
        except ConfigError as exc:  # a device this machine lacks
            parser.error(str(exc))
        device = trainer.device

        def now() -> float:
            # CUDA kernels run asynchronously: time the work, not its queueing.
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter()

        tau = trainer.tau()
        rates = []
        for _ in range(args.repeats + 1):  # the first round warms up
            processes.barrier()
            started = now()
            for _ in range(args.steps):
                trainer.train_step(tau)
                trainer.state.step += 1
            rates.append(args.steps / (now() - started))
        if args.profile and processes.is_main:
            profile_steps(trainer, tau, args.profile)
        eval_started = now()
        if processes.is_main:  # as in training: one process evaluates, the others wait
            trainer.evaluate()
        eval_s = now() - eval_started
        processes.barrier()
        peak_kb = sum(processes.gather_objects(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    if not processes.is_main:
        return
    steps_per_s = statistics.median(rates[1:])
    batch = config.train.batch_size
    row = {
        "config": " + ".join(path.name for path in [args.config, *args.overlay]),
        "device": str(device),
        "processes": processes.world_size,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "n_critic": config.train.n_critic,
        "generator steps/s": f"{steps_per_s:.2f}",
        "molecules/s": f"{steps_per_s * batch:.0f}",
        f"eval of {config.train.eval_samples} (s)": f"{eval_s:.1f}",
        "peak RSS (MB)": f"{peak_kb / 1024:.0f}",
    }
    if device.type == "cuda":
        row["peak GPU memory (MB)"] = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"
    if args.json:
        print(json.dumps(row | {"steps_per_s": steps_per_s}))
        return
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(str(value) for value in row.values()) + " |")


def profile_steps(trainer: Trainer, tau: float, steps: int) -> None:
    """Print the parts of ``steps`` training steps (the trainer's ``record_function`` labels) and
    the operators with the most self CPU time, as markdown."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.train_step(tau)
    events = prof.key_averages()
    parts = [e for e in events if e.key in ("critic_update", "generator_update", "reward_network_update")]
    total = sum(e.cpu_time_total for e in parts)
    print(f"| part of {steps} steps | calls | CPU time (ms) | share |\n|---|---:|---:|---:|")
    for e in sorted(parts, key=lambda e: -e.cpu_time_total):
        print(f"| {e.key} | {e.count} | {e.cpu_time_total / 1e3:.0f} | {e.cpu_time_total / total:.0%} |")
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    self_total = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::"))
    print("\n| operator | calls | self CPU (ms) | share of operators |\n|---|---:|---:|---:|")
    for e in ops[:12]:
        print(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.0f} | "
              f"{e.self_cpu_time_total / self_total:.0%} |")
    print()


if __name__ == "__main__":
    main()
