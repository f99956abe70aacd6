from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rdkit import Chem

from molgan.chem import (
    AROMATIC_BOND,
    AROMATIC_BOND_TYPES,
    ATOM_NONE,
    BOND_NONE,
    BOND_TYPES,
    EncodeError,
    Vocab,
    atom_label,
    canonical_smiles,
    decode,
    decode_and_validate,
    decode_batch,
    encode,
    is_valid,
    is_valid_loose,
    is_valid_mol,
    mol_to_smiles,
    parse_label,
    sanitized_mol,
    to_mol,
    vocab_from_counts,
)
from tests.conftest import QM9_ATOMS


def _graph(vocab: Vocab, labels: list[str], bonds: dict[tuple[int, int], int]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Hand-built graph: labels for the first slots, {(i, j): order} written symmetrically."""
    n = vocab.max_atoms
    a = np.zeros(n, dtype=np.int64)
    b = np.zeros((n, n), dtype=np.int64)
    for i, lab in enumerate(labels):
        a[i] = vocab.atom_index[lab]
    for (i, j), order in bonds.items():
        b[i, j] = b[j, i] = order
    return a, b


def _encoded(smiles: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Graphs of ``smiles`` stacked, atoms (M, N) and bonds (M, N, N), and their canonical SMILES."""
    graphs = [encode(s, vocab) for s in smiles]
    return (torch.stack([g[0] for g in graphs]), torch.stack([g[1] for g in graphs]),
            [canonical_smiles(s) for s in smiles])


# --------------------------------------------------------------------------- round trip


def test_qm9_round_trip_on_seeded_sample(qm9_smiles: list[str], qm9_vocab: Vocab) -> None:
    rng = np.random.default_rng(1234)
    sample = [qm9_smiles[i] for i in rng.choice(len(qm9_smiles), 5000, replace=False)]
    # Every charged molecule too, so charge handling is covered beyond the random sample.
    sample += [s for s in qm9_smiles if "+" in s or "-" in s]
    assert sum("+" in s for s in sample) >= 400
    atoms, bonds, expected = _encoded(sample, qm9_vocab)
    decoded = decode_batch(atoms, bonds, qm9_vocab)
    agree = sum(d == e for d, e in zip(decoded, expected, strict=True))
    assert agree / len(sample) >= 0.999, [
        (s, e, d) for s, e, d in zip(sample, expected, decoded, strict=True) if d != e][:5]


@pytest.mark.parametrize("smiles", [
    "c1ccccc1O", "[NH3+]CCC([O-])=O", "[C-]#[N+]C", "C1=CC=CN1", "N#CC1(C)OC1", "FC(F)(F)F",
    "C[N-]C=O", "O=c1cc[nH]cc1",
])
def test_single_round_trip(smiles: str, qm9_vocab: Vocab) -> None:
    a, b = encode(smiles, qm9_vocab)
    assert decode(a, b, qm9_vocab) == canonical_smiles(smiles)


# --------------------------------------------------------------------------- encode


def test_encode_layout(qm9_vocab: Vocab) -> None:
    atoms, bonds = encode("c1ccccc1[O-]", qm9_vocab)  # aromatic and charged
    n = qm9_vocab.max_atoms
    assert atoms.shape == (n,) and atoms.dtype == torch.int64
    assert bonds.shape == (n, n) and bonds.dtype == torch.int64
    assert torch.equal(bonds, bonds.T)
    assert torch.all(bonds.diagonal() == BOND_NONE)
    assert atoms[:7].tolist() == [1, 1, 1, 1, 1, 1, qm9_vocab.atom_index["O-"]]
    assert torch.all(atoms[7:] == ATOM_NONE)
    assert torch.all(bonds[7:] == BOND_NONE) and torch.all(bonds[:, 7:] == BOND_NONE)
    # Kekulized ring: three single and three double bonds, no aromatic type.
    ring = bonds[:6, :6]
    assert int((ring == 1).sum()) == 6 and int((ring == 2).sum()) == 6
    assert int(bonds.max()) < len(BOND_TYPES)


def test_encode_accepts_mol_and_smiles(qm9_vocab: Vocab) -> None:
    a1, b1 = encode("CC#N", qm9_vocab)
    a2, b2 = encode(Chem.MolFromSmiles("CC#N"), qm9_vocab)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert b1[1, 2] == BOND_TYPES.index("triple")


@pytest.mark.parametrize(("smiles", "reason"), [
    ("C1CC", "unparseable"),
    ("not a molecule", "unparseable"),
    ("CCCCCCCCCC", "too_many_atoms"),
    ("CCO.O", "multi_fragment"),
    ("CCCl", "unsupported_atom"),
    ("[H][H]", "unsupported_element"),
    ("*C", "unsupported_element"),
    ("[CH3]", "radical"),
])
def test_encode_errors_have_reasons(smiles: str, reason: str, qm9_vocab: Vocab) -> None:
    with pytest.raises(EncodeError) as info:
        encode(smiles, qm9_vocab)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_encode_unsupported_bonds() -> None:
    vocab = Vocab(atoms=("*", "C", "N", "Pt"), max_atoms=4)
    for smiles in ("C$C", "N->[Pt]"):  # quadruple, dative
        with pytest.raises(EncodeError) as info:
            encode(smiles, vocab)
        assert info.value.reason == "unsupported_bond"


def test_encode_leaves_input_mol_unchanged(qm9_vocab: Vocab) -> None:
    mol = Chem.MolFromSmiles("c1ccoc1")
    encode(mol, qm9_vocab)
    assert all(b.GetIsAromatic() for b in mol.GetBonds())


def test_encode_rejects_other_types(qm9_vocab: Vocab) -> None:
    with pytest.raises(TypeError):
        encode(42, qm9_vocab)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- decode


def test_decode_ignores_bonds_to_absent_atoms_and_diagonal(qm9_vocab: Vocab) -> None:
    a, b = _graph(qm9_vocab, ["C", "C", "O"], {(0, 1): 1, (1, 2): 1})
    assert decode(a, b, qm9_vocab) == "CCO"
    b[0, 5] = b[5, 0] = 3  # slot 5 holds no atom
    b[2, 8] = b[8, 2] = 2
    b[1, 1] = 3
    assert decode(a, b, qm9_vocab) == "CCO"


def test_decode_reads_upper_triangle_only(qm9_vocab: Vocab) -> None:
    a, b = _graph(qm9_vocab, ["C", "C", "O"], {(0, 1): 1, (1, 2): 1})
    b[1, 0] = 0  # lower triangle says "no bond": ignored
    b[2, 0] = 2  # lower triangle invents a bond: ignored
    assert decode(a, b, qm9_vocab) == "CCO"
    b[0, 2] = 2  # the same bond in the upper triangle counts
    assert decode(a, b, qm9_vocab) is None  # O with valence 3


def test_decode_invalid_valence_is_none(qm9_vocab: Vocab) -> None:
    five = {(0, k): 1 for k in range(1, 6)}
    a, b = _graph(qm9_vocab, ["C"] * 6, five)
    assert decode(a, b, qm9_vocab) is None
    a, b = _graph(qm9_vocab, ["F", "C", "C"], {(0, 1): 1, (0, 2): 1})
    assert decode(a, b, qm9_vocab) is None
    # A neutral nitro group is hypervalent: decode does not repair it into [N+](=O)[O-].
    a, b = _graph(qm9_vocab, ["C", "N", "O", "O"], {(0, 1): 1, (1, 2): 2, (1, 3): 2})
    assert decode(a, b, qm9_vocab) is None
    a, b = _graph(qm9_vocab, ["C", "N+", "O", "O-"], {(0, 1): 1, (1, 2): 2, (1, 3): 1})
    assert decode(a, b, qm9_vocab) == canonical_smiles("C[N+](=O)[O-]")


def test_decode_disconnected_and_empty(qm9_vocab: Vocab) -> None:
    a, b = _graph(qm9_vocab, ["C", "C", "O", "N"], {(0, 1): 1})
    smi = decode(a, b, qm9_vocab)
    assert smi is not None and "." in smi
    assert sorted(smi.split(".")) == ["CC", "N", "O"]
    assert is_valid_loose(smi) and not is_valid(smi)
    assert is_valid(decode(*_graph(qm9_vocab, ["C", "O"], {(0, 1): 1}), qm9_vocab))
    assert decode(np.zeros(9, np.int64), np.ones((9, 9), np.int64), qm9_vocab) is None


def test_decode_charges_from_labels(qm9_vocab: Vocab) -> None:
    a, b = _graph(qm9_vocab, ["N+", "C", "C", "O-", "O"],
                  {(0, 1): 1, (1, 2): 1, (2, 3): 1, (2, 4): 2})
    assert decode(a, b, qm9_vocab) == canonical_smiles("[NH3+]CC([O-])=O")


def test_decode_rejects_malformed_input(qm9_vocab: Vocab) -> None:
    a, b = _graph(qm9_vocab, ["C"], {})
    with pytest.raises(ValueError, match="shape"):
        decode(a, b[:5, :5], qm9_vocab)
    with pytest.raises(ValueError, match="out of range"):
        decode(np.full(9, len(QM9_ATOMS)), b, qm9_vocab)
    with pytest.raises(ValueError, match="out of range"):
        decode(a, np.full((9, 9), 4), qm9_vocab)
    with pytest.raises(ValueError):
        decode_batch(a, b, qm9_vocab)  # unbatched input
    with pytest.raises(ValueError, match="integers"):
        decode_batch(a[None].astype(np.float32), b[None], qm9_vocab)


# --------------------------------------------------------------------------- decode_batch


def _random_graphs(vocab: Vocab, count: int, p_bond: list[float], seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = vocab.max_atoms
    atoms = rng.integers(0, vocab.num_atom_types, (count, n))
    bonds = rng.choice(len(BOND_TYPES), size=(count, n, n), p=p_bond)  # not even symmetric
    return atoms, bonds


@pytest.mark.parametrize("p_bond", [[0.9, 0.1, 0.0, 0.0], [0.8, 0.15, 0.04, 0.01],
                                    [0.55, 0.15, 0.15, 0.15]])
def test_decode_batch_matches_decode_on_random_graphs(p_bond: list[float],
                                                      qm9_vocab: Vocab) -> None:
    atoms, bonds = _random_graphs(qm9_vocab, 3000, p_bond, seed=7)
    expected = [decode(atoms[i], bonds[i], qm9_vocab) for i in range(len(atoms))]
    assert decode_batch(atoms, bonds, qm9_vocab) == expected
    assert decode_batch(torch.from_numpy(atoms).to(torch.uint8),
                        torch.from_numpy(bonds).to(torch.uint8), qm9_vocab) == expected
    assert any(e is not None for e in expected)
    assert any(e is None for e in expected)


def test_decode_batch_matches_decode_with_many_elements() -> None:
    # Elements with several allowed valences (S, P, Se), charged states and a metal without
    # a valence limit: the batch path's valence shortcut must agree with RDKit on all of them.
    vocab = Vocab(atoms=("*", "C", "N", "O", "S", "P", "Cl", "Br", "B", "Si", "Se", "S+", "S-",
                         "P+", "O+", "C+", "B-", "Cl+", "Fe", "Fe++", "Na+"), max_atoms=9)
    for p_bond in ([0.8, 0.15, 0.04, 0.01], [0.7, 0.1, 0.1, 0.1]):
        atoms, bonds = _random_graphs(vocab, 3000, p_bond, seed=11)
        expected = [decode(atoms[i], bonds[i], vocab) for i in range(len(atoms))]
        assert decode_batch(atoms, bonds, vocab) == expected
        assert sum(e is not None for e in expected) > 50


def test_decode_batch_matches_decode_on_perturbed_molecules(qm9_smiles: list[str],
                                                            qm9_vocab: Vocab) -> None:
    rng = np.random.default_rng(3)
    graphs = [encode(qm9_smiles[i], qm9_vocab) for i in rng.choice(len(qm9_smiles), 1000)]
    atoms = torch.stack([g[0] for g in graphs])
    bonds = torch.stack([g[1] for g in graphs])
    for k in range(0, len(graphs), 2):  # change one bond in every other molecule
        i, j = rng.choice(9, 2, replace=False)
        bonds[k, i, j] = bonds[k, j, i] = int(rng.integers(0, 4))
    expected = [decode(atoms[i], bonds[i], qm9_vocab) for i in range(len(atoms))]
    assert decode_batch(atoms, bonds, qm9_vocab) == expected
    assert sum(e is not None for e in expected) > 600


def test_decode_batch_memo_and_duplicates(qm9_vocab: Vocab) -> None:
    a, b = _graph(qm9_vocab, ["C", "C", "O"], {(0, 1): 1, (1, 2): 1})
    a2, b2 = a.copy(), b.copy()
    b2[0, 7] = b2[7, 0] = 2  # only a bond to an absent atom differs
    atoms = np.stack([a, a2, a, np.zeros_like(a)])
    bonds = np.stack([b, b2, b, b])
    memo: dict[bytes, tuple[str | None, bool]] = {}
    assert decode_batch(atoms, bonds, qm9_vocab, memo=memo) == ["CCO", "CCO", "CCO", None]
    assert list(memo.values()) == [("CCO", True)]  # one distinct graph was decoded
    assert decode_batch(atoms[:1], bonds[:1], qm9_vocab, memo=memo) == ["CCO"]
    assert decode_batch(atoms[:0], bonds[:0], qm9_vocab) == []
    assert decode_and_validate(atoms[:0], bonds[:0], qm9_vocab) == ([], [])


def test_decoded_validity_is_strict_validity(qm9_smiles: list[str], qm9_vocab: Vocab) -> None:
    # QM9 graphs with one bond changed in most of them: removed bonds leave fragments, added
    # ones over-valent atoms, so valid, fragmented and unsanitizable graphs all occur.
    rng = np.random.default_rng(5)
    graphs = [encode(qm9_smiles[i], qm9_vocab) for i in rng.choice(len(qm9_smiles), 1000)]
    atoms = torch.stack([g[0] for g in graphs])
    bonds = torch.stack([g[1] for g in graphs])
    for k in range(0, len(graphs), 4):
        bonds[k:k + 3, 0, 1] = bonds[k:k + 3, 1, 0] = torch.tensor([0, 2, 3])
    smiles, valid = decode_and_validate(atoms, bonds, qm9_vocab)
    assert smiles == decode_batch(atoms, bonds, qm9_vocab)
    assert valid == [s is not None and is_valid(s) for s in smiles]
    kinds = {(s is None, v) for s, v in zip(smiles, valid, strict=True)}
    assert kinds == {(False, True), (False, False), (True, False)}


# --------------------------------------------------------------------------- vocab


def test_vocab_dict_round_trip(qm9_vocab: Vocab) -> None:
    d = json.loads(json.dumps(qm9_vocab.to_dict()))
    again = Vocab.from_dict(d)
    assert again == qm9_vocab
    assert again.num_atom_types == len(QM9_ATOMS) and again.num_bond_types == 4
    assert hash(again) == hash(qm9_vocab)


@pytest.mark.parametrize(("bad", "match"), [
    ({"atoms": ["C", "N"], "max_atoms": 9}, "padding"),
    ({"atoms": ["*"], "max_atoms": 9}, "at least one"),
    ({"atoms": ["*", "C", "C"], "max_atoms": 9}, "duplicates"),
    ({"atoms": ["*", "Xx"], "max_atoms": 9}, "Xx"),
    ({"atoms": ["*", "c"], "max_atoms": 9}, "invalid atom label"),
    ({"atoms": ["*", "N+-"], "max_atoms": 9}, "invalid atom label"),
    ({"atoms": ["*", 6], "max_atoms": 9}, "string"),
    ({"atoms": "*C", "max_atoms": 9}, "list"),
    ({"atoms": ["*", "C"], "max_atoms": 0}, "max_atoms"),
    ({"atoms": ["*", "C"], "max_atoms": "9"}, "max_atoms"),
    ({"atoms": ["*", "C"], "max_atoms": True}, "max_atoms"),
    ({"atoms": ["*", "C"]}, "missing"),
    ({"atoms": ["*", "C"], "max_atoms": 9, "bonds": ["none", "single"]}, "bonds"),
    ({"atoms": ["*", "C"], "max_atoms": 9, "bonds": [*BOND_TYPES, "quadruple"]}, "bonds"),
    ({"atoms": ["*", "C", "NH"], "max_atoms": 9}, "'NH' fixes a hydrogen count"),
    ({"atoms": ["*", "C", "NH"], "max_atoms": 9, "bonds": list(BOND_TYPES)}, "aromatic"),
    ({"atoms": ["*", "NH1"], "max_atoms": 9, "bonds": list(AROMATIC_BOND_TYPES)}, "invalid"),
    ({"atoms": ["*", "C"], "max_atoms": 9, "extra": 1}, "unknown"),
    (["*", "C"], "mapping"),
])
def test_vocab_from_dict_rejects_bad_input(bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Vocab.from_dict(bad)  # type: ignore[arg-type]


def test_vocab_from_counts_order() -> None:
    vocab = vocab_from_counts({"Cl": 3, "C": 5, "S": 1, "O-": 1, "N+": 1, "F": 1, "O": 2},
                              max_atoms=5)
    # C, N, O, F first when present; then by count (Cl 3) and name (N+, O-, S: one each).
    assert vocab.atoms == ("*", "C", "O", "F", "Cl", "N+", "O-", "S")
    assert vocab.max_atoms == 5
    with pytest.raises(ValueError, match="zero atoms"):
        vocab_from_counts({}, max_atoms=5)


def test_atom_labels_and_parsing() -> None:
    mol = Chem.MolFromSmiles("[NH3+]CC([O-])=O")
    assert [atom_label(a) for a in mol.GetAtoms()] == ["N+", "C", "C", "O-", "O"]
    assert [atom_label(a, h) for a, h in zip(mol.GetAtoms(), (3, 2, 0, 0, 0), strict=True)] == [
        "NH3+", "CH2", "C", "O-", "O"]
    assert parse_label("N+") == (7, 1, 0)
    assert parse_label("O-") == (8, -1, 0)
    assert parse_label("Fe++") == (26, 2, 0)
    assert parse_label("Cl") == (17, 0, 0)
    assert parse_label("NH") == (7, 0, 1)
    assert parse_label("NH+").hydrogens == 1 and parse_label("NH+").charge == 1
    assert parse_label("CH2-") == (6, -1, 2)
    assert parse_label("Hs") == (108, 0, 0)  # hassium, not a hydrogen count
    for bad in ("NH0", "NH1", "HN", "N+H", "nH"):
        with pytest.raises(ValueError, match="invalid atom label"):
            parse_label(bad)


# --------------------------------------------------------------------------- SMILES and validity


@pytest.mark.parametrize(("smiles", "canonical", "strict", "loose"), [
    ("OCC", "CCO", True, True),
    ("c1ccccc1", "c1ccccc1", True, True),  # aromatic
    ("C1=CC=CC=C1", "c1ccccc1", True, True),  # kekulized spelling of the same molecule
    ("C[C@H](N)O", "CC(N)O", True, True),  # stereo is dropped
    ("[NH3+]CC([O-])=O", "[NH3+]CC(=O)[O-]", True, True),  # charged, zwitterion
    ("C[N+](=O)[O-]", "C[N+](=O)[O-]", True, True),  # charge-separated nitro
    ("[H]C([H])([H])[H]", "C", True, True),  # explicit hydrogens are not atoms
    ("C.C", "C.C", False, True),  # two fragments
    ("[Na+].[Cl-]", "[Cl-].[Na+]", False, True),
    ("C1.C1", "CC", True, True),  # a ring closure across "." joins the atoms: ethane
    # Hypervalent nitro: RDKit's clean-up reads it as [N+](=O)[O-]; judged as written, it
    # does not sanitize, just as decode rejects the same graph.
    ("CN(=O)=O", "C[N+](=O)[O-]", False, False),
    ("C(C)(C)(C)(C)C", None, False, False),  # pentavalent carbon
    ("c1cccc1", None, False, False),  # cannot be kekulized
    ("C1CC", None, False, False),  # unclosed ring
    ("not a smiles", None, False, False),
    ("", None, False, False),  # no atoms
    (None, None, False, False),
])
def test_smiles_definitions(smiles: str | None, canonical: str | None, strict: bool,
                            loose: bool) -> None:
    assert canonical_smiles(smiles) == canonical
    assert is_valid(smiles) is strict
    assert is_valid_mol(sanitized_mol(smiles)) is strict
    assert is_valid_loose(smiles) is loose
    assert (sanitized_mol(smiles) is not None) is loose
    assert (to_mol(smiles) is not None) is (canonical is not None)


@pytest.mark.parametrize("function", [to_mol, sanitized_mol, canonical_smiles, is_valid,
                                      is_valid_loose])
def test_smiles_functions_reject_non_strings(function: object) -> None:
    with pytest.raises(TypeError, match="SMILES string"):
        function(42)  # type: ignore[operator]


def test_canonical_smiles_of_strictly_valid_molecules_needs_no_repair(
        qm9_smiles: list[str]) -> None:
    # Where a SMILES is strictly valid, reading it with RDKit's clean-up or without gives the
    # same canonical SMILES: one name per molecule whichever way it was parsed.
    rng = np.random.default_rng(8)
    sample = [qm9_smiles[i] for i in rng.choice(len(qm9_smiles), 3000, replace=False)]
    sample += [s for s in qm9_smiles if "+" in s or "-" in s]
    valid = [s for s in sample if is_valid(s)]
    assert len(valid) > 3000
    assert [canonical_smiles(s) for s in valid] == [mol_to_smiles(sanitized_mol(s))
                                                    for s in valid]


# --------------------------------------------------------------------------- aromatic bonds

KEKULE_DRUG_ATOMS = ("*", "C", "N", "O", "S", "F", "Cl", "Br")
AROMATIC_MOLECULES = [
    "c1ccccc1",  # benzene
    "c1ccncc1",  # pyridine
    "c1cc[nH]c1",  # pyrrole
    "C1=CNC=C1",  # pyrrole, written kekulized
    "c1ccoc1",  # furan
    "c1ccsc1",  # thiophene
    "c1ccc2[nH]ccc2c1",  # indole
    "c1c[nH]cn1",  # imidazole
    "Cc1ccc(S(=O)(=O)N2CCN(c3ncccn3)CC2)cc1",  # MOSES-like drugs
    "O=C(Nc1ccc2[nH]ncc2c1)c1cccs1",
    "COc1ccc(-c2nc3ccccc3o2)cc1Cl",
]


@pytest.fixture(scope="module")
def kekule_vocab() -> Vocab:
    return Vocab(KEKULE_DRUG_ATOMS, max_atoms=27)


@pytest.fixture(scope="module")
def aromatic_vocab() -> Vocab:
    return Vocab((*KEKULE_DRUG_ATOMS, "NH"), max_atoms=27, bonds=AROMATIC_BOND_TYPES)


def test_aromatic_vocab_properties(kekule_vocab: Vocab, aromatic_vocab: Vocab) -> None:
    assert aromatic_vocab.aromatic and not kekule_vocab.aromatic
    assert aromatic_vocab.num_bond_types == 5 and AROMATIC_BOND == 4
    assert aromatic_vocab.bonds[AROMATIC_BOND] == "aromatic"
    assert aromatic_vocab.hydrogens == (0,) * len(KEKULE_DRUG_ATOMS) + (1,)
    assert aromatic_vocab.atomic_numbers[-1] == 7 and aromatic_vocab.charges[-1] == 0
    d = json.loads(json.dumps(aromatic_vocab.to_dict()))
    assert d["bonds"] == list(AROMATIC_BOND_TYPES)
    assert Vocab.from_dict(d) == aromatic_vocab
    # Same atoms, other bonds: another vocabulary (and another cache, codec, checkpoint shape).
    assert Vocab(KEKULE_DRUG_ATOMS, 27, AROMATIC_BOND_TYPES) != kekule_vocab
    # A vocabulary saved before aromatic bonds existed has no "bonds" key: kekulized, as before.
    old = Vocab.from_dict({"atoms": list(KEKULE_DRUG_ATOMS), "max_atoms": 27})
    assert old == kekule_vocab and not old.aromatic and old.bonds == BOND_TYPES


@pytest.mark.parametrize("smiles", AROMATIC_MOLECULES)
def test_aromatic_molecules_round_trip_in_both_modes(smiles: str, kekule_vocab: Vocab,
                                                     aromatic_vocab: Vocab) -> None:
    mol = to_mol(smiles)
    aromatic_bonds = sum(b.GetIsAromatic() for b in mol.GetBonds())
    assert aromatic_bonds >= 5
    for vocab in (kekule_vocab, aromatic_vocab):
        a, b = encode(smiles, vocab)
        assert decode(a, b, vocab) == canonical_smiles(smiles), vocab.bonds
        assert decode_and_validate(a[None], b[None], vocab) == ([canonical_smiles(smiles)], [True])
        assert int((torch.triu(b) == AROMATIC_BOND).sum()) == (aromatic_bonds if vocab.aromatic
                                                               else 0)
    # Pyrrole-type nitrogens, and only they, carry their hydrogen in the label.
    a, _ = encode(smiles, aromatic_vocab)
    assert int((a == aromatic_vocab.atom_index["NH"]).sum()) == sum(
        atom.GetIsAromatic() and atom.GetSymbol() == "N" and atom.GetTotalNumHs() == 1
        for atom in mol.GetAtoms())


def test_hydrogen_labels_follow_the_molecule_not_its_spelling(aromatic_vocab: Vocab) -> None:
    # "[cH]" spells out a hydrogen RDKit would infer anyway: a plain C. Aliphatic atoms keep
    # implicit hydrogens whatever the SMILES says ("[NH2]" is a plain N).
    a, _ = encode("[cH]1ccccc1[NH2]", aromatic_vocab)
    assert a[:7].tolist() == [1] * 6 + [aromatic_vocab.atom_index["N"]]
    without_nh = Vocab(KEKULE_DRUG_ATOMS, max_atoms=27, bonds=AROMATIC_BOND_TYPES)
    with pytest.raises(EncodeError) as info:
        encode("c1cc[nH]c1", without_nh)
    assert info.value.reason == "unsupported_atom" and "NH" in str(info.value)
    encode("c1ccncc1", without_nh)  # pyridine's N has no hydrogen to state


@pytest.mark.parametrize(("labels", "bonds", "expected"), [
    (["C", "C"], {(0, 1): AROMATIC_BOND}, None),  # an aromatic bond outside a ring
    (["C", "C", "C"], {(0, 1): AROMATIC_BOND, (1, 2): AROMATIC_BOND}, None),
    (["C"] * 5, {(k, (k + 1) % 5): AROMATIC_BOND for k in range(5)}, None),  # no kekule form
    (["N"] + ["C"] * 4, {(k, (k + 1) % 5): AROMATIC_BOND for k in range(5)}, None),  # no H on N
    (["NH"] + ["C"] * 4, {(k, (k + 1) % 5): AROMATIC_BOND for k in range(5)}, "c1cc[nH]c1"),
    (["NH"] + ["C"] * 5, {(k, (k + 1) % 6): AROMATIC_BOND for k in range(6)}, None),
    (["C"] * 6, {(k, (k + 1) % 6): AROMATIC_BOND for k in range(6)}, "c1ccccc1"),
    # A kekulizable ring that is not aromatic decodes as what it is.
    (["C"] * 8, {(k, (k + 1) % 8): AROMATIC_BOND for k in range(8)}, "C1=CC=CC=CC=C1"),
    (["C", "NH", "C"], {(0, 1): 1, (1, 2): 1}, "CNC"),  # an H label in a chain
    (["C", "NH", "C", "C"], {(0, 1): 1, (1, 2): 1, (1, 3): 1}, None),  # NH has room for 2
    (["C", "NH", "C"], {(0, 1): 1, (1, 2): 2}, None),
])
def test_aromatic_graphs_decode_strictly(labels: list[str], bonds: dict[tuple[int, int], int],
                                         expected: str | None, aromatic_vocab: Vocab) -> None:
    a, b = _graph(aromatic_vocab, labels, bonds)
    assert decode(a, b, aromatic_vocab) == expected
    assert decode_batch(a[None], b[None], aromatic_vocab) == [expected]
    assert decode_and_validate(a[None], b[None], aromatic_vocab)[1] == [expected is not None]


def test_a_radical_decodes_but_is_not_valid(aromatic_vocab: Vocab) -> None:
    # NH with one bond keeps its fixed hydrogen: RDKit sanitizes the radical C[NH], and strict
    # validity, which the reward pays for, refuses it.
    a, b = _graph(aromatic_vocab, ["C", "NH"], {(0, 1): 1})
    smiles = decode(a, b, aromatic_vocab)
    assert smiles is not None and is_valid_loose(smiles)
    assert not is_valid(smiles) and not is_valid("[CH3]")
    assert decode_and_validate(a[None], b[None], aromatic_vocab)[1] == [False]
    assert is_valid("CN")


@pytest.fixture(scope="module")
def qm9_aromatic_smiles(qm9_smiles: list[str]) -> list[str]:
    """About 1,000 QM9 molecules with an aromatic ring (the file spells them kekulized)."""
    rng = np.random.default_rng(4321)
    sample = [qm9_smiles[i] for i in rng.choice(len(qm9_smiles), 6000, replace=False)]
    return [s for s in sample if any(a.GetIsAromatic() for a in to_mol(s).GetAtoms())]


def test_aromatic_round_trip_on_qm9(qm9_smiles: list[str], qm9_aromatic_smiles: list[str]) -> None:
    vocab = Vocab((*QM9_ATOMS, "NH", "CH-"), max_atoms=9, bonds=AROMATIC_BOND_TYPES)
    rng = np.random.default_rng(1234)
    sample = [qm9_smiles[i] for i in rng.choice(len(qm9_smiles), 2000, replace=False)]
    sample += qm9_aromatic_smiles
    assert sum("[nH]" in canonical_smiles(s) for s in sample) > 100
    atoms, bonds, expected = _encoded(sample, vocab)
    assert int((bonds == AROMATIC_BOND).sum()) > 1000
    assert decode_batch(atoms, bonds, vocab) == expected


def _aromatic_test_graphs(vocab: Vocab, aromatic_smiles: list[str], seed: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Molecules with aromatic rings, encoded with aromatic bonds, two thirds of them changed:
    an atom relabelled (H labels and charges included) and a pair given a random bond type."""
    rng = np.random.default_rng(seed)
    graphs = []
    for s in aromatic_smiles:
        try:
            graphs.append(encode(s, vocab))
        except EncodeError:
            continue
    atoms = torch.stack([g[0] for g in graphs])
    bonds = torch.stack([g[1] for g in graphs])
    for k in range(len(graphs)):
        if k % 3 == 0:
            continue  # a third stay as they are
        atoms[k, int(rng.integers(9))] = int(rng.integers(1, vocab.num_atom_types))
        i, j = rng.choice(9, 2, replace=False)
        bonds[k, i, j] = bonds[k, j, i] = int(rng.integers(0, vocab.num_bond_types))
    return atoms, bonds


def test_valence_precheck_never_rejects_what_rdkit_accepts(qm9_aromatic_smiles: list[str]
                                                          ) -> None:
    # decode() asks RDKit about every graph; decode_batch() rejects over-valent ones first.
    # Equal results mean the shortcut rejected nothing RDKit accepts, with aromatic bonds
    # counted at their least order and fixed hydrogens using valence.
    vocab = Vocab(("*", "C", "N", "O", "F", "S", "NH", "N+", "O-", "C-", "O+", "S+", "NH+",
                   "CH-", "B", "P", "PH"), max_atoms=9, bonds=AROMATIC_BOND_TYPES)
    atoms, bonds = _aromatic_test_graphs(vocab, qm9_aromatic_smiles, seed=2)
    rng = np.random.default_rng(9)
    for p_bond in ([0.6, 0.1, 0.05, 0.05, 0.2], [0.4, 0.1, 0.1, 0.1, 0.3]):  # random graphs
        atoms = torch.cat([atoms, torch.from_numpy(rng.integers(0, vocab.num_atom_types,
                                                                (2000, 9)))])
        bonds = torch.cat([bonds, torch.from_numpy(rng.choice(5, size=(2000, 9, 9), p=p_bond))])
    expected = [decode(a, b, vocab) for a, b in zip(atoms, bonds, strict=True)]
    assert decode_batch(atoms, bonds, vocab) == expected
    with_aromatic = [e for e, b in zip(expected, bonds, strict=True)
                     if e is not None and bool((torch.triu(b) == AROMATIC_BOND).any())]
    assert len(with_aromatic) > 300 and sum(e is None for e in expected) > 3000
