"""The train, sample, evaluate and serve commands, run in-process through typer's CliRunner (and
a few in a real process)."""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rdkit import Chem
from typer.testing import CliRunner

from molgan.api.settings import get_settings
from molgan.checkpoint import CheckpointWriter, load_checkpoint
from molgan.cli import app
from molgan.config import load_config
from molgan.metrics import properties
from molgan.sampling import MoleculeSampler, Sample
from molgan.training.run_dir import BEST, LAST
from tests.conftest import DEBUG_CONFIG

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS_IN_UNIT_RANGE = (
    "validity", "validity_loose", "uniqueness", "novelty", "vun", "qed_mean", "internal_diversity"
)

runner = CliRunner()


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def gumbel_samples(checkpoint: Path, n: int, seed: int) -> list[Sample]:
    """What ``--mode gumbel`` samples from ``checkpoint``."""
    sampler = MoleculeSampler.load(checkpoint)
    return sampler.sample(n, seed=seed, settings=sampler.settings("gumbel"))


def with_config(checkpoint: Path, out: Path, **sections: dict[str, object]) -> Path:
    """A copy of ``checkpoint`` at ``out`` whose stored config has these keys of each section changed."""
    ckpt = load_checkpoint(checkpoint)
    meta = copy.deepcopy(ckpt.meta)
    for section, changes in sections.items():
        meta["config"][section] |= changes
    writer = CheckpointWriter(meta)
    writer.tensors = dict(ckpt.tensors)
    return writer.write(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_smiles_path: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("cli-train") / "run"
    code, out, err = invoke(
        "train", "-c", DEBUG_CONFIG, "--set", f"data.path={small_smiles_path}",
        "--run-dir", run_dir, "--no-progress",
    )
    assert code == 0, err
    assert f"run: {run_dir} step 30" in out
    return run_dir


# ----------------------------------------------------------------------------------- train


def test_train_writes_the_run_directory(trained: Path, small_smiles_path: Path) -> None:
    expected = load_config(DEBUG_CONFIG, [f"data.path={small_smiles_path}"])
    assert load_config(trained / "config.yaml") == expected
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" not in r] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in records if "eval" in r] == [15, 30]
    assert load_checkpoint(trained / LAST).meta["step"] == 30
    assert load_checkpoint(trained / BEST).has("generator")
    for picture in ("curves.png", "molecules.png"):
        data = (trained / picture).read_bytes()
        assert data.startswith(PNG_MAGIC), picture
        assert len(data) > 1000, picture


def test_train_resume_continues(trained: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    code, out, err = invoke("train", "--resume", run_dir, "--set", "train.steps=32", "--no-progress")
    assert code == 0, err
    assert "step 32" in out
    assert load_checkpoint(run_dir / LAST).meta["step"] == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.bogus=1"], "train.bogus"),
        (["--set", "train.batch_size=lots"], "train.batch_size"),
        (["--set", "train.steps"], "section.key=value"),
        (["--set", "model.gcn_dims=[3,"], "not valid YAML"),
        (["--set", "model.pack=5"], "model.pack (5)"),
        (["--set", "reward.weights={charm: 1}"], "charm"),
        (["-c", "no/such/config.yaml"], "config file not found"),
    ],
)
def test_train_bad_settings_fail_clearly(
    tmp_path: Path, small_smiles_path: Path, args: list[str], message: str
) -> None:
    config_args = [] if "-c" in args else ["-c", str(DEBUG_CONFIG)]
    code, _, err = invoke(
        "train", *config_args, "--set", f"data.path={small_smiles_path}", *args,
        "--run-dir", tmp_path / "run", "--no-progress",
    )
    assert code != 0
    assert message in err
    assert "Traceback" not in err


def test_train_resume_rejects_config_and_missing_run(trained: Path, tmp_path: Path) -> None:
    code, _, err = invoke("train", "--resume", trained, "-c", DEBUG_CONFIG)
    assert code != 0 and "do not pass --config" in err
    code, _, err = invoke("train", "--resume", tmp_path / "nothing-here")
    assert code != 0 and "checkpoint not found" in err


# ---------------------------------------------------------------------------------- sample


def test_sample_smi_matches_the_sampler(toy_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.smi"
    code, _, err = invoke("sample", toy_checkpoint, "-n", "40", "--seed", "0", "--mode", "gumbel", "-o", out)
    assert code == 0, err
    expected = [s.smiles for s in gumbel_samples(toy_checkpoint, 40, seed=0)]
    written = out.read_text().splitlines()
    assert written == [s for s in expected if s is not None]
    assert f"wrote {len(written)} records" in err


def test_sample_to_stdout(toy_checkpoint: Path) -> None:
    code, out, _ = invoke("sample", toy_checkpoint, "-n", "10", "--seed", "1")
    assert code == 0
    expected = [s.smiles for s in MoleculeSampler.load(toy_checkpoint).sample(10, seed=1)]
    assert out.splitlines() == [s for s in expected if s is not None]


def test_sample_csv_has_property_columns(toy_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    code, _, err = invoke(
        "sample", toy_checkpoint, "-n", "30", "--seed", "2", "--temperature", "1.0", "--valid-only", "-o", out
    )
    assert code == 0, err
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["smiles", "valid", "qed", "logp", "sa", "mol_weight"]
    assert len(rows) == 30
    for row in rows:
        assert row["valid"] == "True"
        expected = properties(row["smiles"])
        for column in ("qed", "logp", "sa", "mol_weight"):
            assert float(row[column]) == pytest.approx(expected[column], abs=1e-4), column
        assert 0 <= float(row["qed"]) <= 1 and 1 <= float(row["sa"]) <= 10 and float(row["mol_weight"]) > 0


def test_sample_sdf_holds_the_valid_molecules(toy_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.sdf"
    code, _, err = invoke("sample", toy_checkpoint, "-n", "40", "--seed", "3", "--mode", "gumbel", "-o", out)
    assert code == 0, err
    samples = gumbel_samples(toy_checkpoint, 40, seed=3)
    mols = list(Chem.SDMolSupplier(str(out)))
    assert all(m is not None for m in mols)
    assert [m.GetProp("_Name") for m in mols] == [s.smiles for s in samples if s.valid]
    assert 0 < len(mols) < 40
    assert all(m.GetNumConformers() == 1 for m in mols)


@pytest.mark.parametrize("which", ["toy", "trained"])
def test_sample_jsonl_writes_every_raw_sample_in_order(
    which: str, toy_checkpoint: Path, trained: Path, tmp_path: Path
) -> None:
    checkpoint = toy_checkpoint if which == "toy" else trained / LAST
    out = tmp_path / "raw.txt"
    code, _, err = invoke(
        "sample", checkpoint, "-n", "25", "--seed", "4", "--temperature", "1.5",
        "--format", "jsonl", "-o", out,
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sampler = MoleculeSampler.load(checkpoint)
    expected = sampler.sample(25, seed=4, settings=sampler.settings(temperature=1.5))
    assert records == [{"smiles": s.smiles, "valid": s.valid} for s in expected]
    if which == "toy":  # invalid samples are records too
        assert any(r["smiles"] is None for r in records) and any(r["valid"] for r in records)


def test_sample_warns_when_it_falls_short(trained: Path, tmp_path: Path) -> None:
    code, _, err = invoke("sample", trained / LAST, "-n", "5", "--seed", "0", "--valid-only", "-o",
                          tmp_path / "few.smi")
    assert code == 0
    assert "of 5 molecules in 100 samples" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "checkpoint not found"),
        (["{ckpt}", "--format", "jsonl", "--valid-only"], "drop --valid-only"),
        (["{ckpt}", "--format", "jsonl", "--unique"], "drop --valid-only/--unique"),
        (["{ckpt}", "--format", "xyz"], "--format must be one of"),
        (["{ckpt}", "-o", "{tmp}/out.xyz"], "cannot tell the output format"),
        (["{ckpt}", "-n", "0"], "-n"),
        (["{corrupt}"], "truncated or corrupted"),
    ],
)
def test_sample_bad_inputs_fail_clearly(
    toy_checkpoint: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(toy_checkpoint.read_bytes()[:100])
    paths = {"missing": tmp_path / "missing.safetensors", "ckpt": toy_checkpoint, "tmp": tmp_path,
             "corrupt": corrupt}
    code, out, err = invoke("sample", *(a.format(**paths) for a in args))
    assert code != 0
    assert message in err
    assert out == ""
    assert "Traceback" not in err


# -------------------------------------------------------------------------------- evaluate


def test_evaluate_json_on_trained_checkpoint(trained: Path) -> None:
    code, out, err = invoke("evaluate", trained / LAST, "-n", "40", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    for key in METRICS_IN_UNIT_RANGE:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["step"] == 30 and metrics["seed"] == 0 and metrics["mode"] == "argmax"
    assert metrics["n"] == 40 and metrics["fcd"] is None


def test_evaluate_json_scores_the_samples(toy_checkpoint: Path) -> None:
    code, out, err = invoke(
        "evaluate", toy_checkpoint, "-n", "60", "--seed", "5", "--mode", "gumbel", "--json"
    )
    assert code == 0, err
    metrics = json.loads(out)
    samples = gumbel_samples(toy_checkpoint, 60, seed=5)
    assert metrics["validity"] == pytest.approx(sum(s.valid for s in samples) / 60)
    assert 0 < metrics["validity"] < 1 and 0 < metrics["uniqueness"] <= 1
    for key in METRICS_IN_UNIT_RANGE:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["mode"] == "gumbel"


def test_evaluate_with_min_p_scores_min_p_samples(toy_checkpoint: Path) -> None:
    code, out, err = invoke("evaluate", toy_checkpoint, "-n", "60", "--seed", "5", "--min-p", "0.3", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    sampler = MoleculeSampler.load(toy_checkpoint)
    samples = sampler.sample(60, seed=5, settings=sampler.settings(min_p=0.3))
    assert metrics["validity"] == pytest.approx(sum(s.valid for s in samples) / 60)
    assert (metrics["mode"], metrics["min_p"], metrics["temperature"]) == ("gumbel", 0.3, 1.0)


def test_evaluate_without_the_checkpoint_dataset_fails_clearly(toy_checkpoint: Path, tmp_path: Path) -> None:
    moved = with_config(toy_checkpoint, tmp_path / "moved.safetensors",
                        data={"path": str(tmp_path / "moved-away.smi")})
    code, _, err = invoke("evaluate", moved, "-n", "20")
    assert code != 0
    assert "cannot load the checkpoint's dataset" in err and "moved-away.smi" in err
    assert "Traceback" not in err


def test_evaluate_table(toy_checkpoint: Path) -> None:
    code, out, _ = invoke("evaluate", toy_checkpoint, "-n", "20")
    assert code == 0
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert float(rows["validity"]) > 0
    assert rows["mode"].strip() == "argmax"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "checkpoint not found"),
        (["{ckpt}", "-n", "3"], "-n"),
    ],
)
def test_evaluate_bad_inputs_fail_clearly(
    toy_checkpoint: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    paths = {"missing": tmp_path / "missing.safetensors", "ckpt": toy_checkpoint}
    code, _, err = invoke("evaluate", *(a.format(**paths) for a in args))
    assert code != 0
    assert message in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------- sampling options

BAD_SAMPLING_OPTIONS = [
    (["--temperature", "inf"], "--temperature must be a finite number > 0, got inf"),
    (["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
    (["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
    (["--temperature", "-1"], "--temperature must be a finite number > 0, got -1.0"),
    (["--min-p", "1"], "--min-p must be in [0, 1), got 1.0"),
    (["--min-p", "-1"], "--min-p must be in [0, 1), got -1.0"),
    (["--min-p", "inf"], "--min-p must be in [0, 1), got inf"),
    (["--min-p", "nan"], "--min-p must be in [0, 1), got nan"),
    (["--mode", "bogus"], "--mode must be argmax or gumbel, got 'bogus'"),
    (["--mode", "argmax", "--temperature", "0.5"], "--temperature applies to mode 'gumbel' only"),
    (["--mode", "argmax", "--min-p", "0.1"], "--min-p applies to mode 'gumbel' only"),
]


@pytest.mark.parametrize("command", ["sample", "evaluate"])
@pytest.mark.parametrize(("options", "message"), BAD_SAMPLING_OPTIONS)
def test_bad_sampling_options_are_one_line_usage_errors(
    toy_checkpoint: Path, command: str, options: list[str], message: str
) -> None:
    code, out, err = invoke(command, toy_checkpoint, "-n", "20", *options)
    assert code == 2
    assert err == f"error: {message}\n"
    assert out == ""


@pytest.mark.parametrize(("options", "message"), BAD_SAMPLING_OPTIONS)
def test_bad_sampling_options_of_serve_are_one_line_usage_errors(
    toy_checkpoint: Path, options: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve hands its settings to the workers through the environment; monkeypatch restores it.
    monkeypatch.setenv("MOLGAN_CHECKPOINT", str(toy_checkpoint))
    get_settings.cache_clear()
    try:
        code, out, err = invoke("serve", "--checkpoint", toy_checkpoint, "--port", "1", *options)
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert err == f"error: {message}\n"
    assert out == ""


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"MOLGAN_TEMPERATURE": "inf"}, "invalid setting MOLGAN_TEMPERATURE: Value error, temperature must"),
        ({"MOLGAN_MIN_P": "1"}, "invalid setting MOLGAN_MIN_P: Value error, min_p must be in [0, 1)"),
        ({"MOLGAN_MODE": "argmax", "MOLGAN_MIN_P": "0.1"}, "MOLGAN_MIN_P applies to mode 'gumbel' only"),
    ],
)
def test_bad_sampling_defaults_in_the_environment_stop_serve_with_one_line(
    toy_checkpoint: Path, environment: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLGAN_CHECKPOINT", str(toy_checkpoint))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        code, out, err = invoke("serve", "--port", "1")
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert out == ""


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_a_bad_sampling_option_in_a_real_process_has_no_traceback(command: str) -> None:
    # The bundled checkpoint: what a user who types the command gets.
    result = subprocess.run(
        [sys.executable, "-m", "molgan", command, "-n", "20", "--temperature", "inf"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "error: --temperature must be a finite number > 0, got inf\n"
    assert result.stdout == ""


@pytest.fixture
def bad_defaults_checkpoint(toy_checkpoint: Path, tmp_path: Path) -> Path:
    """The toy checkpoint with an infinite default temperature in its stored config."""
    return with_config(toy_checkpoint, tmp_path / "bad-defaults.safetensors",
                       sampling={"mode": "gumbel", "temperature": math.inf})


@pytest.mark.parametrize("command", ["sample", "evaluate", "serve"])
def test_a_checkpoint_with_bad_sampling_defaults_is_a_clear_error(
    bad_defaults_checkpoint: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if command == "serve":
        # serve hands its checkpoint to the workers through the environment; monkeypatch restores it.
        monkeypatch.setenv("MOLGAN_CHECKPOINT", str(bad_defaults_checkpoint))
        args: list[str | Path] = ["--checkpoint", bad_defaults_checkpoint, "--port", "1"]
    else:
        args = [bad_defaults_checkpoint, "-n", "20"]
    get_settings.cache_clear()
    try:
        code, out, err = invoke(command, *args)
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "sampling.temperature" in err and "finite number > 0, got inf" in err
    assert out == ""
