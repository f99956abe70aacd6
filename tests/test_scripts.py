"""scripts/select_checkpoint.py on real snapshots: it scores every setting and ranks correctly,
by uniqueness or by FCD against the validation split."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from molgan.config import Config
from molgan.evaluation import dataset_splits
from molgan.metrics import frechet_chemnet_distance
from molgan.objectives import objective_metrics
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings
from molgan.training.run_dir import RunDir

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "select_checkpoint.py"


@pytest.fixture(scope="module")
def run_with_snapshots(
    tmp_path_factory: pytest.TempPathFactory, toy_checkpoint: Path, debug_run: Path
) -> Path:
    run = RunDir(tmp_path_factory.mktemp("select") / "run")
    run.snapshot_dir.mkdir(parents=True)
    shutil.copy(RunDir(debug_run).last, run.snapshot(30))
    shutil.copy(toy_checkpoint, run.snapshot(40))
    return run.path


def select(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--samples", "120", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_select_scores_every_snapshot_and_setting(run_with_snapshots: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("select_checkpoint", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "scores.jsonl"
    result = select(run_with_snapshots, "--min-validity", "0.2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * len(script.TEMPERATURES) * len(script.MIN_PS)
    # A row is what sampling with its settings gives (seed 1 by default).
    row = next(r for r in rows if r["snapshot"].endswith("step-0000040.safetensors") and r["min_p"] == 0.05)
    sampler = MoleculeSampler.load(row["snapshot"])
    settings = sampler.settings(temperature=row["temperature"], min_p=0.05)
    samples = sampler.sample(120, seed=1, settings=settings)
    valid = [s.smiles for s in samples if s.valid]
    assert row["validity"] == pytest.approx(len(valid) / 120)
    assert row["uniqueness"] == pytest.approx(len(set(valid)) / len(valid))
    # The printed ranking: settings at or above the validity floor, most unique first.
    ranked = [json.loads(line) for line in result.stdout.splitlines()]
    assert ranked and all(r["validity"] >= 0.2 for r in ranked)
    assert [r["uniqueness"] for r in ranked] == sorted((r["uniqueness"] for r in ranked), reverse=True)
    best_possible = max(r["uniqueness"] for r in rows if r["validity"] >= 0.2)
    assert ranked[0]["uniqueness"] == best_possible


def test_select_says_when_nothing_is_valid_enough(run_with_snapshots: Path) -> None:
    result = select(run_with_snapshots, "--min-validity", "1.01")
    assert result.returncode != 0
    assert "no setting reaches validity 1.01" in result.stderr


def test_select_needs_snapshots(tmp_path: Path) -> None:
    result = select(tmp_path)
    assert result.returncode != 0
    assert "train.keep_snapshots=true" in result.stderr


def test_select_skips_snapshots_before_from_step(run_with_snapshots: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    result = select(run_with_snapshots, "--min-validity", "0", "--from-step", "31", "--out", str(out))
    assert result.returncode == 0, result.stderr
    scored = {json.loads(line)["snapshot"] for line in out.read_text().splitlines()}
    assert scored == {str(RunDir(run_with_snapshots).snapshot(40))}


def test_select_takes_every_kth_snapshot(run_with_snapshots: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    result = select(run_with_snapshots, "--min-validity", "0", "--every", "15", "--out", str(out))
    assert result.returncode == 0, result.stderr
    scored = {json.loads(line)["snapshot"] for line in out.read_text().splitlines()}
    assert scored == {str(RunDir(run_with_snapshots).snapshot(30))}  # not step 40


# --------------------------------------------------------------------------- ranking by FCD


@pytest.fixture(scope="module")
def run_trained_with_snapshots(
    tmp_path_factory: pytest.TempPathFactory, debug_config: Callable[..., Config], toy_checkpoint: Path
) -> Path:
    """A real debug run that kept a generator snapshot at each of its evaluations (steps 15, 30).

    Thirty steps of the debug model give no valid molecule, so the toy generator, which gives
    some, is added as the snapshot of step 45.
    """
    from molgan.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("select-fcd") / "run"
    Trainer(debug_config("train.keep_snapshots=true"), run_dir, progress=False).train()
    shutil.copy(toy_checkpoint, RunDir(run_dir).snapshot(45))
    return run_dir


FCD_GRID = ("--temperatures", "1.0,1.3", "--min-ps", "0,0.2")


def test_select_ranks_by_fcd_against_the_validation_split(
    run_trained_with_snapshots: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.jsonl"
    result = select(
        run_trained_with_snapshots, *FCD_GRID, "--rank-by", "fcd", "--fcd-samples", "40",
        "--min-validity", "0.05", "--out", str(out),
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {Path(r["snapshot"]).name for r in rows} == {
        "step-0000015.safetensors", "step-0000030.safetensors", "step-0000045.safetensors"
    }
    assert len(rows) == 3 * 2 * 2
    passing = [r for r in rows if r["passed"]]
    assert passing and all("fcd" in r for r in passing)
    assert all("fcd" not in r for r in rows if r["validity"] < 0.05)
    # A row's FCD is that of its first valid samples (seed 1) against the validation split.
    row = passing[0]
    sampler = MoleculeSampler.load(row["snapshot"])
    settings = sampler.settings(temperature=row["temperature"], min_p=row["min_p"])
    valid = [s.smiles for s in sampler.sample(120, seed=1, settings=settings) if s.valid][:40]
    assert row["fcd_samples"] == len(valid)
    _, validation, test = dataset_splits(sampler.config.data)
    assert row["fcd"] == pytest.approx(frechet_chemnet_distance(valid, validation))
    assert row["fcd"] != pytest.approx(frechet_chemnet_distance(valid, test))
    # The printed ranking: the passing settings, lowest FCD first.
    ranked = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["fcd"] for r in ranked] == sorted(r["fcd"] for r in passing)[:10]


def test_select_applies_the_uniqueness_floor(run_trained_with_snapshots: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    result = select(
        run_trained_with_snapshots, *FCD_GRID, "--min-validity", "0", "--min-uniqueness", "0.5",
        "--out", str(out),
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {(r["snapshot"], r["temperature"], r["min_p"]) for r in rows if r["uniqueness"] >= 0.5}
    if not expected:
        assert result.returncode != 0 and "uniqueness 0.5" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(r["snapshot"], r["temperature"], r["min_p"]) for r in printed} == expected


@pytest.mark.parametrize(
    ("option", "value"),
    [("--fcd-samples", "1"), ("--temperatures", "1.0,warm"), ("--every", "0")],
)
def test_select_rejects_bad_options(run_with_snapshots: Path, option: str, value: str) -> None:
    result = select(run_with_snapshots, option, value)
    assert result.returncode == 2
    assert option in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("objective", ["qed", "sa"])
def test_select_ranks_by_a_property_of_the_valid_samples(
    run_with_snapshots: Path, tmp_path: Path, objective: str
) -> None:
    out = tmp_path / "scores.jsonl"
    result = select(run_with_snapshots, "--temperatures", "1.0,1.3", "--min-ps", "0,0.2",
                    "--min-validity", "0.2", "--rank-by", objective, "--out", str(out))
    assert result.returncode == 0, result.stderr
    ranked = [json.loads(line) for line in result.stdout.splitlines()]
    means = [r[f"{objective}_valid_mean"] for r in ranked]
    # Drug-likeness the higher the better; the SA score the lower.
    assert len(ranked) >= 2 and means == sorted(means, reverse=objective == "qed")
    row = ranked[0]
    samples = MoleculeSampler.load(row["snapshot"]).sample(
        120, seed=1, settings=SamplingSettings("gumbel", row["temperature"], row["min_p"]))
    expected = objective_metrics([s.smiles if s.valid else None for s in samples], (objective,))
    assert row[f"{objective}_valid_mean"] == pytest.approx(expected[f"{objective}_valid_mean"])
    assert row[f"{objective}_hits"] == pytest.approx(expected[f"{objective}_hits"])


CONDITIONAL_SCRIPT = SCRIPT.with_name("select_conditional.py")


def test_select_conditional_scores_every_snapshot_and_setting_and_ranks_by_missed_bars(
    tmp_path: Path, conditional_run: Path
) -> None:
    from molgan.target_evaluation import evaluate_targets, missed_bars
    from tests.test_api_conditions import conditional_template

    run = RunDir(tmp_path / "run")
    run.snapshot_dir.mkdir(parents=True)
    conditional_template(run.snapshot(10), conditional_run / "last.safetensors")  # makes molecules
    shutil.copy(conditional_run / "last.safetensors", run.snapshot(20))  # makes none yet
    out = tmp_path / "scores.jsonl"
    done = subprocess.run(
        [sys.executable, str(CONDITIONAL_SCRIPT), str(run.path), "--samples", "30", "--temperatures",
         "1.0", "--min-ps", "0,0.1", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["step"], r["min_p"]) for r in rows) == [(10, 0.0), (10, 0.1), (20, 0.0), (20, 0.1)]
    keys = [(len(r["missed"]), r["relative_mae"]) for r in rows]
    assert keys == sorted(keys)
    first = rows[0]
    sampler = MoleculeSampler.load(first["snapshot"])
    report = evaluate_targets(sampler, None, 30, seed=1,
                              settings=SamplingSettings("gumbel", 1.0, first["min_p"]))
    assert first["missed"] == missed_bars(report)
