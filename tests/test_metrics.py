import math
import sys

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator

from molgan.chem import is_valid
from molgan.metrics import (
    SampleMetrics,
    evaluate_smiles,
    frechet_distance,
    internal_diversity,
    properties,
    sa_score,
)

# Small C/N/O/F molecules of up to 9 heavy atoms, canonical non-isomeric SMILES.
QM9_LIKE = [
    Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False)
    for s in [
        "CC1=CC=CO1", "OCC1CC1", "CC(C)C#N", "O=C1CCCN1", "CC1(C)CC1O", "NC(=O)C1CC1",
        "CC(O)C(N)=O", "C1=COC=N1", "OC1CCOC1", "CC#CC(C)O", "N#CC1=CNC=C1", "CC1CC(=O)O1",
        "CN1CCC1=O", "OCC#CCO", "C1CC2CC1O2", "CC(=O)NC=O", "FC1=CC=CN=C1", "CCC1(O)CC1",
        "O=CC1=CC=CO1", "NC1=NC=CO1", "CC12CC1CO2", "CC(C)(O)C#C", "OC1=CC=NN1", "CCN(C)C=O",
        "N#CCC1CO1", "CC1=NOC(C)=C1", "C1CN2CC2O1", "OCC(F)(F)F", "CC1COC(=O)N1", "NCC1=CC=CN1",
        "CC(C)CC(N)=O", "O=C1C=CC(=O)N1", "COC1CC(C)O1", "CC1=CN=C(N)O1", "C#CC1(O)CCC1",
        "CC(=O)C1(C)CO1", "OC1C2CC1C2", "CC1=C(C)N=CO1", "NC(=O)CC#N", "CCOC(=O)C=O",
    ]
]
CHAINS = [
    "C" * k for k in range(3, 10)
] + ["CC(C)C", "CCC(C)C", "CCCC(C)C", "CC(C)CC(C)C", "CCCCC(C)C", "CC(C)(C)C", "CCC(C)CC"]


def test_qm9_like_fixture_is_canonical_and_distinct():
    assert len(set(QM9_LIKE)) == len(QM9_LIKE) == 40
    assert all(is_valid(s) for s in QM9_LIKE + CHAINS)


def test_properties_of_known_molecules_match_rdkit():
    benzene = properties("c1ccccc1")
    assert benzene["logp"] == pytest.approx(1.6866, abs=1e-4)  # Crippen value
    assert benzene["qed"] == pytest.approx(0.4426, abs=1e-4)
    assert benzene["sa"] == pytest.approx(1.0, abs=1e-6)  # SA clips at its easy end
    assert benzene["mol_weight"] == pytest.approx(78.114, abs=1e-3)
    ethanol = properties("CCO")
    assert ethanol["logp"] == pytest.approx(-0.0014, abs=1e-4)
    assert ethanol["mol_weight"] == pytest.approx(46.069, abs=1e-3)
    for s in QM9_LIKE[:10]:
        mol = Chem.MolFromSmiles(s)
        got = properties(s)
        assert got["qed"] == pytest.approx(QED.qed(mol))
        assert got["logp"] == pytest.approx(Crippen.MolLogP(mol))
        assert got["mol_weight"] == pytest.approx(Descriptors.MolWt(mol))
        assert 1.0 <= got["sa"] <= 10.0


def test_sa_score_orders_simple_above_strained():
    simple = sa_score(Chem.MolFromSmiles("CCO"))
    strained = sa_score(Chem.MolFromSmiles("C1C2CC3C1C23"))  # fused small rings, bridgeheads
    assert simple < strained
    with pytest.raises(ValueError):
        sa_score(Chem.Mol())


@pytest.mark.parametrize("bad", ["xx", "C(C)(C)(C)(C)C", ""])
def test_properties_rejects_unparseable(bad):
    with pytest.raises(ValueError, match="does not parse"):
        properties(bad)


def _rdkit_tanimoto_diversity(smiles):
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    dists = [
        1.0 - DataStructs.TanimotoSimilarity(fps[i], fps[j])
        for i in range(len(fps))
        for j in range(i + 1, len(fps))
    ]
    return float(np.mean(dists))


def test_internal_diversity_exact_matches_rdkit_tanimoto():
    got = internal_diversity(QM9_LIKE)
    assert got == pytest.approx(_rdkit_tanimoto_diversity(QM9_LIKE), abs=1e-12)
    assert internal_diversity(["CCO", "CCO"]) == 0.0  # identical fingerprints
    assert internal_diversity(["CCO", "c1ccccc1"]) == pytest.approx(1.0)  # no shared bits
    assert internal_diversity(["CCO"]) == 0.0
    assert internal_diversity([]) == 0.0


def test_internal_diversity_sampling_is_deterministic_and_close():
    exact = internal_diversity(QM9_LIKE)  # 780 pairs
    a = internal_diversity(QM9_LIKE, max_pairs=300, seed=1)
    b = internal_diversity(QM9_LIKE, max_pairs=300, seed=1)
    c = internal_diversity(QM9_LIKE, max_pairs=300, seed=2)
    assert a == b
    assert a != c
    assert abs(a - exact) < 0.03 and abs(c - exact) < 0.03


def test_internal_diversity_errors():
    with pytest.raises(ValueError):
        internal_diversity(["CCO", "xx"])
    with pytest.raises(ValueError):
        internal_diversity(["CCO", "CCN"], max_pairs=0)


def test_evaluate_hand_computed_example():
    samples = ["CCO", "CCO", "C.C", None, "c1ccccc1"]
    m = evaluate_smiles(samples, {"CCO"})
    assert isinstance(m, SampleMetrics)
    assert m.n == 5
    assert m.validity == pytest.approx(3 / 5)  # CCO, CCO, benzene
    assert m.validity_loose == pytest.approx(4 / 5)  # + C.C
    assert m.uniqueness == pytest.approx(2 / 3)  # {CCO, benzene} of 3 valid
    assert m.novelty == pytest.approx(1 / 2)  # benzene is new, CCO is in training
    assert m.vun == pytest.approx(1 / 5)
    ethanol, benzene = properties("CCO"), properties("c1ccccc1")
    assert m.qed_mean == pytest.approx((ethanol["qed"] + benzene["qed"]) / 2)
    assert m.logp_mean == pytest.approx((-0.0014 + 1.6866) / 2, abs=1e-4)
    assert m.sa_mean == pytest.approx((ethanol["sa"] + benzene["sa"]) / 2)
    assert m.internal_diversity == pytest.approx(1.0)
    assert m.fcd is None
    d = m.to_dict()
    assert d["validity"] == m.validity and d["n"] == 5 and set(d) == {
        "n", "validity", "validity_loose", "uniqueness", "novelty", "vun", "qed_mean",
        "sa_mean", "logp_mean", "internal_diversity", "fcd",
    }


def test_evaluate_judges_samples_as_written():
    # A hypervalent nitro group is neither valid nor loosely valid (RDKit's clean-up would
    # repair it); "C1.C1" is one fragment (ethane) although its SMILES holds a ".".
    m = evaluate_smiles(["CN(=O)=O", "C1.C1", "CC.O"], {"CC"})
    assert m.validity == pytest.approx(1 / 3)
    assert m.validity_loose == pytest.approx(2 / 3)
    assert m.novelty == 0.0  # C1.C1 is the training molecule CC


def test_evaluate_reads_explicit_hydrogens_as_hydrogen_counts():
    # "[H]C1CC1" is cyclopropane; its properties and fingerprint need the ring perceived.
    m = evaluate_smiles(["[H]C1CC1", "C1CC1", "[H]OC(=O)C"], set())
    assert (m.validity, m.uniqueness) == (1.0, pytest.approx(2 / 3))
    assert m.qed_mean == pytest.approx((properties("C1CC1")["qed"] + properties("CC(=O)O")["qed"]) / 2)
    assert m.internal_diversity == pytest.approx(internal_diversity(["C1CC1", "CC(=O)O"]))


def test_evaluate_compares_molecules_not_spellings():
    m = evaluate_smiles(["OCC", "CCO", "C(O)C", "CCN"], {"CCO"})
    assert m.validity == 1.0
    assert m.uniqueness == pytest.approx(2 / 4)
    assert m.novelty == pytest.approx(1 / 2)  # only CCN is new
    assert m.vun == pytest.approx(1 / 4)


def test_evaluate_empty_denominators_are_zero():
    empty = evaluate_smiles([], set())
    assert empty.n == 0
    assert all(v == 0.0 for k, v in empty.to_dict().items() if k not in ("n", "fcd"))
    junk = evaluate_smiles([None, "xx", "C.C"], set())
    assert junk.validity == 0.0 and junk.validity_loose == pytest.approx(1 / 3)
    assert junk.uniqueness == junk.novelty == junk.vun == junk.qed_mean == 0.0


def test_evaluate_novelty_against_training_set():
    m = evaluate_smiles(QM9_LIKE, set(QM9_LIKE[:30]))
    assert m.uniqueness == 1.0
    assert m.novelty == pytest.approx(10 / 40)
    assert m.vun == pytest.approx(10 / 40)
    assert m.internal_diversity == pytest.approx(internal_diversity(QM9_LIKE))


def test_evaluate_fcd_needs_reference():
    pytest.importorskip("fcd")
    with pytest.raises(ValueError, match="reference_smiles"):
        evaluate_smiles(["CCO", "CCN"], set(), compute_fcd=True)


def test_evaluate_fcd_missing_extra_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "fcd", None)  # makes `import fcd` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'molgan\[fcd\]'"):
        evaluate_smiles(["CCO", "CCN"], set(), reference_smiles=["CCO", "CCN"], compute_fcd=True)


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # Same covariance: the trace terms cancel and only the mean difference remains.
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(float((mu1 - mu2) @ (mu1 - mu2)))
    # Diagonal covariances: sum of (sqrt(s1) - sqrt(s2))^2.
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    zero = np.zeros(3)
    assert frechet_distance(zero, s1, zero, s2) == pytest.approx(1.0 + 0.0 + 4.0)
    # Singular covariances stay real and finite.
    assert math.isfinite(frechet_distance(zero, np.zeros((3, 3)), zero, s2))


def test_fcd_same_set_is_zero_and_chains_are_far():
    pytest.importorskip("fcd")
    same = evaluate_smiles(QM9_LIKE, set(), reference_smiles=QM9_LIKE, compute_fcd=True)
    assert same.fcd is not None and abs(same.fcd) < 1e-3
    half = evaluate_smiles(QM9_LIKE[:20], set(), reference_smiles=QM9_LIKE, compute_fcd=True)
    chains = evaluate_smiles(CHAINS, set(), reference_smiles=QM9_LIKE, compute_fcd=True)
    assert chains.fcd is not None and half.fcd is not None
    assert chains.fcd > 5.0
    assert chains.fcd > 3 * half.fcd
    # Too few valid samples: no FCD rather than a meaningless number.
    one = evaluate_smiles(["CCO", None], set(), reference_smiles=QM9_LIKE, compute_fcd=True)
    assert one.fcd is None
