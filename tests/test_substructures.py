"""molgan.substructures on molecules whose counts can be checked by hand, and
experiments/substructures.py on a real checkpoint and real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rdkit import Chem

from molgan.evaluation import dataset_splits
from molgan.sampling import MoleculeSampler
from molgan.substructures import (
    bond_label,
    compare,
    profile,
    ring_system_extremes,
    ring_systems,
)

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "substructures.py"


def bond_labels(smiles: str) -> list[str]:
    return sorted(bond_label(b) for b in Chem.MolFromSmiles(smiles).GetBonds())


def test_bond_labels_name_elements_lighter_first_and_the_order() -> None:
    assert bond_labels("CC#N") == ["C#N", "C-C"]
    assert bond_labels("NC=O") == ["C-N", "C=O"]
    assert bond_labels("c1ccncc1") == ["C:C"] * 4 + ["C:N"] * 2
    assert bond_labels("NN") == ["N-N"]
    # Elements beyond QM9's: nothing is limited to C, N, O, F.
    assert bond_labels("ClC(=S)Br") == ["C-Br", "C-Cl", "C=S"]


@pytest.mark.parametrize(
    ("smiles", "systems"),
    [
        ("CCO", []),
        ("CC1CC1O", ["C1CC1"]),
        ("OC1CN1", ["C1CN1"]),
        ("C1C2CC12", ["C1C2CC12"]),  # fused: bicyclobutane is one system
        ("C1CC2(C1)CO2", ["C1CC2(C1)CO2"]),  # spiro: one system
        ("C1CC1CC1CN1", ["C1CC1", "C1CN1"]),  # two rings joined by a chain: two systems
        # Substituents become hydrogens: a ring is spelled one way whatever it carries.
        ("O=C1C=CC1", ["C1=CCC1"]),
        ("CC1=CCC1", ["C1=CCC1"]),
        ("Cc1cc[nH]c1", ["c1cc[nH]c1"]),
        ("Cn1cccc1", ["c1cc[nH]c1"]),
        ("c1ccncc1", ["c1ccncc1"]),
        ("Cc1ccc2[nH]ccc2c1", ["c1ccc2[nH]ccc2c1"]),
        # Aromatic only with its C=O: the ring keeps its aromatic flags as they were.
        ("O=c1cccc[nH]1", ["c1cc[nH]cc1"]),
    ],
)
def test_ring_systems(smiles: str, systems: list[str]) -> None:
    assert ring_systems(Chem.MolFromSmiles(smiles)) == systems


def test_profile_counts_by_hand() -> None:
    p = profile(["CC1CC1", "CC1CC1", "C1CN1C1CN1", "C[N+](C)(C)C", "OCC#N", None, "C.C", "CF(C)(C)", "xyz"])
    # None, a two-fragment SMILES, an over-valent F and an unparseable string are skipped.
    assert (p.molecules, p.skipped) == (5, 4)
    assert p.atoms == 4 + 4 + 6 + 5 + 4
    assert p.bonds == 4 + 4 + 7 + 4 + 3
    assert p.acyclic == 2
    assert p.ring_sizes == {3: 3}  # a molecule with two aziridines counts once
    assert p.ring_systems == {"C1CC1": 2, "C1CN1": 1}
    assert p.heavy_atoms == {4: 3, 6: 1, 5: 1}
    assert p.atom_types == {"C": 4 + 4 + 4 + 4 + 2, "N": 2 + 1, "N+": 1, "O": 1}
    assert p.bond_types["C-C"] == 4 + 4 + 2 + 0 + 1
    assert p.bond_types["C-N"] == 0 + 0 + 5 + 4 + 0
    assert p.bond_types["C#N"] == 1
    shares = p.shares()
    assert shares["ring size"] == {"no ring": 2 / 5, "3-ring": 3 / 5}
    assert shares["bond type"]["C#N"] == pytest.approx(1 / 22)
    assert shares["atom type"]["N+"] == pytest.approx(1 / 23)
    assert sum(shares["heavy atoms"].values()) == pytest.approx(1.0)


def test_profile_of_nothing_valid_is_empty_not_an_error() -> None:
    p = profile([None, "C1CC"])
    assert (p.molecules, p.skipped, p.bonds) == (0, 2, 0)
    assert p.shares()["ring size"] == {"no ring": 0.0}


def test_compare_lists_every_feature_of_either_side() -> None:
    reference = profile(["CC", "CCO"])
    sample = profile(["NN", "CC"])
    rows = {(r.group, r.feature): r for r in compare(reference, [sample, reference])}
    nn = rows["bond type", "N-N"]
    assert (nn.reference, nn.samples) == (0.0, (0.5, 0.0))
    assert nn.ratios == (float("inf"), 1.0)
    cc = rows["bond type", "C-C"]
    assert cc.reference == pytest.approx(2 / 3) and cc.samples[0] == pytest.approx(0.5)
    assert cc.ratios[0] == pytest.approx(0.75)
    assert rows["heavy atoms", "2"].samples == (1.0, 0.5)
    groups = [r.group for r in compare(reference, [sample])]
    assert groups == sorted(groups, key=["ring size", "bond type", "atom type", "heavy atoms"].index)


def test_ring_system_extremes_smooth_and_sort() -> None:
    sample = profile(["CC1CC1", "OC1CC1", "CN1NC1"])
    reference = profile(["C1CC1", "c1ccccc1"])
    over, under = ring_system_extremes(sample, reference, top=5)
    # (count + 1) / (molecules + 1) on each side.
    assert [(r.system, r.sample_count, r.reference_count) for r in over] == [
        ("C1NN1", 1, 0),
        ("C1CC1", 2, 1),
    ]
    assert over[0].ratio == pytest.approx((2 / 4) / (1 / 3))
    assert over[1].ratio == pytest.approx((3 / 4) / (2 / 3))
    assert [(r.system, r.ratio) for r in under] == [("c1ccccc1", pytest.approx((1 / 4) / (2 / 3)))]
    assert ring_system_extremes(sample, reference, top=1)[0] == over[:1]
    with pytest.raises(ValueError, match="pseudocount"):
        ring_system_extremes(sample, reference, pseudocount=0)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_script_compares_a_checkpoint_and_a_file_with_a_split(
    toy_checkpoint: Path, tmp_path: Path
) -> None:
    smi = tmp_path / "ablation-run.smi"
    smi.write_text("CC1CN1\nNN\nnot-a-smiles\nCC1CN1\n")
    png = tmp_path / "substructures.png"
    result = run_script(str(toy_checkpoint), str(smi), "-n", "60", "--reference", "test", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert png.stat().st_size > 10_000
    # The reference is the test split of the checkpoint's own dataset.
    sampler = MoleculeSampler.load(toy_checkpoint)
    test_split = dataset_splits(sampler.config.data)[2]
    reference = profile(test_split)
    toy = profile([s.smiles for s in sampler.sample(60, seed=0)])
    assert sampler.config.data.path is not None
    name = f"{Path(sampler.config.data.path).name} test"
    assert f"{name}: {reference.molecules:,} valid molecules counted, 0 skipped" in out
    assert f"{toy_checkpoint}: {toy.molecules:,} valid molecules counted, {toy.skipped:,} skipped" in out
    assert f"{smi}: 3 valid molecules counted, 1 skipped" in out
    # The file's N-N share: 1 of 4 + 4 + 1 bonds; the 300 QM9 molecules have none.
    nn_row = next(line for line in out.splitlines() if line.startswith("| bond type | N-N |"))
    assert nn_row.split("|")[-3:-1] == [" 11.1% ", " new "]
    assert "`C1CN1`" in out


def test_script_reference_file_and_bad_source(tmp_path: Path) -> None:
    ref = tmp_path / "ref.smi"
    ref.write_text("CC\nCCO\n")
    smi = tmp_path / "samples.smi"
    smi.write_text("CC\nNN\n")
    result = run_script(str(smi), "--reference", str(ref))
    assert result.returncode == 0, result.stderr
    assert "| bond type | C-C | 66.7% | 50.0% | x0.75 |" in result.stdout
    bad = run_script(str(tmp_path / "missing.smi"))
    assert bad.returncode == 2
    assert "SOURCE" in bad.stderr.splitlines()[-1] and "Traceback" not in bad.stderr
