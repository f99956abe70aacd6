"""Bad files and damaged checkpoints: each is one line naming the file and a usage error (exit 2),
on every path that reads it, never a traceback or a silent empty result."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from molgan.checkpoint import CheckpointError, CheckpointWriter, bundled_checkpoint_path, load_checkpoint
from molgan.cli import app
from molgan.data import DatasetError, MissingColumn, read_smiles
from molgan.sampling import MoleculeSampler
from tests.conftest import DEBUG_CONFIG

MOLGAN = [sys.executable, "-m", "molgan"]


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own, as a user runs it (torchrun re-launch included)."""
    return subprocess.run([*MOLGAN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-files")
    smiles = "\n".join(["C", "CC", "CCO", "CCN"] * 50).encode() + b"\n"
    packed = gzip.compress(smiles)
    files = {
        "not_gzip": (folder / "plain.smi.gz", smiles),
        "truncated": (folder / "cut.smi.gz", packed[: len(packed) // 2]),
        "binary": (folder / "random.smi", bytes(range(128, 256)) * 40),
        "sdf_not_gzip": (folder / "plain.sdf.gz", b"not an sdf, not gzip\n"),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {name: path for name, (path, _) in files.items()}


@pytest.mark.parametrize(
    ("name", "problem"),
    [("not_gzip", "not a gzip file"), ("truncated", "damaged or truncated gzip file"),
     ("binary", "not UTF-8 text"), ("sdf_not_gzip", "not a gzip file")],
)
def test_an_unreadable_file_is_one_line_naming_it(
    bad_files: dict[str, Path], name: str, problem: str, tmp_path: Path
) -> None:
    path = bad_files[name]
    with pytest.raises(DatasetError, match=problem):
        read_smiles(path)
    result = CliRunner().invoke(app, ["data", "prepare", str(path), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {result.stderr.split(': ', 2)[2]}"
    assert problem in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_training_on_an_unreadable_file_answers_alike_with_one_or_two_processes(
    bad_files: dict[str, Path], processes: int, tmp_path: Path
) -> None:
    # Two processes: the check runs before torchrun starts, so no process group, no torchrun
    # traceback, and the error once.
    done = run("train", "-c", DEBUG_CONFIG, "--set", f"data.path={bad_files['not_gzip']}",
               "--set", f"train.processes={processes}", "--run-dir", tmp_path / "run", "--no-progress")
    one_error_line(done, str(bad_files["not_gzip"]), "not a gzip file")
    assert "torch.distributed" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_check_the_batch_split_before_starting(tmp_path: Path, small_smiles_path: Path) -> None:
    done = run("train", "-c", DEBUG_CONFIG, "--set", f"data.path={small_smiles_path}",
               "--set", "train.processes=5", "--run-dir", tmp_path / "run", "--no-progress")
    one_error_line(done, "train.batch_size (12) must split over 5 processes")


def test_a_byte_order_mark_is_not_part_of_the_column_name(tmp_path: Path) -> None:
    table = tmp_path / "sheet.csv"
    table.write_bytes("\ufeffSMILES,name\nCCO,ethanol\nCC,ethane\n".encode())
    assert read_smiles(table) == ["CCO", "CC"]


def test_a_missing_column_is_named_with_the_option_of_each_interface(tmp_path: Path) -> None:
    table = tmp_path / "sheet.csv"
    table.write_text("mol,name\nCCO,ethanol\n")
    with pytest.raises(MissingColumn, match=r"no column 'smiles' among columns \['mol', 'name'\]; "
                                            r"pass smiles_column= to choose one"):
        read_smiles(table)
    result = CliRunner().invoke(app, ["data", "prepare", str(table), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.endswith("; choose one with --smiles-column\n")
    result = CliRunner().invoke(app, ["train", "-c", str(DEBUG_CONFIG), "--set", f"data.path={table}",
                                      "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2 and result.stderr.endswith("; choose one with data.smiles_column\n")


# --------------------------------------------------------------------------- checkpoints


def copy_with(checkpoint: Path, out: Path, change: str) -> Path:
    """``checkpoint`` written again with its weights made non-finite (``nan``/``inf``)."""
    ckpt = load_checkpoint(checkpoint)
    writer = CheckpointWriter(dict(ckpt.meta))
    writer.tensors.update(ckpt.tensors)
    name = next(k for k in writer.tensors if k.startswith("generator.") and k.endswith("weight"))
    writer.tensors[name] = torch.full_like(writer.tensors[name], float(change))
    return writer.write(out)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_checkpoint_with_non_finite_weights_is_refused(
    toy_checkpoint: Path, tmp_path: Path, value: str
) -> None:
    broken = copy_with(toy_checkpoint, tmp_path / "diverged.safetensors", value)
    with pytest.raises(CheckpointError, match="NaN or infinite values in generator"):
        MoleculeSampler.load(broken)
    result = CliRunner().invoke(app, ["sample", str(broken), "-n", "5"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {broken} holds NaN or infinite values in generator.")


@pytest.mark.slow
def test_the_server_does_not_start_on_a_checkpoint_with_nan_weights(
    toy_checkpoint: Path, tmp_path: Path
) -> None:
    broken = copy_with(toy_checkpoint, tmp_path / "diverged.safetensors", "nan")
    done = run("serve", "--checkpoint", broken, "--port", "8977", timeout=120)
    one_error_line(done, str(broken), "NaN or infinite values")
    assert "Uvicorn running" not in done.stderr


def test_flipped_bytes_in_the_tensors_are_found(toy_checkpoint: Path, tmp_path: Path) -> None:
    data = bytearray(toy_checkpoint.read_bytes())
    for offset in range(len(data) - 200, len(data) - 100):  # in the last tensors' bytes
        data[offset] ^= 0x5A
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged: its tensors do not match the digest"):
        load_checkpoint(damaged)
    result = CliRunner().invoke(app, ["sample", str(damaged), "-n", "5"])
    assert result.exit_code == 2 and "damaged" in result.stderr and result.stderr.count("\n") == 1


def test_every_checkpoint_written_records_its_digest_and_older_ones_still_load(toy_checkpoint: Path) -> None:
    assert len(load_checkpoint(toy_checkpoint).meta["tensors_sha256"]) == 64
    bundled = load_checkpoint(bundled_checkpoint_path("qm9"))  # written before digests existed
    assert "tensors_sha256" not in bundled.meta
    assert MoleculeSampler.load("qm9").sample(5, seed=0)
