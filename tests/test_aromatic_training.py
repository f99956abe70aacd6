"""Training, checkpointing and sampling with aromatic bonds as a bond type (``data.aromatic``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from molgan.checkpoint import load_checkpoint
from molgan.chem import AROMATIC_BOND, AROMATIC_BOND_TYPES, Vocab, decode, is_valid, to_mol
from molgan.cli import app
from molgan.config import Config
from molgan.sampling import MoleculeSampler
from molgan.training.run_dir import LAST
from molgan.training.trainer import Trainer


@pytest.fixture(scope="module")
def aromatic_smiles_path(tmp_path_factory: pytest.TempPathFactory, qm9_smiles: list[str]) -> Path:
    """The first 150 QM9 molecules with an aromatic ring (pyrroles included) and 150 without."""
    aromatic, plain = [], []
    for s in qm9_smiles[:6000]:
        mol = to_mol(s)
        (aromatic if any(a.GetIsAromatic() for a in mol.GetAtoms()) else plain).append(s)
    path = tmp_path_factory.mktemp("aromatic-data") / "qm9_aromatic.smi"
    path.write_text("\n".join(aromatic[:150] + plain[:150]) + "\n")
    return path


def test_a_debug_run_with_aromatic_bonds_trains_checkpoints_and_samples(
    tmp_path: Path, debug_config: Callable[..., Config], aromatic_smiles_path: Path
) -> None:
    config = debug_config(f"data.path={aromatic_smiles_path}", "data.aromatic=true",
                          "train.steps=10", "train.eval_every=5", "train.checkpoint_every=5")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    data = trainer.train_data
    assert data.vocab.aromatic and "NH" in data.vocab.atoms
    assert int((data.pairs == AROMATIC_BOND).sum()) > 500
    trainer.train()

    ckpt = load_checkpoint(tmp_path / "run" / LAST)
    assert ckpt.meta["config"]["data"]["aromatic"] is True
    vocab = Vocab.from_dict(ckpt.meta["vocab"])
    assert vocab == data.vocab and vocab.bonds == AROMATIC_BOND_TYPES
    evaluations = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
                   .splitlines() if "eval" in json.loads(line)]
    assert [e["step"] for e in evaluations] == [5, 10]

    sampler = MoleculeSampler.load(tmp_path / "run" / LAST)
    assert sampler.vocab == vocab
    settings = sampler.settings(mode="gumbel", temperature=1.5)
    atoms, bonds = sampler.graphs(200, seed=3, settings=settings)
    assert int((bonds == AROMATIC_BOND).sum()) > 0  # the generator does draw aromatic bonds
    samples = sampler.sample(200, seed=3, settings=settings)
    # The batch decoder of the sampler gives what the plain decoder gives, graph by graph.
    assert [s.smiles for s in samples] == [decode(a, b, vocab) for a, b in zip(atoms, bonds,
                                                                               strict=True)]
    assert [s.valid for s in samples] == [s.smiles is not None and is_valid(s.smiles)
                                          for s in samples]

    out = tmp_path / "samples.jsonl"
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "run" / LAST), "-n", "20",
                                      "--seed", "1", "--format", "jsonl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 20

