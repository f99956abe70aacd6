"""The atoms-first generator (``model.generator: atoms_first``): bond logits computed from the
sampled atoms, in training (relaxation, REINFORCE) and at test time, its checkpoints and runs."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from molgan.checkpoint import CheckpointError, CheckpointWriter, bundled_checkpoint_path, load_checkpoint
from molgan.cli import app
from molgan.config import ConfigError, GeneratorKind, load_config
from molgan.models import (
    GENERATORS,
    AtomsFirstGenerator,
    AtomsFirstLogits,
    GraphLogits,
    MLPGenerator,
    build_generator,
)
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings
from molgan.training.run_dir import LAST
from molgan.training.trainer import Trainer, resume_trainer
from tests.conftest import DEBUG_CONFIG
from tests.test_models import A, B, E, N, seeded
from tests.test_training import training_records

AF = "model.generator=atoms_first"


def atoms_first_generator(seed: int = 0, n: int = N, a: int = A, e: int = E) -> AtomsFirstGenerator:
    cfg = load_config(DEBUG_CONFIG, [AF]).model
    generator = seeded(build_generator(cfg, n, a, e), seed)
    assert isinstance(generator, AtomsFirstGenerator)
    return generator


def logits_of(seed: int = 0, batch: int = B) -> AtomsFirstLogits:
    generator = atoms_first_generator(seed)
    return generator(generator.noise(batch, torch.Generator().manual_seed(seed)))


def one_hot(atoms: torch.Tensor, a: int = A) -> torch.Tensor:
    return F.one_hot(atoms, a).float()


# ----------------------------------------------------------------------------- the config


def test_the_generator_kinds_of_config_and_models_agree() -> None:
    assert set(get_args(GeneratorKind)) == set(GENERATORS)


def test_mlp_is_the_default_and_an_unknown_kind_is_an_error_naming_the_key() -> None:
    assert load_config(DEBUG_CONFIG).model.generator == "mlp"
    assert isinstance(build_generator(load_config(DEBUG_CONFIG).model, N, A, E), MLPGenerator)
    with pytest.raises(ConfigError, match=r"model\.generator"):
        load_config(DEBUG_CONFIG, ["model.generator=recurrent"])


# ------------------------------------------------------------------------ shapes, symmetry


def test_pairs_and_entropy_describe_the_bonds_given_the_most_likely_atoms() -> None:
    logits = logits_of()
    assert logits.nodes.shape == (B, N, AtomsFirstGenerator.node_dim)
    given = logits.given(one_hot(logits.atoms.argmax(-1)))
    assert torch.equal(logits.pairs, given.pairs)
    assert torch.equal(logits.entropy(), given.entropy())
    assert logits.entropy().shape == (B,)


def test_bond_logits_follow_a_renumbering_of_the_atoms() -> None:
    """The pair features are symmetric in (i, j) and the attention does not know atom order, so
    renumbering the atoms (embeddings and types alike) renumbers the bond logits."""
    logits = logits_of()
    # In double precision: the comparison is then about the function, not about summation order.
    logits = AtomsFirstLogits(
        logits.atoms.double(), logits.nodes.double(), copy.deepcopy(logits.bond_stage).double()
    )
    atoms = one_hot(torch.randint(A, (B, N), generator=torch.Generator().manual_seed(1))).double()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(2))
    full = logits.given(atoms).bonds()
    renumbered = AtomsFirstLogits(logits.atoms[:, perm], logits.nodes[:, perm], logits.bond_stage)
    permuted = renumbered.given(atoms[:, perm]).bonds()
    torch.testing.assert_close(permuted, full[:, perm][:, :, perm])


# ------------------------------------------------------------- bonds that know the atoms


def test_changing_one_atom_changes_its_bond_logits() -> None:
    logits = logits_of()
    atoms = torch.randint(A, (B, N), generator=torch.Generator().manual_seed(4))
    other = atoms.clone()
    other[:, 3] = (atoms[:, 3] + 1) % A
    before = logits.given(one_hot(atoms)).bonds()
    after = logits.given(one_hot(other)).bonds()
    off_diagonal = [j for j in range(N) if j != 3]
    # In every graph the bond logits of atom 3 change (its diagonal is fixed "no bond") ...
    assert not torch.isclose(before[:, 3, off_diagonal], after[:, 3, off_diagonal]).all((1, 2)).any()
    # ... and most of its bonds change their logits.
    changed = ~torch.isclose(before[:, 3, off_diagonal], after[:, 3, off_diagonal]).all(-1)
    assert changed.float().mean() > 0.5
    # The atom logits are the trunk's, whatever atoms the bonds are conditioned on.
    assert torch.equal(logits.given(one_hot(atoms)).atoms, logits.atoms)


def test_straight_through_gradient_reaches_the_atom_logits_through_the_bonds() -> None:
    logits = logits_of()
    weights = torch.randn(B, N, N, E, generator=torch.Generator().manual_seed(6))
    for estimator in ("st_gumbel", "st"):
        atom_logits = logits.atoms.detach().requires_grad_()
        graphs = AtomsFirstLogits(atom_logits, logits.nodes.detach(), logits.bond_stage).relax(
            estimator, 0.8, torch.Generator().manual_seed(7)
        )
        assert set(graphs.atoms.unique().tolist()) == {0.0, 1.0}
        (graphs.bonds * weights).sum().backward()  # a loss of the bonds alone
        assert atom_logits.grad is not None and atom_logits.grad.abs().sum() > 0, estimator
    # With independent choices the same loss leaves the atom logits without a gradient.
    independent = GraphLogits(logits.atoms.detach().requires_grad_(), logits.pairs.detach().requires_grad_())
    (independent.relax("st_gumbel", 0.8, torch.Generator().manual_seed(7)).bonds * weights).sum().backward()
    assert independent.atoms.grad is None


# ------------------------------------------------------------------------ log-probability


@pytest.mark.parametrize(("temperature", "min_p"), [(1.0, 0.0), (0.7, 0.25)])
def test_log_prob_is_the_log_frequency_of_samples_of_both_stages(temperature: float, min_p: float) -> None:
    """2 atoms of 2 types and 3 bond types: 12 graphs. Their sampling frequencies match
    exp(log_prob), which therefore counts the atoms and the bonds given those atoms."""
    n, a, e = 2, 2, 3
    # Seed 3 gives every atom pair a fair chance and bonds that depend strongly on the atoms.
    generator = atoms_first_generator(seed=3, n=n, a=a, e=e)
    z = generator.noise(1, torch.Generator().manual_seed(0))
    draws = 40_000
    with torch.no_grad():
        logits = generator(z.expand(draws, -1))
        settings = SamplingSettings("gumbel", temperature, min_p)
        atoms, bonds = logits.sample(settings, torch.Generator().manual_seed(1))
        graphs = list(itertools.product(range(a), range(a), range(e)))
        all_atoms = torch.tensor([[a0, a1] for a0, a1, _ in graphs])
        all_bonds = torch.zeros(len(graphs), n, n, dtype=torch.long)
        all_bonds[:, 0, 1] = all_bonds[:, 1, 0] = torch.tensor([b for _, _, b in graphs])
        probs = generator(z.expand(len(graphs), -1)).log_prob(all_atoms, all_bonds, temperature, min_p).exp()

    # The bond distribution differs between atom pairs, so ignoring the atoms would show.
    conditional = probs.view(a * a, e) / probs.view(a * a, e).sum(-1, keepdim=True)
    assert (conditional.max(0).values - conditional.min(0).values).max() > 0.5
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    index = (atoms[:, 0] * a + atoms[:, 1]) * e + bonds[:, 0, 1]
    freq = torch.bincount(index, minlength=len(graphs)).float() / draws
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)


def test_log_prob_gradient_reaches_both_stages() -> None:
    logits = logits_of()
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.0), torch.Generator().manual_seed(0))
    atom_logits = logits.atoms.detach().requires_grad_()
    nodes = logits.nodes.detach().requires_grad_()
    lp = AtomsFirstLogits(atom_logits, nodes, logits.bond_stage).log_prob(atoms, bonds)
    assert lp.shape == (B,) and torch.isfinite(lp).all()
    lp.sum().backward()
    assert atom_logits.grad is not None and atom_logits.grad.abs().sum() > 0
    assert nodes.grad is not None and nodes.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in logits.bond_stage.out.parameters())
    # log p(atoms) + log p(bonds | atoms), the second from the bond stage given these atoms.
    with torch.no_grad():
        iu = torch.triu_indices(N, N, offset=1)
        pair_logits = logits.bond_stage(logits.nodes, one_hot(atoms))
        atom_part = F.log_softmax(logits.atoms, -1).gather(-1, atoms.unsqueeze(-1)).sum((1, 2))
        pairs = bonds[:, iu[0], iu[1]].unsqueeze(-1)
        bond_part = F.log_softmax(pair_logits, -1).gather(-1, pairs).sum((1, 2))
    torch.testing.assert_close(lp.detach(), atom_part + bond_part)


# ---------------------------------------------------------------------- runs and checkpoints

TRAIN_SETTINGS = [
    AF,
    "data.max_atoms=4",
    "train.lam=0.5",
    "train.rl_start_step=2",
    "train.log_every=1",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.keep_snapshots=true",
]
REINFORCE = [
    "train.rl_estimator=reinforce",
    "train.rl_samples_per_z=2",
    "train.entropy_weight=0.1",
    "train.mode_seeking_weight=0.5",
]


@pytest.fixture(scope="module")
def atoms_first_run(tmp_path_factory: pytest.TempPathFactory, debug_config: Callable) -> Path:
    """A finished 8-step atoms-first debug run with REINFORCE, the entropy bonus and the
    mode-seeking term."""
    run_dir = tmp_path_factory.mktemp("atoms-first") / "run"
    Trainer(debug_config(*TRAIN_SETTINGS, *REINFORCE, "train.steps=8"), run_dir, progress=False).train()
    return run_dir


def test_a_run_trains_and_records_the_generator_kind(atoms_first_run: Path) -> None:
    rows = training_records(atoms_first_run)
    assert sorted(rows) == list(range(1, 9))
    for row in rows.values():
        for key in ("d_loss", "g_loss", "reward", "mode_seeking"):
            assert math.isfinite(row[key]), key
    ckpt = load_checkpoint(atoms_first_run / LAST)
    assert ckpt.meta["config"]["model"]["generator"] == "atoms_first"
    assert any(name.startswith("bond_stage.") for name in ckpt.state_dict("generator"))
    sampler = MoleculeSampler.load(atoms_first_run / LAST)
    assert isinstance(sampler.generator, AtomsFirstGenerator)
    # Every part of the generator learns between the two evaluations.
    at_4 = load_checkpoint(atoms_first_run / "snapshots" / "step-0000004.safetensors").state_dict("generator")
    at_8 = ckpt.state_dict("generator")
    for part in ("body", "atom_head", "node_head", "bond_stage"):
        names = [k for k in at_8 if k.startswith(f"{part}.")]
        assert names and not all(torch.equal(at_4[k], at_8[k]) for k in names), part


@pytest.mark.parametrize(
    "rl", [REINFORCE, ["train.rl_estimator=reward_net"]], ids=["reinforce", "reward_net"]
)
def test_resume_reproduces_the_uninterrupted_run(
    atoms_first_run: Path, tmp_path: Path, debug_config: Callable, rl: list[str]
) -> None:
    if rl == REINFORCE:
        straight = atoms_first_run
    else:
        straight = tmp_path / "straight"
        Trainer(debug_config(*TRAIN_SETTINGS, *rl, "train.steps=8"), straight, progress=False).train()
    split = tmp_path / "split"
    Trainer(debug_config(*TRAIN_SETTINGS, *rl, "train.steps=4"), split, progress=False).train()
    resumed = resume_trainer(split, ["train.steps=8"], progress=False)
    assert isinstance(resumed.generator, AtomsFirstGenerator)
    assert resumed.train()["step"] == 8
    for step in range(5, 9):
        assert training_records(split)[step] == training_records(straight)[step], step
    final = load_checkpoint(split / LAST).state_dict("generator")
    expected = load_checkpoint(straight / LAST).state_dict("generator")
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_molgan_sample_on_its_checkpoint(atoms_first_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw.jsonl"
    result = CliRunner().invoke(
        app,
        ["sample", str(atoms_first_run / LAST), "-n", "25", "--seed", "3", "--mode", "gumbel",
         "--temperature", "0.9", "--min-p", "0.05", "--format", "jsonl", "-o", str(out)],
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    sampler = MoleculeSampler.load(atoms_first_run / LAST)
    expected = sampler.sample(25, seed=3, settings=sampler.settings("gumbel", 0.9, 0.05))
    assert rows == [{"smiles": s.smiles, "valid": s.valid} for s in expected]


@pytest.mark.parametrize("mode", ["argmax", "gumbel"])
def test_same_seed_same_graphs(atoms_first_run: Path, mode: str) -> None:
    sampler = MoleculeSampler.load(atoms_first_run / LAST)
    settings = sampler.settings("argmax") if mode == "argmax" else sampler.settings("gumbel", 1.2, 0.1)
    first = sampler.graphs(64, seed=11, settings=settings)
    again = MoleculeSampler.load(atoms_first_run / LAST).graphs(64, seed=11, settings=settings)
    other = sampler.graphs(64, seed=12, settings=settings)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, other, strict=True))


def test_checkpoints_without_the_key_hold_an_mlp_generator(tmp_path: Path) -> None:
    bundled = load_checkpoint(bundled_checkpoint_path())
    assert "generator" not in bundled.meta["config"]["model"]
    assert isinstance(MoleculeSampler.load().generator, MLPGenerator)


def test_weights_of_the_other_kind_are_a_clear_error(atoms_first_run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(atoms_first_run / LAST)
    meta = copy.deepcopy(ckpt.meta)
    del meta["config"]["model"]["generator"]  # read as mlp
    writer = CheckpointWriter(meta)
    writer.tensors = dict(ckpt.tensors)
    path = writer.write(tmp_path / "claims-mlp.safetensors")
    with pytest.raises(CheckpointError, match=r"generator weights .* does not match"):
        MoleculeSampler.load(path)
    with pytest.raises(CheckpointError, match="model settings differ"):
        resume_trainer(atoms_first_run, ["model.generator=mlp"], progress=False)
