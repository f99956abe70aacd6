"""Checkpoint files: round trip, atomic writes, metadata, and clear errors for bad files."""

from __future__ import annotations

import copy
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from molgan.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriter,
    load_checkpoint,
    load_state,
)
from molgan.sampling import MoleculeSampler
from molgan.training.run_dir import BEST, LAST, RunDir
from molgan.training.trainer import Trainer, resume_trainer


def small_net(seed: int) -> nn.Module:
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=rng))
    return net


def adam_steps(net: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    x = torch.linspace(-1, 1, 12).view(4, 3)
    for _ in range(steps):
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def rewrite(src: Path, dst: Path, mutate: Callable[[dict[str, Any]], None] | None = None,
            drop: str | None = None) -> Path:
    """Copy a checkpoint with changed metadata and/or without the tensors of one module."""
    ckpt = load_checkpoint(src)
    meta = copy.deepcopy(ckpt.meta)
    if mutate is not None:
        mutate(meta)
    writer = CheckpointWriter(meta)
    writer.tensors = {k: v for k, v in ckpt.tensors.items() if drop is None or not k.startswith(f"{drop}.")}
    return writer.write(dst)


# -------------------------------------------------------------------------------- writer


def test_writer_round_trip_modules_optimizer_and_rng(tmp_path: Path) -> None:
    net = small_net(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05, betas=(0.5, 0.9))
    adam_steps(net, opt, 3)
    rng = torch.Generator().manual_seed(7)
    torch.rand(10, generator=rng)

    writer = CheckpointWriter({"step": 3, "note": "round trip"})
    writer.add_module("net", net)
    writer.add_optimizer("net", opt)
    writer.add_rng("train", rng)
    path = writer.write(tmp_path / "ckpt.safetensors")

    ckpt = load_checkpoint(path)
    assert ckpt.meta["step"] == 3 and ckpt.meta["note"] == "round trip"
    assert ckpt.has("net") and not ckpt.has("other")

    restored = small_net(1)
    restored_opt = torch.optim.Adam(restored.parameters(), lr=1.0)
    load_state(restored, ckpt.state_dict("net"), "net")
    restored_opt.load_state_dict(ckpt.optimizer_state("net"))
    for (name, a), b in zip(net.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert restored_opt.param_groups[0]["lr"] == 0.05
    assert tuple(restored_opt.param_groups[0]["betas"]) == (0.5, 0.9)
    for slot in ("exp_avg", "exp_avg_sq", "step"):
        for index in opt.state_dict()["state"]:
            assert torch.equal(opt.state_dict()["state"][index][slot],
                               restored_opt.state_dict()["state"][index][slot]), slot
    # Training on from the restored state is training on from the original one.
    adam_steps(net, opt, 2)
    adam_steps(restored, restored_opt, 2)
    for a, b in zip(net.parameters(), restored.parameters(), strict=True):
        assert torch.equal(a, b)

    other = torch.Generator()
    other.set_state(ckpt.rng_state("train"))
    assert torch.equal(torch.rand(5, generator=other), torch.rand(5, generator=rng))


def test_missing_parts_are_checkpoint_errors(tmp_path: Path) -> None:
    writer = CheckpointWriter({})
    writer.add_module("net", small_net(0))
    ckpt = load_checkpoint(writer.write(tmp_path / "c.safetensors"))
    with pytest.raises(CheckpointError, match="no weights for 'generator'"):
        ckpt.state_dict("generator")
    with pytest.raises(CheckpointError, match="no optimiser state"):
        ckpt.optimizer_state("net")
    with pytest.raises(CheckpointError, match="no random state"):
        ckpt.rng_state("train")


def test_load_state_names_the_mismatch() -> None:
    state = small_net(0).state_dict()
    wide = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*0\.weight"):
        load_state(wide, state, "net")
    with pytest.raises(CheckpointError, match="missing"):
        load_state(small_net(1), {k: v for k, v in state.items() if k != "2.bias"}, "net")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_state(small_net(1), state | {"3.weight": torch.zeros(1)}, "net")


def test_atomic_write_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    for step in (1, 2):
        writer = CheckpointWriter({"step": step})
        writer.add_module("net", small_net(step))
        writer.write(path)
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    assert load_checkpoint(path).meta["step"] == 2


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoints_are_readable_by_others(tmp_path: Path, set_umask: Callable[[int], int]) -> None:
    # As docs/training.md promises: 0644 under the usual umask 022, so another user (a container) can
    # read them. safetensors replaces the file it is given with a private one of its own.
    set_umask(0o022)
    path = tmp_path / "c.safetensors"
    for step in (1, 2):  # a new file, then one written over an existing file
        writer = CheckpointWriter({"step": step})
        writer.add_module("net", small_net(step))
        assert mode(writer.write(path)) == 0o644
    set_umask(0o027)  # a stricter umask is honoured, as for any new file
    assert mode(writer.write(path)) == 0o640


def test_training_run_checkpoints_are_readable_by_others(
    tmp_path: Path, debug_config: Callable, set_umask: Callable[[int], int]
) -> None:
    set_umask(0o022)
    run_dir = tmp_path / "run"
    Trainer(debug_config("train.steps=20", "train.keep_snapshots=true"), run_dir, progress=False).train()
    snapshots = [path for _, path in RunDir(run_dir).snapshots()]
    assert len(snapshots) == 2  # every evaluation: step 15 (eval_every) and the last step
    for path in [run_dir / LAST, run_dir / BEST, *snapshots]:
        assert mode(path) == 0o644, path.name


def test_failed_write_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "c.safetensors"
    target.mkdir()  # a directory cannot be replaced by a file
    (target / "keep").write_text("x")
    writer = CheckpointWriter({})
    writer.add_module("net", small_net(0))
    with pytest.raises(OSError):
        writer.write(target)
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    assert (target / "keep").read_text() == "x"


# ---------------------------------------------------------------------- trainer checkpoints


def test_training_checkpoint_metadata(debug_run: Path, debug_config: Callable) -> None:
    ckpt = load_checkpoint(debug_run / LAST)
    meta = ckpt.meta
    assert meta["format"] == FORMAT and meta["format_version"] == FORMAT_VERSION
    assert meta["config"] == debug_config().model_dump(mode="json")
    assert meta["vocab"]["atoms"][0] == "*" and meta["vocab"]["max_atoms"] == 9
    assert meta["step"] == 30 and meta["train_state"]["step"] == 30
    assert {"python", "torch", "rdkit", "numpy", "molgan"} <= set(meta["versions"])
    assert meta["versions"]["torch"] == torch.__version__
    assert set(meta["optimizers"]) == {"generator", "discriminator", "reward"}
    for module in ("generator", "discriminator", "reward"):
        assert ckpt.has(module)
    assert ckpt.rng_state("train").dtype == torch.uint8
    assert ckpt.rng_state("global").dtype == torch.uint8
    assert "validity" in meta["metrics"]

    best = load_checkpoint(debug_run / BEST)
    assert best.has("generator") and not best.has("discriminator") and not best.has("reward")
    assert best.meta["step"] == best.meta["train_state"]["best_step"]


# ------------------------------------------------------------------------------ bad files


def _corruptions(data: bytes) -> dict[str, bytes]:
    header_len = int.from_bytes(data[:8], "little")
    return {
        "empty": b"",
        "truncated_in_length": data[:5],
        "truncated_in_header": data[: 8 + header_len // 2],
        "truncated_in_tensors": data[: len(data) - 100],
        "header_garbled": data[:8] + b"#" * 32 + data[40:],
        "huge_header_length": (2**40).to_bytes(8, "little") + data[8:],
        "text": b"this is not a checkpoint at all\n" * 10,
    }


CORRUPTIONS = ["empty", "truncated_in_length", "truncated_in_header", "truncated_in_tensors",
               "header_garbled", "huge_header_length", "text"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupted_or_truncated_checkpoint_is_a_clear_error(
    debug_run: Path, tmp_path: Path, kind: str
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_corruptions((debug_run / LAST).read_bytes())[kind])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        MoleculeSampler.load(bad)


def test_truncated_last_checkpoint_blocks_resume(debug_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(debug_run, run_dir)
    data = (run_dir / LAST).read_bytes()
    (run_dir / LAST).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        resume_trainer(run_dir, progress=False)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        MoleculeSampler.load(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        resume_trainer(tmp_path, progress=False)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "not a molgan checkpoint"),
        ({"other": "x"}, "not a molgan checkpoint"),
        ({"molgan": "{not json"}, "not a molgan checkpoint"),
        ({"molgan": "[1, 2]"}, "not a mapping"),
        ({"molgan": json.dumps({"format": "something-else"})}, "format 'something-else'"),
        ({"molgan": json.dumps({"format": FORMAT, "format_version": 99})}, "version 99"),
    ],
    ids=["no_metadata", "no_molgan_key", "not_json", "json_list", "other_format", "future_version"],
)
def test_foreign_safetensors_files_are_rejected(
    tmp_path: Path, metadata: dict[str, str] | None, message: str
) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["vocab"].update(atoms=[*m["vocab"]["atoms"], "S"]), "does not match"),
        (lambda m: m["vocab"].update(max_atoms=8), "does not match"),
        (lambda m: m["config"]["model"].update(z_dim=8), "does not match"),
        (lambda m: m["config"]["model"].update(generator_dims=[11, 13, 17]), "does not match"),
        (lambda m: m.pop("vocab"), "lacks a usable config or vocabulary"),
        (lambda m: m.update(config=["not", "a", "mapping"]), "lacks a usable config or vocabulary"),
        (lambda m: m["config"]["train"].update(unknown_key=1), "unknown_key"),
    ],
    ids=["extra_atom", "max_atoms", "z_dim", "generator_dims", "no_vocab", "config_list", "config_key"],
)
def test_sampler_rejects_checkpoint_for_another_vocabulary_or_architecture(
    debug_run: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = rewrite(debug_run / LAST, tmp_path / "other.safetensors", change)
    with pytest.raises(CheckpointError, match=message):
        MoleculeSampler.load(path)


def test_sampler_rejects_checkpoint_without_generator(debug_run: Path, tmp_path: Path) -> None:
    path = rewrite(debug_run / LAST, tmp_path / "no_generator.safetensors", drop="generator")
    with pytest.raises(CheckpointError, match="no weights for 'generator'"):
        MoleculeSampler.load(path)


def copy_run(debug_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(debug_run, run_dir)
    return run_dir


def test_resume_rejects_another_architecture(debug_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(debug_run, tmp_path)
    with pytest.raises(CheckpointError, match="model settings differ"):
        resume_trainer(run_dir, ["model.z_dim=5"], progress=False)


def test_resume_rejects_another_vocabulary(debug_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(debug_run, tmp_path)
    other = tmp_path / "sulfur.smi"
    other.write_text("\n".join(["CS", "CCS", "CSC", "OCS", "SCCS", "CC(C)S", "CSCC", "NCS",
                                "CCCS", "SCO", "CSCO", "CCSC", "S=CC", "CC=S"]) + "\n")
    with pytest.raises(CheckpointError, match="vocabulary differs"):
        resume_trainer(run_dir, [f"data.path={other}"], progress=False)


@pytest.mark.parametrize(
    ("change", "drop", "message"),
    [
        (lambda m: m.pop("train_state"), None, "training state"),
        (lambda m: m["train_state"].update(bogus=1), None, "training state"),
        (lambda m: m.pop("config"), None, "no usable config"),
        (None, "discriminator", "no weights for 'discriminator'"),
        (lambda m: m["optimizers"].pop("generator"), None, "no optimiser state"),
    ],
    ids=["no_train_state", "bad_train_state", "no_config", "no_discriminator", "no_optimizer"],
)
def test_resume_rejects_incomplete_checkpoint(
    debug_run: Path, tmp_path: Path, change: Callable | None, drop: str | None, message: str
) -> None:
    run_dir = copy_run(debug_run, tmp_path)
    rewrite(debug_run / LAST, run_dir / LAST, change, drop)
    with pytest.raises(CheckpointError, match=message):
        resume_trainer(run_dir, progress=False)
