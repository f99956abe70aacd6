"""How best to use the cores of one machine for training: threads or processes.

    python benchmarks/bench_cores.py [--config configs/qm9.yaml] [--steps 20] [--rounds 3]

Runs ``benchmarks/bench_train.py`` at the config's global batch as

- 1 process x 1 thread,
- 1 process x T threads (T = the CPUs this process may use),
- P processes x 1 thread under torchrun (P = T), each training its share of the batch,

taking the variants in turn, round after round, so that a machine that slows down or speeds up
during the benchmark affects them alike. Prints, per variant, the median over rounds of
generator steps/s and molecules/s, the ratio to 1 x 1, and the peak resident memory of all its
processes together (torchrun's launcher included), sampled from /proc every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_TRAIN = ROOT / "benchmarks" / "bench_train.py"


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc), in KiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # it ended meanwhile
    return total


def run(command: list[str], env: dict[str, str]) -> tuple[dict, int]:
    """The JSON row ``command`` prints, and the peak memory of its process tree (KiB)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(process.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = process.communicate()
    done.set()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "qm9.yaml")
    parser.add_argument("--steps", type=int, default=20, help="Timed generator steps per repeat.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed repeats inside one run.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of every variant, interleaved.")
    args = parser.parse_args()

    cpus = len(os.sched_getaffinity(0))
    bench = [str(BENCH_TRAIN), "--config", str(args.config), "--steps", str(args.steps),
             "--repeats", str(args.repeats), "--device", "cpu", "--json"]
    variants = {
        "1 process x 1 thread": [sys.executable, *bench, "--set", "train.threads=1"],
        f"1 process x {cpus} threads": [sys.executable, *bench, "--set", f"train.threads={cpus}"],
        f"{cpus} processes x 1 thread (torchrun)": [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cpus}",
            *bench, "--set", "train.threads=1",
        ],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[str, list[tuple[dict, int]]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, command in variants.items():
            row, peak = run(command, env)
            results[name].append((row, peak))
            print(f"round {round_ + 1}/{args.rounds}: {name}: {row['steps_per_s']:.3f} steps/s, "
                  f"{peak / 1024:.0f} MB", file=sys.stderr)

    batch = results["1 process x 1 thread"][0][0]["batch"]
    base = statistics.median(row["steps_per_s"] for row, _ in results["1 process x 1 thread"])
    print(f"| variant ({args.config.name}, global batch {batch}) | generator steps/s | molecules/s "
          "| vs 1 x 1 | peak RSS, all processes (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        rate = statistics.median(row["steps_per_s"] for row, _ in runs)
        peak_mb = statistics.median(peak for _, peak in runs) / 1024
        print(f"| {name} | {rate:.2f} | {rate * batch:,.0f} | {rate / base:.2f}x | {peak_mb:,.0f} |")


if __name__ == "__main__":
    main()
