"""The layout of a training run's directory: which file holds what, under which name.

    runs/qm9-20261123-120000/
        config.yaml                       the resolved config of the run
        metrics.jsonl                     training records and evaluations, one JSON object a line
        last.safetensors                  everything needed to resume
        best.safetensors                  the generator with the best evaluation score
        snapshots/step-0001000.safetensors  the generator at every evaluation (train.keep_snapshots)
        curves.png, molecules.png         pictures of the run
        events.out.tfevents.*             TensorBoard events (train.tensorboard)

The trainer writes these files, the report and ``scripts/select_checkpoint.py`` read them; all
of them find the files through ``RunDir``.
"""

from __future__ import annotations

from pathlib import Path

LAST, BEST = "last.safetensors", "best.safetensors"
SNAPSHOTS = "snapshots"
CONFIG, METRICS = "config.yaml", "metrics.jsonl"
CURVES, MOLECULES = "curves.png", "molecules.png"
_SNAPSHOT_PREFIX, _SNAPSHOT_SUFFIX = "step-", ".safetensors"


class RunDir:
    """The files of the run in ``path`` (which need not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def molecules(self) -> Path:
        return self.path / MOLECULES

    @property
    def snapshot_dir(self) -> Path:
        return self.path / SNAPSHOTS

    def snapshot(self, step: int) -> Path:
        """The generator snapshot of ``step``; zero-padded so that names sort by step."""
        return self.snapshot_dir / f"{_SNAPSHOT_PREFIX}{step:07d}{_SNAPSHOT_SUFFIX}"

    def snapshots(self, from_step: int = 0) -> list[tuple[int, Path]]:
        """(step, path) of every snapshot at or after ``from_step``, by step."""
        found = []
        for path in self.snapshot_dir.glob(f"{_SNAPSHOT_PREFIX}*{_SNAPSHOT_SUFFIX}"):
            number = path.name.removeprefix(_SNAPSHOT_PREFIX).removesuffix(_SNAPSHOT_SUFFIX)
            if number.isdigit() and int(number) >= from_step:
                found.append((int(number), path))
        return sorted(found)

    def best_or_last(self) -> Path | None:
        """The checkpoint that represents the run: the best one, else the last, else ``None``."""
        for path in (self.best, self.last):
            if path.is_file():
                return path
        return None
