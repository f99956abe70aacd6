"""``molgan sample --model NAME`` and ``molgan evaluate --model NAME``: a bundled model by name, as
the path argument picks any file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import molgan.checkpoint
from molgan.checkpoint import bundled_checkpoint_path, bundled_models
from molgan.sampling import MoleculeSampler
from tests.test_cli_model import invoke


@pytest.fixture
def two_bundled(tmp_path: Path, toy_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's assets as they will be once a second model is bundled: ``qm9`` and a
    ``moses`` (here the small toy checkpoint, whose dataset is quick to score against)."""
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(bundled_checkpoint_path("qm9"), assets / "qm9.safetensors")
    shutil.copy(toy_checkpoint, assets / "moses.safetensors")
    monkeypatch.setattr(molgan.checkpoint, "_ASSETS", assets)
    assert bundled_models() == ["moses", "qm9"]
    return assets


def test_sample_model_qm9_is_the_bundled_checkpoint() -> None:
    by_name = invoke("sample", "--model", "qm9", "-n", "30", "--seed", "4")
    by_path = invoke("sample", bundled_checkpoint_path("qm9"), "-n", "30", "--seed", "4")
    default = invoke("sample", "-n", "30", "--seed", "4")
    assert by_name[0] == 0 and by_name == by_path == default
    expected = MoleculeSampler.load("qm9").sample(30, seed=4)
    assert by_name[1].splitlines() == [s.smiles for s in expected if s.smiles]


def test_sample_and_evaluate_pick_another_bundled_model(two_bundled: Path) -> None:
    code, out, err = invoke("sample", "--model", "moses", "-n", "25", "--seed", "2")
    assert code == 0, err
    expected = MoleculeSampler.load(two_bundled / "moses.safetensors").sample(25, seed=2)
    assert out.splitlines() == [s.smiles for s in expected if s.smiles]
    assert out != invoke("sample", "--model", "qm9", "-n", "25", "--seed", "2")[1]

    code, out, err = invoke("evaluate", "--model", "moses", "-n", "40", "--json")
    assert code == 0, err
    by_path = invoke("evaluate", two_bundled / "moses.safetensors", "-n", "40", "--json")[1]
    scored, expected_scores = json.loads(out), json.loads(by_path)
    scored.pop("sampling_seconds")
    expected_scores.pop("sampling_seconds")
    assert scored == expected_scores


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_an_unknown_name_is_a_usage_error_listing_the_bundled_ones(command: str, two_bundled: Path) -> None:
    code, out, err = invoke(command, "--model", "zinc", "-n", "20")
    assert code == 2
    assert err == "error: --model: no bundled model named 'zinc'; bundled: moses, qm9\n"
    assert out == ""


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_a_file_and_a_model_together_are_a_usage_error(command: str, toy_checkpoint: Path) -> None:
    code, out, err = invoke(command, toy_checkpoint, "--model", "qm9", "-n", "20")
    assert code == 2
    assert err == (
        f"error: give a checkpoint or --model, not both (got {toy_checkpoint} and --model qm9)\n"
    )
    assert out == ""


def test_an_unknown_name_in_a_real_process_has_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "molgan", "sample", "--model", "no-such-model", "-n", "5"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: --model: no bundled model named 'no-such-model'; bundled: {', '.join(bundled_models())}\n"
    )
    assert result.stdout == ""


def test_the_qed_model_samples_by_name_and_is_more_drug_like() -> None:
    import molgan
    from molgan.objectives import objective_metrics

    code, out, err = invoke("sample", "--model", "qm9-qed", "-n", "400", "--seed", "3")
    assert code == 0, err
    model = molgan.load("qm9-qed")
    generated = model.generate(400, seed=3)
    assert out.splitlines() == [m.smiles for m in generated if m.smiles]
    # What it was optimised for, on the same samples of each bundled model.
    qed = {name: objective_metrics([s.smiles if s.valid else None
                                    for s in MoleculeSampler.load(name).sample(400, seed=3)], ("qed",))
           for name in ("qm9", "qm9-qed")}
    assert qed["qm9-qed"]["qed_valid_mean"] > qed["qm9"]["qed_valid_mean"] + 0.05
