"""The layout of a run directory: names, snapshot order, the checkpoint that represents a run."""

from __future__ import annotations

from pathlib import Path

from molgan.training.run_dir import RunDir


def test_files_of_a_run(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))
    assert run.path == tmp_path
    names = [run.config, run.metrics, run.last, run.best, run.curves, run.molecules]
    assert [p.name for p in names] == [
        "config.yaml", "metrics.jsonl", "last.safetensors", "best.safetensors", "curves.png", "molecules.png"
    ]
    assert all(p.parent == tmp_path for p in names)
    assert run.snapshot(1000) == tmp_path / "snapshots" / "step-0001000.safetensors"


def test_snapshots_come_by_step_from_a_given_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.snapshots() == []
    run.snapshot_dir.mkdir()
    for step in (250, 12_000_000, 5, 1000):
        run.snapshot(step).touch()
    # Not snapshots: another suffix, a name without a step.
    (run.snapshot_dir / "step-0000007.json").touch()
    (run.snapshot_dir / "step-best.safetensors").touch()
    assert run.snapshots() == [(s, run.snapshot(s)) for s in (5, 250, 1000, 12_000_000)]
    assert run.snapshots(from_step=250) == [(s, run.snapshot(s)) for s in (250, 1000, 12_000_000)]
    # Seven digits sort by name as by step, as far as runs go.
    assert sorted(p.name for _, p in run.snapshots())[:3] == [run.snapshot(s).name for s in (5, 250, 1000)]


def test_best_or_last(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.best_or_last() is None
    run.last.touch()
    assert run.best_or_last() == run.last
    run.best.touch()
    assert run.best_or_last() == run.best
