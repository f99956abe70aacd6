"""Throughput of graph -> canonical SMILES decoding on one core.

Usage: .venv/bin/python benchmarks/bench_decode.py [--count 10000] [--repeats 5]

Workloads (QM9 vocabulary, N = 9):
  qm9        encoded QM9 molecules, all distinct and valid
  perturbed  the same with one random bond changed in every other graph
  random     uniformly random atoms and sparse random bonds (mostly invalid)
  repeated   perturbed graphs drawn from only 10% distinct ones (a collapsing generator)

Methods:
  naive      per-graph Python loop over every atom pair, RWMol, SanitizeMol, MolToSmiles
  decode     molgan.chem.decode called per graph (reference path)
  batch      molgan.chem.decode_batch, fresh call (dedupes within the call only)
  batch+memo decode_batch with a memo dict already filled by a previous call
Prints molecules/s (median of the repeats) as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from rdkit import Chem, rdBase

from molgan.chem import SANITIZE_OPS, Vocab, decode, decode_batch, encode
from molgan.data import qm9_path, read_smiles

QM9_VOCAB = Vocab(atoms=("*", "C", "N", "O", "F", "N+", "O-", "C-", "N-"), max_atoms=9)
_BONDS = (None, Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE,
          Chem.BondType.AROMATIC)


def naive_decode(atoms: np.ndarray, bonds: np.ndarray, vocab: Vocab) -> list[str | None]:
    """The straightforward baseline: one RDKit molecule per graph, bonds from a double loop."""
    out: list[str | None] = []
    zs, qs = vocab.atomic_numbers, vocab.charges
    with rdBase.BlockLogs():
        for a, b in zip(atoms.tolist(), bonds.tolist(), strict=True):
            mol = Chem.RWMol()
            slot = {}
            for i, k in enumerate(a):
                if k:
                    atom = Chem.Atom(zs[k])
                    atom.SetFormalCharge(qs[k])
                    slot[i] = mol.AddAtom(atom)
            for i in slot:
                for j in slot:
                    if i < j and b[i][j]:
                        mol.AddBond(slot[i], slot[j], _BONDS[b[i][j]])
            try:
                Chem.SanitizeMol(mol, SANITIZE_OPS)
                out.append(Chem.MolToSmiles(mol, isomericSmiles=False) if slot else None)
            except Exception:
                out.append(None)
    return out


def workloads(count: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    smiles = read_smiles(qm9_path())
    pick = rng.choice(len(smiles), count, replace=False)
    graphs = [encode(smiles[i], QM9_VOCAB) for i in pick]
    atoms = torch.stack([g[0] for g in graphs]).numpy().astype(np.uint8)
    bonds = torch.stack([g[1] for g in graphs]).numpy().astype(np.uint8)
    pert = bonds.copy()
    for k in range(0, count, 2):
        i, j = rng.choice(9, 2, replace=False)
        pert[k, i, j] = pert[k, j, i] = rng.integers(0, 4)
    ra = rng.integers(0, QM9_VOCAB.num_atom_types, (count, 9)).astype(np.uint8)
    rb = np.triu(rng.choice(4, (count, 9, 9), p=[0.8, 0.15, 0.04, 0.01]), 1).astype(np.uint8)
    rb = rb + rb.transpose(0, 2, 1)
    distinct = max(1, count // 10)
    rep = rng.integers(0, distinct, count)
    return {
        "qm9": (atoms, bonds),
        "perturbed": (atoms, pert),
        "random": (ra, rb),
        "repeated": (atoms[rep], pert[rep]),
    }


def rate(fn: Callable[[], object], count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return count / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    vocab = QM9_VOCAB
    rows = []
    for name, (a, b) in workloads(args.count, args.seed).items():
        ref = decode_batch(a, b, vocab)
        assert naive_decode(a, b, vocab) == ref, f"naive and batch paths disagree on {name}"
        valid = sum(s is not None for s in ref) / len(ref)
        unique = len({(x.tobytes(), y.tobytes()) for x, y in zip(a, b, strict=True)})
        memo: dict[bytes, tuple[str | None, bool]] = {}
        decode_batch(a, b, vocab, memo=memo)
        r = {
            "naive": rate(lambda a=a, b=b: naive_decode(a, b, vocab), len(a), args.repeats),
            "decode": rate(lambda a=a, b=b: [decode(x, y, vocab) for x, y in zip(a, b,
                                                                              strict=True)],
                           len(a), args.repeats),
            "batch": rate(lambda a=a, b=b: decode_batch(a, b, vocab), len(a), args.repeats),
            "batch+memo": rate(lambda a=a, b=b, m=memo: decode_batch(a, b, vocab, memo=m),
                               len(a), args.repeats),
        }
        rows.append((name, len(a), unique, valid, r))
    print(f"decode throughput, molecules/s, one core, median of {args.repeats} "
          f"(torch {torch.__version__}, rdkit {rdBase.rdkitVersion})\n")
    print("| workload | graphs | distinct | valid | naive | decode | batch | batch+memo "
          "| batch / naive |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, unique, valid, r in rows:
        print(f"| {name} | {n} | {unique} | {valid:.1%} | {r['naive']:,.0f} | "
              f"{r['decode']:,.0f} | {r['batch']:,.0f} | {r['batch+memo']:,.0f} | "
              f"{r['batch'] / r['naive']:.1f}x |")


if __name__ == "__main__":
    main()
