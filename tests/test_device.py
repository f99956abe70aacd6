"""Device selection: names, unavailable devices as clear errors, checkpoints that load onto another
device, and the batch split over processes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import molgan
from molgan.api.settings import get_settings
from molgan.checkpoint import CheckpointWriter, load_checkpoint
from molgan.cli import app
from molgan.config import Config, ConfigError
from molgan.device import DeviceError, check_device_name, graphs_to_host, resolve_device
from molgan.sampling import MoleculeSampler, generator_from_checkpoint
from molgan.training.distributed import rank_seed
from molgan.training.run_dir import LAST
from molgan.training.trainer import Trainer, resume_trainer
from tests.conftest import DEBUG_CONFIG
from tests.test_training import training_records

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_CUDA = "'cuda' is not available: this machine has no CUDA device (or torch was built without CUDA)"


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names(name: str) -> None:
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "", "mps:0", " cpu"])
def test_what_is_not_a_device_name(name: str) -> None:
    with pytest.raises(DeviceError, match="is not a device; use auto, cpu, cuda, cuda:K or mps"):
        check_device_name(name)


@no_cuda
def test_auto_is_the_cpu_without_cuda_and_cuda_is_an_error() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=f"'{name}' is not available"):
            resolve_device(name)


def test_graphs_go_to_the_cpu_as_bytes() -> None:
    atoms, bonds = torch.tensor([[1, 2, 0]]), torch.tensor([[[0, 3, 0], [3, 0, 0], [0, 0, 0]]])
    host_atoms, host_bonds = graphs_to_host(atoms, bonds)
    assert host_atoms.dtype == host_bonds.dtype == torch.uint8
    assert host_atoms.device.type == host_bonds.device.type == "cpu"
    assert torch.equal(host_atoms.long(), atoms) and torch.equal(host_bonds.long(), bonds)


# ------------------------------------------------------------------------------ configuration


def test_a_bad_train_device_is_a_config_error(debug_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=re.escape("train.device: Value error, 'gpu' is not a device")):
        debug_config("train.device=gpu")
    assert debug_config().train.device == "auto"


@no_cuda
def test_an_unavailable_train_device_is_a_config_error(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"train.device: {NO_CUDA}")):
        Trainer(debug_config("train.device=cuda"), tmp_path, progress=False)


def test_the_batch_must_split_over_the_processes(debug_config: Callable[..., Config]) -> None:
    assert debug_config().batch_share(1) == 12
    assert debug_config().batch_share(4) == 3
    grouped = debug_config("train.rl_estimator=reinforce", "train.rl_samples_per_z=2")
    assert grouped.batch_share(2) == 6
    for config, world in ((debug_config(), 5), (debug_config(), 12), (grouped, 4)):
        with pytest.raises(ValueError, match=rf"train.batch_size \(12\) must split over {world} processes"):
            config.batch_share(world)


def test_one_rule_says_when_rl_samples_per_z_must_divide_the_batch(
    debug_config: Callable[..., Config],
) -> None:
    # Only REINFORCE draws several samples per noise vector: with the reward network the setting
    # is unused, and the config and the trainer agree that it does not constrain the batch.
    unused = debug_config("train.rl_estimator=reward_net", "train.rl_samples_per_z=5")
    assert unused.batch_share(2) == 6
    with pytest.raises(ConfigError, match=r"train.rl_samples_per_z \(5\)"):
        debug_config("train.rl_estimator=reinforce", "train.rl_samples_per_z=5")


# -------------------------------------------------------------------------------- command line


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@no_cuda
@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_an_unavailable_device_is_a_usage_error(command: str, toy_checkpoint: Path) -> None:
    assert invoke(command, toy_checkpoint, "-n", "20", "--device", "cuda") == (
        2, "", f"error: --device {NO_CUDA}\n"
    )
    code, out, err = invoke(command, toy_checkpoint, "-n", "20", "--device", "gpu")
    assert (code, out) == (2, "")
    assert err == "error: --device 'gpu' is not a device; use auto, cpu, cuda, cuda:K or mps\n"


@no_cuda
def test_an_unavailable_training_device_is_a_usage_error(tmp_path: Path, small_smiles_path: Path) -> None:
    common = ["train", "-c", DEBUG_CONFIG, "--run-dir", tmp_path / "run", "--no-progress",
              "--set", f"data.path={small_smiles_path}"]
    assert invoke(*common, "--device", "cuda") == (2, "", f"error: --device {NO_CUDA}\n")
    assert invoke(*common, "--set", "train.device=cuda") == (2, "", f"error: train.device {NO_CUDA}\n")
    code, _, err = invoke(*common, "--device", "cuda:x")
    assert code == 2
    assert err == "error: --device 'cuda:x' is not a device; use auto, cpu, cuda, cuda:K or mps\n"
    assert not (tmp_path / "run").exists()


@no_cuda
def test_an_unavailable_device_stops_serve_with_one_line(
    toy_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve hands its settings to the workers through the environment; monkeypatch restores it.
    monkeypatch.setenv("MOLGAN_CHECKPOINT", str(toy_checkpoint))
    get_settings.cache_clear()
    try:
        assert invoke("serve", "--port", "1", "--device", "cuda") == (2, "", f"error: --device {NO_CUDA}\n")
        monkeypatch.setenv("MOLGAN_DEVICE", "cuda")
        get_settings.cache_clear()
        assert invoke("serve", "--port", "1") == (2, "", f"error: MOLGAN_DEVICE {NO_CUDA}\n")
        monkeypatch.setenv("MOLGAN_DEVICE", "gpu")
        get_settings.cache_clear()
        code, out, err = invoke("serve", "--port", "1")
    finally:
        get_settings.cache_clear()
    assert (code, out) == (2, "")
    assert err.startswith("error: invalid setting MOLGAN_DEVICE: Value error, 'gpu' is not a device")
    assert err.count("\n") == 1


@no_cuda
def test_an_unavailable_device_in_a_real_process_has_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "molgan", "sample", "-n", "5", "--device", "cuda"],
        capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"error: --device {NO_CUDA}\n")


def test_the_cpu_device_samples_what_the_default_samples(toy_checkpoint: Path) -> None:
    default = invoke("sample", toy_checkpoint, "-n", "30", "--seed", "3")
    assert default[0] == 0
    assert invoke("sample", toy_checkpoint, "-n", "30", "--seed", "3", "--device", "cpu") == default
    if not torch.cuda.is_available():
        assert invoke("sample", toy_checkpoint, "-n", "30", "--seed", "3", "--device", "auto") == default
        with pytest.raises(DeviceError, match="'cuda' is not available"):
            molgan.load(toy_checkpoint, device="cuda")
    python = [m.smiles for m in molgan.load(toy_checkpoint, device="cpu").generate(30, seed=3)]
    assert python == [m.smiles for m in molgan.load(toy_checkpoint).generate(30, seed=3)]


# ----------------------------------------------------------------------- checkpoints and devices


def test_a_checkpoint_maps_onto_another_device(debug_run: Path) -> None:
    """Tensors are written from the CPU and read onto the device asked for. The meta device (shapes
    and dtypes, no data) stands in for a GPU: only the random states stay on the CPU."""
    path = debug_run / LAST
    on_cpu = load_checkpoint(path)
    elsewhere = load_checkpoint(path, map_location="meta")
    assert on_cpu.tensors.keys() == elsewhere.tensors.keys()
    for key, tensor in on_cpu.tensors.items():
        assert tensor.device.type == "cpu", key
        moved = elsewhere.tensors[key]
        assert (moved.shape, moved.dtype) == (tensor.shape, tensor.dtype), key
        if key.startswith("rng."):
            assert torch.equal(moved, tensor)
        else:
            assert moved.device.type == "meta", key
    generator, _, vocab = generator_from_checkpoint(elsewhere, torch.device("meta"))
    assert {p.device.type for p in generator.parameters()} == {"meta"}
    logits = generator(generator.noise(3))
    assert logits.atoms.device.type == "meta"
    assert logits.atoms.shape == (3, vocab.max_atoms, vocab.num_atom_types)
    # And back on the CPU, the same weights as the trainer saved.
    sampler = MoleculeSampler.load(path, device="cpu")
    assert sampler.device == torch.device("cpu")
    for name, value in sampler.generator.state_dict().items():
        assert torch.equal(value, on_cpu.tensors[f"generator.{name}"]), name


def as_if_written_on_cuda(path: Path) -> None:
    """Rewrite a trainer's checkpoint as a CUDA run writes it: the same CPU tensors, but the
    generator state of a CUDA generator (16 bytes: seed and offset) and ``rng_device`` cuda."""
    ckpt = load_checkpoint(path)
    meta = dict(ckpt.meta)
    meta["processes"] = dict(meta["processes"], rng_device="cuda")
    writer = CheckpointWriter(meta)
    writer.tensors = dict(ckpt.tensors)
    writer.tensors["rng.train"] = torch.arange(16, dtype=torch.uint8)
    writer.write(path)


def test_a_run_from_a_gpu_resumes_on_the_cpu(tmp_path: Path, debug_config: Callable[..., Config]) -> None:
    settings = ["train.steps=4", "train.log_every=1", "train.rl_start_step=0", "train.checkpoint_every=2"]
    Trainer(debug_config(*settings), tmp_path / "gpu", progress=False).train()
    as_if_written_on_cuda(tmp_path / "gpu" / LAST)
    shutil.copytree(tmp_path / "gpu", tmp_path / "again")
    records = []
    for name in ("gpu", "again"):
        trainer = resume_trainer(tmp_path / name, ["train.steps=7"], progress=False)
        assert trainer.state.step == 4
        # The CUDA generator's state means nothing to a CPU generator: fresh streams instead.
        expected = torch.Generator().manual_seed(rank_seed(0, 4, 0)).get_state()
        assert torch.equal(trainer.rng.get_state(), expected)
        assert trainer.train()["step"] == 7
        records.append(training_records(tmp_path / name))
    assert sorted(records[0]) == list(range(1, 8))
    assert records[0] == records[1]  # deterministic on the CPU
    assert load_checkpoint(tmp_path / "gpu" / LAST).meta["processes"]["rng_device"] == "cpu"
