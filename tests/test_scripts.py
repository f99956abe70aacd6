"""scripts/select_checkpoint.py on real snapshots: it scores every setting and ranks correctly."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from molgan.sampling import MoleculeSampler
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
