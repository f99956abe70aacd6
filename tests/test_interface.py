"""The public Python interface: `import molgan`, load, generate, score, evaluate."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from rdkit import Chem

import molgan
from molgan.chem import canonical_smiles
from molgan.metrics import properties
from molgan.sampling import MoleculeSampler
from tests.conftest import REPO_ROOT


def readme_python_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", readme_python_example()], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "qm9" in done.stdout and "QED" in done.stdout and "valid " in done.stdout


def test_public_names_are_exported() -> None:
    for name in molgan.__all__:
        assert getattr(molgan, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = molgan.nothing  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def model() -> molgan.Model:
    return molgan.load("qm9")


def test_a_bundled_model_by_name_and_a_checkpoint_by_path(
    model: molgan.Model, api_checkpoint: Path
) -> None:
    assert "qm9" in molgan.bundled_models()
    assert model.name == "qm9"
    assert model.defaults == model.sampler.settings()
    by_path = molgan.load(api_checkpoint)
    assert by_path.name != "qm9"
    assert molgan.load(str(api_checkpoint)).info() == by_path.info()
    with pytest.raises(molgan.CheckpointError, match=r"no bundled model named 'qm10'; bundled: .*qm9"):
        molgan.load("qm10")
    with pytest.raises(molgan.CheckpointError):
        molgan.load(api_checkpoint.parent / "missing.safetensors")


def test_generate_is_the_sampler_with_keywords(model: molgan.Model) -> None:
    molecules = model.generate(50, seed=3, temperature=0.8, min_p=0.1)
    raw = model.sampler.sample(50, seed=3, settings=model.sampler.settings("gumbel", 0.8, 0.1))
    assert [(m.smiles, m.valid) for m in molecules] == [(s.smiles, s.valid) for s in raw]
    assert [m.smiles for m in model.generate(20, seed=4, mode="argmax")] == [
        s.smiles for s in model.sampler.sample(20, seed=4, settings=model.sampler.settings("argmax"))
    ]


def test_records_carry_the_molecule_and_properties_on_request(model: molgan.Model) -> None:
    plain = model.generate(30, seed=5)
    assert all(m.properties is None for m in plain)
    rich = model.generate(30, seed=5, properties=True)
    assert [m.smiles for m in rich] == [m.smiles for m in plain]
    for m in rich:
        if m.valid:
            assert isinstance(m.mol, Chem.Mol)
            assert Chem.MolToSmiles(m.mol) == Chem.MolToSmiles(Chem.MolFromSmiles(m.smiles))
            assert m.properties == properties(m.smiles)
        else:
            assert m.properties is None
    assert any(m.valid for m in rich)


def test_filters_and_bad_settings(model: molgan.Model) -> None:
    unique = model.generate(40, seed=6, valid_only=True, unique=True)
    assert all(m.valid for m in unique)
    assert len({m.smiles for m in unique}) == len(unique) == 40
    with pytest.raises(molgan.SamplingError, match="temperature"):
        model.generate(3, temperature=float("inf"))
    with pytest.raises(molgan.SamplingError, match="min_p"):
        model.generate(3, min_p=1.0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        model.generate(-1)


def test_evaluate_a_list_of_smiles() -> None:
    scores = molgan.evaluate(["CCO", "OCC", "c1ccccc1", "C.C", "not a smiles", None], training=["C(O)C"])
    assert scores["n"] == 6
    assert scores["validity"] == pytest.approx(3 / 6)  # CCO, OCC (the same molecule), benzene
    assert scores["validity_loose"] == pytest.approx(4 / 6)  # and the two methanes
    assert scores["uniqueness"] == pytest.approx(2 / 3)
    assert scores["novelty"] == pytest.approx(1 / 2)  # ethanol is in training, written otherwise
    assert scores["fcd"] is None
    with pytest.raises(ValueError, match="reference"):
        molgan.evaluate(["CCO"], fcd=True)


def test_score_is_against_the_models_own_dataset(model: molgan.Model) -> None:
    sampler: MoleculeSampler = model.sampler
    from molgan.evaluation import dataset_references

    training, _ = dataset_references(sampler.config.data)
    seen = sorted(training)[:3]
    novel = "CCCCCCCCC(=O)O"  # nonanoic acid: 11 heavy atoms, more than QM9 allows
    assert canonical_smiles(novel) not in training
    scores = model.score([*seen, novel])
    assert scores["validity"] == 1.0
    assert scores["novelty"] == pytest.approx(1 / 4)
