"""MOSES metrics: against molsets' own code where it runs, and by their properties everywhere."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rdkit import Chem

from molgan.filters import passes_filters
from molgan.moses_files import moses_file
from molgan.moses_metrics import (
    _chemnet_statistics_file,
    _tanimoto_blocks,
    fingerprints,
    internal_diversity,
    load_reference,
    moses_metrics,
    nearest_neighbour_similarity,
    scaffold,
)

LIMIT = 1_000  # reference molecules per test set in these tests


def _column(name: str, count: int, skip: int = 0, step: int = 1) -> list[str]:
    """``count`` SMILES of a MOSES file: from line ``skip`` on, every ``step``-th."""
    with gzip.open(moses_file(name), "rt") as f:
        next(f)
        return [line.strip() for line in itertools.islice(f, skip, skip + count * step, step)]


@pytest.fixture(scope="module")
def generated(qm9_smiles: list[str]) -> list[str | None]:
    """A sample that exercises every branch: drug-like training molecules, small QM9 ones,
    repeats, fragments, a hypervalent nitro spelling, unreadable strings and a missing sample."""
    train = _column("train", 300, skip=5_000)
    return (train + qm9_smiles[:200:2] + train[:40] + ["CCO.C", "CN(=O)=O", "C1CC", "", "xyz"]
            + [None])


@pytest.fixture(scope="module")
def ours(generated: list[str | None], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return moses_metrics(generated, reference_limit=LIMIT,
                         cache_dir=tmp_path_factory.mktemp("moses-cache"))


# --------------------------------------------------------------------------- against molsets

ORACLE_PACKAGES = ("pandas", "scipy", "fcd_torch")
needs_oracle = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ORACLE_PACKAGES),
    reason=f"molsets' metric code needs {', '.join(ORACLE_PACKAGES)}")


def _molsets_metrics() -> Any:
    """``moses.metrics`` as molsets 0.3.1 ships it, made to import under pandas 2."""
    import types

    import pandas as pd

    if "rdkit.six" not in sys.modules:
        # molsets' copies of the SA and NP scorers import rdkit.six, which RDKit no longer ships.
        six = types.ModuleType("rdkit.six")
        six.iteritems = lambda d: iter(d.items())  # type: ignore[attr-defined]
        sys.modules["rdkit.six"] = six
    if not hasattr(pd.DataFrame, "append"):
        # molsets joins its two alert tables with DataFrame.append, which pandas 2 removed.
        pd.DataFrame.append = lambda self, other, sort=False: pd.concat([self, other], sort=sort)
    import moses.metrics.metrics as metrics

    return metrics


@pytest.fixture(scope="module")
def oracle(generated: list[str | None]) -> dict[str, Any]:
    metrics = _molsets_metrics()
    # molsets' validity reads every sample as a string; a missing sample is an empty one.
    gen = ["" if s is None else s for s in generated]
    return metrics.get_all_metrics(
        gen, test=_column("test", LIMIT), test_scaffolds=_column("test_scaffolds", LIMIT))


@needs_oracle
@pytest.mark.slow
def test_every_metric_but_fcd_equals_molsets(ours: dict[str, Any],
                                             oracle: dict[str, Any]) -> None:
    # FCD: molsets recomputes the statistics of the shortened test sets; ours keeps the
    # published ones. Compared on their own below.
    keys = [k for k in oracle if not k.startswith("FCD") and k not in ("logP", "SA", "QED",
                                                                           "weight")]
    assert len(keys) == 15 - 2
    for key in keys:
        assert ours[key] == pytest.approx(oracle[key], abs=1e-6), key


@needs_oracle
@pytest.mark.slow
def test_fcd_equals_molsets_against_the_published_statistics(
    generated: list[str | None], ours: dict[str, Any]
) -> None:
    from moses.dataset import get_statistics

    metrics = _molsets_metrics()
    valid = metrics.remove_invalid(["" if s is None else s for s in generated])
    for stats, suffix in (("test", "Test"), ("test_scaffolds", "TestSF")):
        theirs = metrics.FCDMetric()(gen=valid, pref=get_statistics(stats)["FCD"])
        # fcd 1.2.2 and fcd_torch run the same ChemNet weights; float32 sums differ slightly.
        assert ours[f"FCD/{suffix}"] == pytest.approx(theirs, rel=1e-3), suffix


@needs_oracle
def test_published_statistics_are_read_without_unpickling() -> None:
    _molsets_metrics()
    from moses.dataset import get_statistics

    for name in ("test_stats", "test_scaffolds_stats"):
        mu, sigma = _chemnet_statistics_file(moses_file(name))
        published = get_statistics(name.removesuffix("_stats"))["FCD"]
        np.testing.assert_array_equal(mu, published["mu"])
        np.testing.assert_array_equal(sigma, published["sigma"])


# --------------------------------------------------------------------------- without molsets


def test_every_reported_figure_is_there_and_in_range(ours: dict[str, Any],
                                                      generated: list[str | None]) -> None:
    assert ours["n"] == len(generated)
    for key in ("valid", "valid_strict", "unique@1000", "unique@10000", "SNN/Test", "Frag/Test",
                "Scaf/Test", "SNN/TestSF", "Frag/TestSF", "Scaf/TestSF", "IntDiv", "IntDiv2",
                "Filters", "Novelty"):
        assert 0.0 <= ours[key] <= 1.0, key
    assert ours["FCD/Test"] > 0 and ours["FCD/TestSF"] > 0
    assert ours["rings_mean"] >= ours["aromatic_rings_mean"] > 0
    assert 0 < ours["qed_mean"] < 1


def test_validity_counts_what_rdkit_reads_and_strict_validity_what_molgan_accepts(
    ours: dict[str, Any], generated: list[str | None]
) -> None:
    # Unreadable: "C1CC" (open ring), "" , "xyz", None. "CCO.C" and "CN(=O)=O" are valid for
    # MOSES (fragments allowed, nitro repaired) but not strictly.
    n = len(generated)
    assert ours["valid"] == (n - 4) / n
    assert ours["valid_strict"] == (n - 6) / n


def test_training_molecules_are_not_novel(ours: dict[str, Any]) -> None:
    # 300 MOSES training molecules and 100 QM9 ones (plus 2 others that no ZINC lead is):
    # Novelty counts only the latter.
    distinct = 300 + 100 + 2
    assert ours["Novelty"] == pytest.approx(102 / distinct)


def test_unique_at_k_counts_the_first_k_valid_molecules() -> None:
    samples = ["CCO", "OCC", None, "c1ccccc1", "xyz"] + ["CCN"] * 997 + ["CCCl"] * 10
    metrics = moses_metrics(samples, fcd=False, reference_limit=50, training=[])
    # The first 1,000 valid: CCO twice (two spellings), benzene, and 997 CCN -> 3 distinct.
    assert metrics["unique@1000"] == pytest.approx(3 / 1000)
    assert metrics["unique@10000"] == pytest.approx(4 / 1010)
    assert "FCD/Test" not in metrics
    assert metrics["Novelty"] == 1.0


def test_train_row_of_the_paper_on_a_training_sample(tmp_path: Path) -> None:
    """The MOSES paper's "Train" row is the training set scored as if generated. On 2,000 of its
    molecules: everything valid and unique, (almost) nothing novel, every molecule passes the filters
    (the dataset was built with them), and internal diversity near the published 0.8567 / 0.8508.
    """
    # Spread over the whole file, which is not in random order.
    train = _column("train", 2_000, step=792)
    m = moses_metrics(train, fcd=False, reference_limit=2_000, cache_dir=tmp_path)
    assert m["valid"] == m["valid_strict"] == m["unique@1000"] == 1.0
    assert m["Filters"] == 1.0
    # Novelty compares SMILES strings, as MOSES does: today's RDKit writes 1 of these 2,000
    # training SMILES differently from the file, which makes it "novel".
    assert m["Novelty"] <= 0.001
    assert m["IntDiv"] == pytest.approx(0.8567, abs=0.005)
    assert m["IntDiv2"] == pytest.approx(0.8508, abs=0.005)
    assert m["Frag/Test"] > 0.95


def test_snn_is_one_for_molecules_of_the_reference_set(tmp_path: Path) -> None:
    reference = load_reference("test", limit=200, cache_dir=tmp_path)
    assert reference.size == 200
    assert nearest_neighbour_similarity(reference.fingerprints[:50], reference.fingerprints) == 1.0


def test_reference_statistics_are_cached_by_file_and_limit(tmp_path: Path) -> None:
    first = load_reference("test_scaffolds", limit=100, cache_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "moses").iterdir())
    assert len(files) == 2 and {Path(f).suffix for f in files} == {".json", ".safetensors"}
    again = load_reference("test_scaffolds", limit=100, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.fingerprints, again.fingerprints)
    assert first.fragments == again.fragments and first.scaffolds == again.scaffolds
    assert json.loads((tmp_path / "moses" / files[0]).read_text())["size"] == 100
    load_reference("test_scaffolds", limit=101, cache_dir=tmp_path)
    assert len(list((tmp_path / "moses").iterdir())) == 4


def _exact_tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = np.bitwise_count(a[:, None, :] & b[None, :, :]).sum(-1)
    either = np.bitwise_count(a[:, None, :] | b[None, :, :]).sum(-1)
    return np.where(either > 0, both / np.maximum(either, 1), 1.0)


def test_tanimoto_blocks_are_exact() -> None:
    mols = [Chem.MolFromSmiles(s) for s in _column("test", 300)] + [Chem.MolFromSmiles("[He]")]
    packed = fingerprints(mols)
    exact = _exact_tanimoto(packed, packed)
    got = np.zeros_like(exact)
    for r, c, sim in _tanimoto_blocks(packed, packed, block=64):
        got[r, c] = sim.numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-6)
    assert got[-1, -1] == 1.0  # no bits on either side: the same (empty) set


def test_internal_diversity_of_copies_is_zero_and_of_disjoint_molecules_is_below_one() -> None:
    benzene = fingerprints([Chem.MolFromSmiles("c1ccccc1")] * 3)
    assert internal_diversity(benzene) == pytest.approx(0.0)
    pair = fingerprints([Chem.MolFromSmiles("C"), Chem.MolFromSmiles("O")])  # no common bit
    # mean over ordered pairs, self-pairs included: half the pairs are (x, x).
    assert internal_diversity(pair) == pytest.approx(0.5)
    assert internal_diversity(pair, p=2) == pytest.approx(1 - np.sqrt(0.5))


def test_filters_and_scaffolds_on_known_molecules() -> None:
    def mol(s: str) -> Chem.Mol:
        return Chem.MolFromSmiles(s)

    assert passes_filters(mol("CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1"))
    assert not passes_filters(mol("C[N+](C)(C)C"))  # a charge
    assert not passes_filters(mol("CC[Si](C)C"))  # an atom outside C, N, S, O, F, Cl, Br, H
    assert not passes_filters(mol("C1CCCCCCC1"))  # an 8-membered ring
    assert not passes_filters(mol("C=CC#N"))  # MCF1, an alkene next to a nitrile
    assert scaffold(mol("Cc1ccccc1")) is None  # one ring: no scaffold for Scaf
    assert scaffold(mol("CCc1ccc(-c2ccccn2)cc1")) == "c1ccc(-c2ccccn2)cc1"


def test_importing_the_metrics_does_not_import_moses() -> None:
    code = "import sys, molgan.moses_metrics; print('moses' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- molgan evaluate


def _evaluate(*args: str) -> Any:
    from typer.testing import CliRunner

    from molgan.cli import app

    return CliRunner().invoke(app, ["evaluate", *args])


def test_evaluate_benchmark_moses_prints_every_metric_as_json() -> None:
    result = _evaluate("--benchmark", "moses", "-n", "200", "--reference-limit", "200", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    for key in ("valid", "valid_strict", "unique@1000", "unique@10000", "FCD/Test", "FCD/TestSF",
                "SNN/Test", "SNN/TestSF", "Frag/Test", "Frag/TestSF", "Scaf/Test", "Scaf/TestSF",
                "IntDiv", "IntDiv2", "Filters", "Novelty", "rings_mean", "aromatic_rings_mean",
                "qed_mean"):
        assert key in metrics, key
    assert metrics["n"] == 200 and metrics["reference_limit"] == 200
    # QM9-sized molecules: valid, never ZINC leads, far from the MOSES test set.
    assert metrics["valid"] > 0.9 and metrics["Novelty"] == 1.0
    assert metrics["FCD/Test"] > 10


@pytest.mark.parametrize(("args", "named"), [
    (["--benchmark", "guacamol"], "--benchmark"),
    (["--reference-limit", "10"], "--reference-limit"),
    (["--benchmark", "moses", "--reference-limit", "0"], "--reference-limit"),
])
def test_evaluate_bad_benchmark_options_are_usage_errors(args: list[str], named: str) -> None:
    result = _evaluate(*args)
    assert result.exit_code == 2
    assert named in result.output and "Traceback" not in result.output
