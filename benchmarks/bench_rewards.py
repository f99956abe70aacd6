"""Throughput of the reward function and of sample evaluation, on one core.

    .venv/bin/python benchmarks/bench_rewards.py [--fcd]

Molecules are random small C/N/O graphs (up to 9 heavy atoms, QM9-sized) built from a fixed seed,
so the benchmark needs no dataset. Each timing is the median of 3 runs; the score cache is
emptied before each "cold" run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from rdkit import Chem, rdBase

from molgan.metrics import evaluate_smiles
from molgan.rewards import REWARD_COMPONENTS, RewardFunction, clear_scores_cache

_ATOMS = (("C", 4), ("N", 3), ("O", 2))
_ATOM_P = (0.7, 0.15, 0.15)
_BONDS = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)


def _random_molecule(rng: np.random.Generator, max_atoms: int = 9) -> str | None:
    """A random tree of heavy atoms plus an optional ring closure; None if it fails to sanitize."""
    n = int(rng.integers(3, max_atoms + 1))
    mol = Chem.RWMol()
    free: list[int] = []
    for k in range(n):
        symbol, valence = _ATOMS[rng.choice(3, p=_ATOM_P)]
        idx = mol.AddAtom(Chem.Atom(symbol))
        free.append(valence)
        if k == 0:
            continue
        parents = [p for p in range(k) if free[p] > 0]
        if not parents:
            return None
        parent = int(rng.choice(parents))
        order = int(min(rng.choice(3, p=(0.75, 0.2, 0.05)) + 1, free[parent], free[idx]))
        mol.AddBond(parent, idx, _BONDS[order - 1])
        free[parent] -= order
        free[idx] -= order
    if n >= 3 and rng.random() < 0.4:
        a, b = (int(x) for x in rng.choice(n, size=2, replace=False))
        if free[a] > 0 and free[b] > 0 and mol.GetBondBetweenAtoms(a, b) is None:
            mol.AddBond(a, b, Chem.BondType.SINGLE)
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def distinct_molecules(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    with rdBase.BlockLogs():
        while len(seen) < count:
            s = _random_molecule(rng)
            if s is not None:
                seen.setdefault(s)
    return list(seen)


def median_time(fn: Callable[[], object], setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(3):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fcd", action="store_true", help="also time evaluation with FCD")
    args = parser.parse_args()
    torch.set_num_threads(1)

    pool = distinct_molecules(20_000, seed=0)
    batch_distinct = pool[:1024]
    half = pool[1024 : 1024 + 512]
    rng = np.random.default_rng(1)
    batch_repeats = [half[i] for i in rng.permutation(np.arange(1024) % 512)]  # each twice
    # The components of QM9 training, as docs/benchmarks.md reports them: the MOSES filters (about 4 ms
    # a new molecule, and they need the molsets wheel) are a MOSES-only option.
    all_weights = {c: 1.0 for c in REWARD_COMPONENTS if c != "filters"}

    rows: list[tuple[str, int, float]] = []

    def reward_row(label: str, weights: dict[str, float], batch: list[str], cold: bool) -> None:
        reward = RewardFunction(weights, memory_size=4096)
        if not cold:
            reward(batch)  # fill the cache
        t = median_time(lambda: reward(batch), clear_scores_cache if cold else None)
        rows.append((label, len(batch), t))

    reward_row("reward, all components, 1024 distinct, cold cache", all_weights, batch_distinct, True)
    reward_row("reward, all components, 50% repeats, cold cache", all_weights, batch_repeats, True)
    reward_row("reward, all components, 1024 distinct, warm cache", all_weights, batch_distinct, False)
    no_qed = {"validity": 1.0, "logp": 1.0, "sa": 1.0, "uniqueness": 1.0}
    reward_row("reward, all but QED, 1024 distinct, cold cache", no_qed, batch_distinct, True)
    reward_row("reward, validity only, 1024 distinct, cold cache", {"validity": 1.0},
               batch_distinct, True)

    # 10,000 samples: 7,000 distinct valid, 1,500 repeats, 1,000 failed graphs, 500 fragment bags.
    valid = pool[2048 : 2048 + 7000]
    samples: list[str | None] = valid + valid[:1500] + [None] * 1000
    samples += [f"{a}.{b}" for a, b in zip(valid[:500], valid[500:1000], strict=True)]
    order = np.random.default_rng(2).permutation(len(samples))
    samples = [samples[i] for i in order]
    training = set(pool[5000:])  # overlaps part of the samples, so novelty is below 1
    t = median_time(lambda: evaluate_smiles(samples, training))
    rows.append(("evaluate_smiles (no FCD)", len(samples), t))
    if args.fcd:
        reference = pool[:2000]
        evaluate_smiles(samples[:10], training, reference_smiles=reference, compute_fcd=True)
        t = median_time(
            lambda: evaluate_smiles(samples, training, reference_smiles=reference, compute_fcd=True)
        )
        rows.append(("evaluate_smiles + FCD (2,000 reference, cached)", len(samples), t))

    metrics = evaluate_smiles(samples, training)
    print(f"torch threads: {torch.get_num_threads()}")
    print("| case | items | median s (of 3) | items/s |")
    print("|---|---:|---:|---:|")
    for label, items, seconds in rows:
        print(f"| {label} | {items:,} | {seconds:.4f} | {items / seconds:,.0f} |")
    print()
    print("evaluated sample set: " + ", ".join(
        f"{k}={v:.3f}" for k, v in metrics.to_dict().items() if isinstance(v, float)
    ))


if __name__ == "__main__":
    main()
