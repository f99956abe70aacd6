"""MOSES as a training dataset: read offline from the molsets wheel, featurized, trained on."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from molgan.chem import canonical_smiles, decode_batch
from molgan.config import load_config
from molgan.data import MOSES_MAX_ATOMS, dataset_from_config, load_dataset, num_pairs
from molgan.moses_files import moses_file

MOSES_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "moses.yaml"
MOSES_ATOMS = ("*", "C", "N", "O", "S", "F", "Cl", "Br")


def _first_rows(k: int) -> list[str]:
    with gzip.open(moses_file("train"), "rt") as f:
        assert f.readline().strip() == "SMILES"
        return [f.readline().strip() for _ in range(k)]


def test_the_config_describes_moses() -> None:
    config = load_config(MOSES_CONFIG)
    assert config.data.path == "moses" and config.data.limit is None
    assert config.data.max_atoms == MOSES_MAX_ATOMS == 27
    assert config.data.atoms == MOSES_ATOMS[1:]
    assert config.data.fractions == pytest.approx((0.98, 0.01, 0.01))
    assert config.train.eval_samples <= 5000 and config.train.max_minutes is not None


def test_a_moses_subset_featurizes_with_the_config_settings(tmp_path: Path) -> None:
    config = load_config(MOSES_CONFIG, ["data.limit=600"]).data
    ds = dataset_from_config(config)
    assert ds.source == "moses" and ds.vocab.atoms == MOSES_ATOMS and ds.vocab.max_atoms == 27
    assert ds.report.read == 600
    # MOSES is already filtered to these atoms and sizes: nothing is skipped.
    assert ds.report.kept == len(ds) == 600 and ds.report.skipped == {}
    assert ds.smiles == [canonical_smiles(s) for s in _first_rows(600)]
    assert ds.atoms.shape == (600, 27) and ds.pairs.shape == (600, num_pairs(27)) == (600, 351)
    atoms, bonds = ds.graphs(torch.arange(600))
    assert decode_batch(atoms, bonds, ds.vocab) == ds.smiles
    # Aromatic rings are stored kekulized: bond types are none, single, double, triple.
    assert int(ds.pairs.max()) <= 3 and (ds.pairs == 2).any()
    again = load_dataset("moses", max_atoms=27, vocab=ds.vocab, limit=600)
    assert again.cache_hit and again.smiles == ds.smiles


def test_a_few_training_steps_on_a_moses_subset(tmp_path: Path) -> None:
    from molgan.training.trainer import Trainer

    config = load_config(MOSES_CONFIG, [
        "data.limit=400", "train.steps=3", "train.batch_size=16", "train.eval_every=3",
        "train.eval_samples=32", "train.checkpoint_every=3", "train.log_every=1",
        "train.max_minutes=null", "train.keep_snapshots=false",
    ])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert len(trainer.train_data) == round(400 * 0.98)
    real, _ = trainer.real_batch()
    assert real.atoms.shape == (16, 27, 8) and real.bonds.shape == (16, 27, 27, 4)
    result = trainer.train()
    assert result["step"] == 3
    assert (tmp_path / "run" / "best.safetensors").is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any('"eval"' in line for line in lines)
