"""Structural features of the critic: ring counts against a brute-force count of simple cycles,
bonds per element pair and degrees against RDKit, on real molecules; gradients and precision."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from rdkit import Chem

from molgan.chem import Vocab, encode
from molgan.graph_features import MAX_DEGREE, cycle_counts, feature_sizes, structure_features
from molgan.models import GraphLogits, Graphs

ALL = ("cycles", "bond_pairs", "degrees")

# Rings and cages of every size the counts cover, fused and bridged, beside QM9's own molecules.
CAGES = [
    "C12C3C4C1C5C2C3C45",  # cubane: six 4-rings, 6-cycles round pairs of faces
    "C12C3C1C23",  # tetrahedrane: four 3-rings
    "C1CC2CC1C2",  # norbornane-like bicycle
    "c1ccccc1",  # benzene, kekulized
    "C1CCC2CCCC2C1",  # decalin-like 6-5 fused system
    "O1OC23C4OC12C31OC41",  # a strained cage the generator once sampled
    "C1=CC=CC=C1O",
    "C1CC1C1CC1",
    "N1C2CC1C2",
]


def brute_force_cycles(adj: list[list[int]]) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Simple cycles of length 3..6, by following every path from each cycle's smallest atom:
    per atom (lengths 3-5) and per graph (lengths 3-6)."""
    n = len(adj)
    per_atom = {k: [0] * n for k in (3, 4, 5)}
    per_graph = dict.fromkeys((3, 4, 5, 6), 0)

    def extend(path: list[int]) -> None:
        start, last = path[0], path[-1]
        for nxt in range(n):
            if not adj[last][nxt]:
                continue
            # Closing the cycle: each is found twice (once each way), kept when its second atom
            # is smaller than its last.
            if nxt == start and len(path) >= 3 and path[1] < path[-1]:
                k = len(path)
                per_graph[k] += 1
                if k <= 5:
                    for atom in path:
                        per_atom[k][atom] += 1
            elif nxt > start and nxt not in path and len(path) < 6:
                extend([*path, nxt])

    for start in range(n):
        extend([start])
    return per_atom, per_graph


def molecules(qm9_smiles: list[str]) -> list[Chem.Mol]:
    mols = [Chem.MolFromSmiles(s) for s in CAGES + qm9_smiles[::400]]
    for mol in mols:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    return mols


def graphs_of(mols: list[Chem.Mol], vocab: Vocab) -> Graphs:
    encoded = [encode(mol, vocab) for mol in mols]
    atoms = torch.stack([a for a, _ in encoded])
    bonds = torch.stack([b for _, b in encoded])
    return Graphs.one_hot(atoms, bonds, len(vocab.atoms), len(vocab.bonds))


def test_cycle_counts_equal_a_brute_force_count_on_real_molecules(qm9_smiles: list[str]) -> None:
    mols = molecules(qm9_smiles)
    assert len(mols) > 300
    adj = torch.stack([
        torch.nn.functional.pad(torch.tensor(Chem.GetAdjacencyMatrix(m), dtype=torch.float32),
                                (0, 9 - m.GetNumAtoms(), 0, 9 - m.GetNumAtoms()))
        for m in mols
    ])
    per_atom, per_graph = cycle_counts(adj)
    with_rings = 0
    for i, mol in enumerate(mols):
        atoms_expected, graph_expected = brute_force_cycles(adj[i].int().tolist())
        for column, k in enumerate((3, 4, 5)):
            assert per_atom[i, :, column].tolist() == atoms_expected[k], (Chem.MolToSmiles(mol), k)
        assert per_graph[i].tolist() == [graph_expected[k] for k in (3, 4, 5, 6)], Chem.MolToSmiles(mol)
        with_rings += any(graph_expected.values())
    assert with_rings > 100  # the comparison covered many ringed molecules, not chains alone
    cubane = per_graph[0].tolist()
    assert cubane == [0, 6, 0, 16]


def test_cycle_counts_on_random_dense_graphs() -> None:
    """Graphs denser than any molecule, where every retraced walk occurs."""
    rng = torch.Generator().manual_seed(0)
    for _ in range(30):
        upper = (torch.rand(8, 8, generator=rng) < torch.rand(1, generator=rng)).float().triu(1)
        adj = upper + upper.T
        per_atom, per_graph = cycle_counts(adj.unsqueeze(0))
        atoms_expected, graph_expected = brute_force_cycles(adj.int().tolist())
        assert per_atom[0].T.tolist() == [atoms_expected[k] for k in (3, 4, 5)]
        assert per_graph[0].tolist() == [graph_expected[k] for k in (3, 4, 5, 6)]


def test_features_of_encoded_molecules_count_what_rdkit_sees(qm9_smiles: list[str]) -> None:
    vocab = Vocab(atoms=("*", "C", "N", "O", "F"), max_atoms=9)
    mols = [m for m in molecules(qm9_smiles) if all(a.GetFormalCharge() == 0 for a in m.GetAtoms())]
    graphs = graphs_of(mols, vocab)
    per_atom, per_graph = structure_features(graphs.atoms, graphs.bonds, ALL)
    n_atom, n_graph = feature_sizes(ALL, len(vocab.atoms), len(vocab.bonds))
    assert per_atom.shape == (len(mols), 9, n_atom) and per_graph.shape == (len(mols), n_graph)
    counts = per_graph[:, 4:4 + 10 * 3].expm1().round().view(len(mols), 10, 3)
    pairs = [(a, b) for a in range(4) for b in range(a, 4)]  # the upper triangle, row by row
    degree_bins = per_atom[..., 3:]
    for i, mol in enumerate(mols):
        expected = Counter()
        for bond in mol.GetBonds():
            ends = sorted(vocab.atoms.index(a.GetSymbol()) - 1
                          for a in (bond.GetBeginAtom(), bond.GetEndAtom()))
            expected[(tuple(ends), int(bond.GetBondTypeAsDouble()))] += 1
        for p, pair in enumerate(pairs):
            for order in (1, 2, 3):
                assert counts[i, p, order - 1] == expected[(pair, order)], (mol, pair, order)
        degrees = [min(a.GetDegree(), MAX_DEGREE) for a in mol.GetAtoms()]
        assert degree_bins[i, : len(degrees)].argmax(-1).tolist() == degrees
        assert degree_bins[i, : len(degrees)].sum(-1).tolist() == [1.0] * len(degrees)
        assert degree_bins[i, len(degrees):].abs().sum() == 0  # absent atoms have no features
        assert per_graph[i, -(MAX_DEGREE + 1):].expm1().round().sum() == mol.GetNumAtoms()


def test_bonds_to_an_absent_atom_count_for_nothing() -> None:
    atoms = torch.tensor([[1, 1, 1, 0]])  # a C-C-C chain and an absent atom bonded to all three
    bonds = torch.tensor([[[0, 1, 0, 1], [1, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 0]]])
    graphs = Graphs.one_hot(atoms, bonds, 3, 4)
    per_atom, per_graph = structure_features(graphs.atoms, graphs.bonds, ("cycles",))
    assert per_atom.abs().sum() == 0 and per_graph.abs().sum() == 0


def test_features_have_gradients_on_relaxed_graphs_and_ignore_bfloat16_autocast() -> None:
    rng = torch.Generator().manual_seed(0)
    logits = GraphLogits(torch.randn(4, 9, 5, generator=rng, requires_grad=True),
                         torch.randn(4, 36, 4, generator=rng, requires_grad=True))
    graphs = logits.relax("st_gumbel", 0.7, torch.Generator().manual_seed(1))
    per_atom, per_graph = structure_features(graphs.atoms, graphs.bonds, ALL)
    (per_atom.sum() + per_graph.sum()).backward()
    for grad in (logits.atoms.grad, logits.pairs.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # A complete graph: its closed 6-walk counts exceed what bfloat16 holds exactly.
    dense = Graphs.one_hot(torch.ones(2, 9, dtype=torch.long),
                           torch.ones(2, 9, 9, dtype=torch.long) - torch.eye(9, dtype=torch.long), 5, 4)
    plain = structure_features(dense.atoms, dense.bonds, ALL)
    with torch.autocast("cpu", torch.bfloat16):
        under_autocast = structure_features(dense.atoms, dense.bonds, ALL)
    for a, b in zip(plain, under_autocast, strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b)
    assert plain[1][0, 3].expm1().round() == 9 * 8 * 7 * 6 * 5 * 4 / 12  # 6-cycles of K9


@pytest.mark.parametrize("names", [("cycles",), ("bond_pairs",), ("degrees",), ALL])
def test_feature_sizes_match_the_features(names: tuple[str, ...]) -> None:
    graphs = Graphs.one_hot(torch.randint(7, (3, 6)), torch.zeros(3, 6, 6, dtype=torch.long), 7, 5)
    per_atom, per_graph = structure_features(graphs.atoms, graphs.bonds, names)
    assert (per_atom.shape[-1], per_graph.shape[-1]) == feature_sizes(names, 7, 5)
