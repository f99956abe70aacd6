"""Featurizing the bundled QM9 file, loading it back from the cache, and peak memory.

Usage: .venv/bin/python benchmarks/bench_data.py [--workers 2] [--repeats 1] [--load-repeats 5]

Every featurization run writes into a fresh temporary cache directory, so none is a cache hit.
Peak memory is the resident set size high-water mark (getrusage ru_maxrss) of this process
and, separately, of its worker processes; tracemalloc gives the peak of Python allocations
during one cache load. Prints a markdown table (medians over the repeats).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from molgan.data import load_dataset


def _maxrss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="featurization runs")
    parser.add_argument("--load-repeats", type=int, default=5, help="cache loads")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        featurize_s = []
        for r in range(args.repeats):
            cache = Path(tmp) / f"run{r}"
            t0 = time.perf_counter()
            ds = load_dataset(cache_dir=cache, workers=args.workers)
            featurize_s.append(time.perf_counter() - t0)
            assert not ds.cache_hit
        rss_featurize = _maxrss_mib(resource.RUSAGE_SELF)
        rss_workers = _maxrss_mib(resource.RUSAGE_CHILDREN)
        cache_file = next((Path(tmp) / "run0").glob("*.safetensors"))

        load_s = []
        for _ in range(args.load_repeats):
            t0 = time.perf_counter()
            again = load_dataset(cache_dir=Path(tmp) / "run0")
            load_s.append(time.perf_counter() - t0)
            assert again.cache_hit and len(again) == len(ds)
        tracemalloc.start()
        load_dataset(cache_dir=Path(tmp) / "run0")
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        print(f"QM9: {ds.report.summary()}; vocab {list(ds.vocab.atoms)}\n")
        print("| step | median | target |")
        print("|---|---:|---:|")
        print(f"| featurize QM9 ({args.workers} workers, {len(featurize_s)} run(s)) | "
              f"{statistics.median(featurize_s):.1f} s | <= 60 s |")
        print(f"| load from cache ({args.load_repeats} runs) | "
              f"{statistics.median(load_s) * 1000:.0f} ms | <= 2 s |")
        print(f"| cache file size | {cache_file.stat().st_size / 2**20:.1f} MiB | |")
        print(f"| peak RSS, main process (featurize) | {rss_featurize:.0f} MiB | |")
        print(f"| peak RSS, largest worker | {rss_workers:.0f} MiB | |")
        print(f"| peak Python allocations during one cache load | "
              f"{traced_peak / 2**20:.1f} MiB | |")


if __name__ == "__main__":
    main()
