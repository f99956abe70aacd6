"""Starting a training run from the command line's options (``molgan train``).

Everything that can be checked without the process group is checked here, before any process
starts, so that a bad option or config answers the same way with one process as with several:
one line, ``UsageError``. With ``train.processes`` > 1 (and no torchrun around it yet) this
process then replaces itself with ``torchrun --standalone`` running the same command, so that
Ctrl-C and SIGTERM reach torchrun, which hands them on; every process gets the run directory
chosen here, not a time stamp of its own.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from molgan.checkpoint import Checkpoint, CheckpointError
from molgan.config import Config, ConfigError, load_config
from molgan.data import MissingColumn, dataset_file, dataset_from_config
from molgan.device import DeviceError, check_device_name
from molgan.errors import UsageError
from molgan.training.distributed import start
from molgan.training.report import write_report
from molgan.training.tensorboard import TensorBoardLog, require_tensorboard
from molgan.training.trainer import Trainer, load_resume

log = logging.getLogger("molgan")

SETUP_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError)
"""What a run's set-up raises for a bad config, checkpoint or data file: a usage error."""


def train(
    config: Path | None,
    overrides: list[str],
    *,
    run_dir: Path | None = None,
    resume: Path | None = None,
    max_minutes: float | None = None,
    device: str | None = None,
    progress: bool = True,
) -> str | None:
    """Train as ``molgan train`` does and return its last line (``run: DIR step S``) on rank 0,
    ``None`` on the other processes.

    ``config`` and ``overrides`` (``section.key=value``) describe a new run in ``run_dir``
    (default ``runs/<name>-<time>``); ``resume`` continues the run in that directory instead.
    ``max_minutes`` and ``device`` override ``train.max_minutes`` and ``train.device``.
    """
    extra = list(overrides)
    if max_minutes is not None:
        extra.append(f"train.max_minutes={max_minutes}")
    if device is not None:
        try:
            extra.append(f"train.device={check_device_name(device)}")
        except DeviceError as exc:
            raise UsageError(f"--device {exc}") from None
    device_source = "--device" if device is not None else "train.device"
    try:
        if resume is not None:
            if config is not None:
                raise UsageError("--resume uses the config saved in the run; do not pass --config")
            cfg, checkpoint = load_resume(resume, extra)
            target = resume
        else:
            cfg, checkpoint = load_config(config, extra), None
            target = run_dir or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dataset_file(cfg.data.path)  # e.g. MOSES not installed: one line, before any process starts
        if cfg.train.tensorboard:
            require_tensorboard()  # before any process starts, not after the first step
    except UsageError:
        raise
    except SETUP_ERRORS as exc:
        raise UsageError(str(exc)) from None
    if cfg.train.processes > 1 and "WORLD_SIZE" not in os.environ:
        # What each process would find wrong at start-up, found once here instead: the batch
        # split, and the data (featurized into the cache the processes then read).
        try:
            cfg.batch_share(cfg.train.processes)
            dataset_from_config(cfg.data)
        except SETUP_ERRORS as exc:
            raise _usage_error(exc) from None
        where = ["--resume", str(resume)] if resume is not None else ["--run-dir", str(target)]
        exec_torchrun(cfg.train.processes, [
            "train", *(["--config", str(config)] if config is not None else []), *where,
            *(arg for override in extra for arg in ("--set", override)),
            "--progress" if progress else "--no-progress",
        ])
    return _run(cfg, checkpoint, target, device_source, progress)


def _run(
    cfg: Config, checkpoint: Checkpoint | None, target: Path, device_source: str, progress: bool
) -> str | None:
    """This process's part of the run (all of it, without torchrun)."""
    with ExitStack() as stack:
        try:
            processes = stack.enter_context(start(cfg.train.device))
            if not processes.is_main:
                logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
            trainer = Trainer(cfg, target, progress=progress, processes=processes)
            if checkpoint is not None:
                trainer.restore(checkpoint)
        except DeviceError as exc:
            raise UsageError(f"{device_source} {exc}") from None
        except SETUP_ERRORS as exc:
            raise _usage_error(exc) from None
        result = trainer.train()
        if not processes.is_main:
            return None
        write_report(trainer.run_dir)
        with TensorBoardLog(trainer.run_dir, enabled=trainer.config.train.tensorboard) as board:
            board.picture("molecules", result["step"], trainer.run.molecules)
        return f"run: {trainer.run_dir} step {result['step']}" + (
            f" (stopped by {result['stopped_by']})" if result["stopped_by"] else "")


def _usage_error(exc: Exception) -> UsageError:
    if isinstance(exc, MissingColumn):
        return UsageError(str(exc.with_hint("choose one with data.smiles_column")))
    return UsageError(str(exc))


def exec_torchrun(processes: int, args: list[str]) -> None:
    """Replace this process with ``torchrun --standalone`` running ``molgan ARGS`` ``processes`` times."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "molgan", *args]
    log.info("starting %d training processes: %s", processes, " ".join(command[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
