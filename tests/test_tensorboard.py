"""TensorBoard events of training runs (``train.tensorboard``), read back from the event files."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c
from typer.testing import CliRunner

from molgan.cli import app
from molgan.config import Config
from molgan.training.run_dir import LAST, RunDir
from molgan.training.trainer import Trainer, resume_trainer
from tests.conftest import DEBUG_CONFIG, REPO_ROOT

EVENT_FILES = "events.out.tfevents.*"


def event_records(path: Path) -> Iterator[Any]:
    """The ``Event`` messages of one event file (TFRecord framing: length, CRC, data, CRC)."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        body = data[pos + 12 : pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body), f"corrupt {path}"
        pos += 16 + length
        yield event_pb2.Event.FromString(body)


@dataclass
class Events:
    """What TensorBoard shows of a directory: tag -> [(step, value)] in the order written."""

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    images: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=lambda: defaultdict(list))
    raw_scalars: int = 0
    """Scalar values in the files, hidden ones included."""


def read_events(directory: Path) -> Events:
    """Read every event file of ``directory`` as TensorBoard does: files in name order, and a
    ``SessionLog.START`` at step ``s`` (a restart) hides whatever came before it at steps >= ``s``."""
    events = Events()
    for path in sorted(directory.glob(EVENT_FILES)):
        for event in event_records(path):
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                for series in (*events.scalars.values(), *events.images.values()):
                    series[:] = [point for point in series if point[0] < event.step]
            for value in event.summary.value:
                if value.HasField("image"):
                    with Image.open(io.BytesIO(value.image.encoded_image_string)) as image:
                        events.images[value.tag].append((event.step, np.asarray(image.convert("RGB"))))
                else:
                    events.scalars[value.tag].append((event.step, value.simple_value))
                    events.raw_scalars += 1
    return events


def expected_scalars(lines: list[str]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl lines as TensorBoard series: ``train/<key>`` and ``eval/<key>`` at their
    step, as float32 (what an event stores)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in lines:
        record = json.loads(line)
        group, values = ("eval", record["eval"]) if "eval" in record else ("train", record)
        for key, value in values.items():
            if key != "step":
                series[f"{group}/{key}"].append((record["step"], float(np.float32(value))))
    return dict(series)


def rgb(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory, small_smiles_path: Path) -> Path:
    """A debug run through ``molgan train`` with ``train.tensorboard: true``."""
    run_dir = tmp_path_factory.mktemp("tensorboard") / "run"
    result = CliRunner().invoke(app, [
        "train", "-c", str(DEBUG_CONFIG), "--run-dir", str(run_dir), "--no-progress",
        "--set", f"data.path={small_smiles_path}", "--set", "train.tensorboard=true",
        "--set", "train.steps=20", "--set", "train.log_every=2", "--set", "train.eval_every=5",
    ])
    assert result.exit_code == 0, result.output
    return run_dir


def test_scalars_are_those_of_metrics_jsonl(tensorboard_run: Path) -> None:
    lines = RunDir(tensorboard_run).metrics.read_text().splitlines()
    expected = expected_scalars(lines)
    # Every key of both kinds of record, at the same steps, with the same values.
    assert {"train/d_loss", "train/tau", "train/reward", "eval/validity", "eval/score"} <= expected.keys()
    assert [step for step, _ in expected["train/d_loss"]] == list(range(2, 21, 2))
    assert [step for step, _ in expected["eval/validity"]] == [5, 10, 15, 20]
    assert read_events(tensorboard_run).scalars == expected


def test_the_sample_grid_is_an_image_at_the_last_step(tensorboard_run: Path) -> None:
    images = read_events(tensorboard_run).images
    assert list(images) == ["molecules"]
    [(step, pixels)] = images["molecules"]
    assert step == 20
    np.testing.assert_array_equal(pixels, rgb(RunDir(tensorboard_run).molecules))


def test_a_resumed_run_shows_each_step_once(tmp_path: Path, debug_config: Callable[..., Config]) -> None:
    """A run stops at step 16 after its last checkpoint at step 10 (a crash) and resumes from
    there: TensorBoard shows what an uninterrupted run would have logged."""
    run_dir = tmp_path / "run"
    settings = [
        "train.tensorboard=true", "train.log_every=1", "train.eval_every=5", "train.checkpoint_every=5"
    ]
    Trainer(debug_config(*settings, "train.steps=10"), run_dir, progress=False).train()
    metrics = RunDir(run_dir).metrics
    before_crash = len(metrics.read_text().splitlines())
    shutil.copy(run_dir / LAST, tmp_path / "step-10.safetensors")

    resume_trainer(run_dir, ["train.steps=16"], progress=False).train()
    lost = metrics.read_text().splitlines()[before_crash:]  # steps 11-16, logged after the checkpoint
    shutil.copy(tmp_path / "step-10.safetensors", run_dir / LAST)  # what a crash at step 16 leaves

    resume_trainer(run_dir, ["train.steps=20"], progress=False).train()
    lines = metrics.read_text().splitlines()
    events = read_events(run_dir)

    # metrics.jsonl forgets the lost records as TensorBoard hides them: both show each step once.
    train_steps = [json.loads(line)["step"] for line in lines if "eval" not in json.loads(line)]
    assert train_steps == list(range(1, 21))
    assert events.scalars == expected_scalars(lines)
    assert [step for step, _ in events.scalars["train/d_loss"]] == list(range(1, 21))
    # The event files do hold steps 11 to 16 twice: the restart hid the first ones.
    written = expected_scalars(lines + lost)
    assert events.raw_scalars == sum(len(series) for series in written.values())
    assert events.raw_scalars > sum(len(series) for series in events.scalars.values())


def test_no_event_files_without_the_flag(debug_run: Path) -> None:
    assert list(debug_run.glob(EVENT_FILES)) == []


def train_without_tensorboardx(
    run_dir: Path, data: Path, *overrides: str
) -> subprocess.CompletedProcess[str]:
    """``molgan train`` in a process where ``tensorboardX`` cannot be imported."""
    script = "import sys; sys.modules['tensorboardX'] = None; from molgan.cli import app; app()"
    command = [sys.executable, "-c", script, "train", "-c", str(DEBUG_CONFIG), "--run-dir", str(run_dir),
               "--no-progress", "--set", f"data.path={data}", "--set", "train.steps=2",
               "--set", "train.eval_every=2", *(arg for o in overrides for arg in ("--set", o))]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])},
    )


@pytest.mark.slow
def test_training_needs_no_tensorboard_without_the_flag(tmp_path: Path, small_smiles_path: Path) -> None:
    done = train_without_tensorboardx(tmp_path / "run", small_smiles_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / LAST).is_file()
    assert list((tmp_path / "run").glob(EVENT_FILES)) == []


@pytest.mark.slow
def test_the_flag_without_tensorboard_is_one_error_naming_the_extra(
    tmp_path: Path, small_smiles_path: Path
) -> None:
    done = train_without_tensorboardx(tmp_path / "run", small_smiles_path, "train.tensorboard=true")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: train.tensorboard needs the optional extra 'tensorboard'")
    assert "pip install 'molgan[tensorboard]'" in errors[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
