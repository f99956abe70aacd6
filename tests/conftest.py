"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from molgan.chem import Vocab
from molgan.config import Config, load_config
from molgan.data import qm9_path, read_smiles

# The atom labels that featurizing the bundled QM9 file produces, in vocabulary order.
QM9_ATOMS = ("*", "C", "N", "O", "F", "N+", "O-", "C-", "N-")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep dataset caches of the test session out of the user's ~/.cache."""
    path = tmp_path_factory.mktemp("molgan-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLGAN_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def qm9_vocab() -> Vocab:
    return Vocab(atoms=QM9_ATOMS, max_atoms=9)


@pytest.fixture(scope="session")
def qm9_smiles() -> list[str]:
    """The raw SMILES of the bundled QM9 file, in file order."""
    return read_smiles(qm9_path())


@pytest.fixture
def set_umask() -> Iterator[Callable[[int], int]]:
    """``set_umask(0o027)``: the rest of the test runs under that umask; the old one comes back."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


# --------------------------------------------------------------------------- models and training

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBUG_CONFIG = REPO_ROOT / "configs" / "debug.yaml"


@pytest.fixture(scope="session")
def small_smiles_path(tmp_path_factory: pytest.TempPathFactory, qm9_smiles: list[str]) -> Path:
    """The first 300 QM9 SMILES as a .smi file: enough for the debug config, quick to featurize."""
    path = tmp_path_factory.mktemp("small-data") / "qm9_300.smi"
    path.write_text("\n".join(qm9_smiles[:300]) + "\n")
    return path


@pytest.fixture(scope="session")
def debug_config(small_smiles_path: Path) -> Callable[..., Config]:
    """``debug_config("train.steps=4", ...)``: configs/debug.yaml on the small data file."""

    def make(*overrides: str) -> Config:
        return load_config(DEBUG_CONFIG, [f"data.path={small_smiles_path}", *overrides])

    return make


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory: pytest.TempPathFactory, debug_config: Callable[..., Config]) -> Path:
    """Run directory of a finished debug training run. Shared: copy it before changing anything."""
    from molgan.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("debug-run") / "run"
    Trainer(debug_config(), run_dir, progress=False).train()
    return run_dir


CONDITIONAL_OVERRIDES = (
    "model.conditions=[logp, qed]", "train.rl_estimator=reinforce", "reward.target_weight=1.0",
    "train.condition_dropout=0.3",
)
"""The debug config as a conditional model on logP and QED."""


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory: pytest.TempPathFactory, debug_config: Callable[..., Config]) -> Path:
    """Run directory of a finished debug training run of a model conditioned on logP and QED
    (``CONDITIONAL_OVERRIDES``). Shared: copy it before changing anything."""
    from molgan.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("conditional-run") / "run"
    Trainer(debug_config(*CONDITIONAL_OVERRIDES), run_dir, progress=False).train()
    return run_dir


@pytest.fixture(scope="session")
def toy_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, debug_config: Callable[..., Config], debug_run: Path
) -> Path:
    """Checkpoint of a generator with hand-set output biases that favour small chains (CC, CN, CCO).

    Argmax sampling gives mostly valid molecules; Gumbel-Max sampling a mix of valid molecules,
    disconnected fragments and graphs that do not sanitize, so the filters have work to do.
    The debug vocabulary and architecture; the small data file as its dataset.
    """
    import torch

    from molgan.checkpoint import CheckpointWriter, load_checkpoint
    from molgan.chem import Vocab
    from molgan.models import build_generator

    config = debug_config()
    vocab = Vocab.from_dict(load_checkpoint(debug_run / "last.safetensors").meta["vocab"])
    n, a, e = vocab.max_atoms, vocab.num_atom_types, vocab.num_bond_types
    generator = build_generator(config.model, n, a, e)
    rng = torch.Generator().manual_seed(1234)

    def atom_logits(**by_label: float) -> torch.Tensor:
        row = torch.zeros(a)
        for label, value in by_label.items():
            row[vocab.atom_index["*" if label == "pad" else label]] = value
        return row

    atoms = torch.stack([atom_logits(pad=6.0)] * n)
    atoms[0] = atoms[1] = atom_logits(C=3.0, N=1.5, O=1.5, F=0.5)
    atoms[2] = atom_logits(pad=2.0, C=2.0, N=1.0, O=1.0)
    iu = torch.triu_indices(n, n, offset=1).t().tolist()
    pairs = torch.zeros(len(iu), e)
    pairs[:, 0] = 6.0
    pairs[iu.index([0, 1])] = torch.tensor([0.0, 3.0, 1.5, 0.5])
    pairs[iu.index([1, 2])] = torch.tensor([1.5, 2.0, 0.5, 0.0])
    pairs[iu.index([0, 2])] = torch.tensor([2.0, 0.5, 0.0, 0.0])
    with torch.no_grad():
        # Small random weights so argmax samples still depend on the noise.
        for p in generator.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=rng))
        generator.atom_head.bias.copy_(atoms.flatten())
        generator.pair_head.bias.copy_(pairs.flatten())
    writer = CheckpointWriter(
        {"config": config.model_dump(mode="json"), "vocab": vocab.to_dict(), "step": 0}
    )
    writer.add_module("generator", generator)
    return writer.write(tmp_path_factory.mktemp("toy") / "toy.safetensors")


@pytest.fixture(scope="session")
def api_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with the architecture of configs/debug.yaml for the HTTP service tests
    (see tests/api_support.py: it samples a mix of valid, invalid and repeated molecules)."""
    from tests.api_support import write_template_checkpoint

    path = tmp_path_factory.mktemp("api") / "debug.safetensors"
    return write_template_checkpoint(load_config(DEBUG_CONFIG), path)
