"""TensorBoard events of a training run, written into its run directory (``train.tensorboard``).

A mirror for watching runs live (``tensorboard --logdir runs/`` shows every run directory as one
run); ``metrics.jsonl`` stays the record that the report and the scripts read. Scalars are
grouped by where they come from (``train/d_loss``, ``eval/validity``) at the generator step.

The events are written with ``tensorboardX`` (the optional extra ``tensorboard``): it writes
the same files as ``torch.utils.tensorboard`` without needing TensorBoard itself installed.
Nothing here imports it unless a log is enabled, so runs without the flag need no extra.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from molgan.config import ConfigError

EXTRA = "tensorboard"
# Seconds between flushes to disk: how far TensorBoard may lag behind the run.
FLUSH_SECS = 10


def require_tensorboard() -> ModuleType:
    """The ``tensorboardX`` module; a ConfigError naming the extra when it cannot be imported."""
    try:
        import tensorboardX
    except ImportError as exc:
        raise ConfigError(
            f"train.tensorboard needs the optional extra {EXTRA!r}: pip install 'molgan[{EXTRA}]' ({exc})"
        ) from None
    return tensorboardX


class TensorBoardLog:
    """Scalars and pictures as TensorBoard events in ``log_dir``; does nothing unless ``enabled``.

    Enable it only in the process that writes the run directory (rank 0 of a multi-process run).
    ``purge_from`` is the first step this log (re)writes: TensorBoard then hides what earlier
    logs in the directory wrote at or after it. A resumed run passes the step after its
    checkpoint, so steps that a stopped run logged after that checkpoint are not shown twice.
    """

    def __init__(self, log_dir: str | Path, *, enabled: bool = True, purge_from: int | None = None) -> None:
        self._writer: Any = None
        if not enabled:
            return
        tensorboardx = require_tensorboard()
        self._writer = tensorboardx.SummaryWriter(
            str(log_dir),
            purge_step=purge_from,
            flush_secs=FLUSH_SECS,
            # tensorboardX names files by the second and overwrites a name it meets again; the
            # nanoseconds keep two logs of one second apart and in order (TensorBoard reads the
            # files of a directory by name, and a purge only hides what came before it).
            filename_suffix=f".{time.time_ns()}",
        )

    def scalars(self, group: str, step: int, values: Mapping[str, Any]) -> None:
        """Every number of ``values`` (a metrics.jsonl record) as ``group/key`` at ``step``.

        The record's own ``step`` is the x axis, not a scalar; anything not a number is skipped.
        """
        if self._writer is None:
            return
        for key, value in values.items():
            if key != "step" and isinstance(value, int | float):
                self._writer.add_scalar(f"{group}/{key}", value, step)

    def picture(self, tag: str, step: int, png: Path) -> None:
        """The PNG file ``png`` as an image at ``step``."""
        if self._writer is None:
            return
        from PIL import Image  # matplotlib's dependency, and what tensorboardX encodes images with

        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
        self._writer.add_image(tag, pixels, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close; what was logged is on disk afterwards."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
