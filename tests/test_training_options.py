"""The anti-collapse options of the trainer: mode seeking, grouped REINFORCE, fixed vocabularies;
and the options of fine-tuning towards a property: standardised advantages, no critic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from molgan.config import Config, ConfigError, ModelConfig
from molgan.data import dataset_from_config, load_dataset
from molgan.models import GraphLogits, build_generator
from molgan.sampling_settings import SamplingSettings
from molgan.training.rl import reinforce_loss
from molgan.training.trainer import Trainer, mode_seeking_ratio
from tests.test_training import training_records


def test_mode_seeking_ratio_is_zero_when_the_noise_is_ignored() -> None:
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    same = GraphLogits(torch.randn(1, 4, 3).expand(8, 4, 3), torch.randn(1, 6, 2).expand(8, 6, 2))
    assert mode_seeking_ratio(z, same).item() == pytest.approx(0.0, abs=1e-7)


def test_mode_seeking_ratio_grows_with_output_differences_and_has_gradients() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 5, generator=g)
    atoms = torch.randn(8, 4, 3, generator=g, requires_grad=True)
    pairs = torch.randn(8, 6, 2, generator=g)
    small = mode_seeking_ratio(z, GraphLogits(atoms * 0.1, pairs * 0.1))
    large = mode_seeking_ratio(z, GraphLogits(atoms * 3.0, pairs * 3.0))
    assert 0 < small.item() < large.item()
    large.backward()
    assert atoms.grad is not None and torch.isfinite(atoms.grad).all() and atoms.grad.abs().sum() > 0
    # By hand for one pair of halves: mean |p1 - p2| over all choices / mean |z1 - z2|.
    z2 = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    logits = GraphLogits(torch.tensor([[[0.0, 0.0]], [[10.0, -10.0]]]), torch.zeros(2, 0, 2))
    p_diff = (torch.tensor([0.5, 0.5]) - torch.softmax(torch.tensor([10.0, -10.0]), 0)).abs().mean()
    assert mode_seeking_ratio(z2, logits).item() == pytest.approx((p_diff / 1.0).item(), rel=1e-5)


def test_grouped_reinforce_needs_a_batch_that_splits(debug_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match="rl_samples_per_z"):
        debug_config("train.rl_estimator=reinforce", "train.rl_samples_per_z=5")


def test_grouped_reinforce_with_mode_seeking_and_entropy_trains(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config(
        "train.rl_estimator=reinforce",
        "train.rl_samples_per_z=4",
        "train.rl_start_step=0",
        "train.mode_seeking_weight=1.0",
        "train.entropy_weight=0.1",
        "train.steps=6",
    )
    trainer = Trainer(config, tmp_path / "run", progress=False)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    stats = trainer.generator_step(trainer.tau()).stats
    assert torch.isfinite(torch.tensor(stats["g_loss"]))
    assert stats["mode_seeking"] > 0
    after = list(trainer.generator.parameters())
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, after, strict=True))
    assert trainer.train()["step"] == 6


def test_min_p_sampling_trains_and_snapshots_every_evaluation(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    from molgan.checkpoint import load_checkpoint
    from molgan.training.run_dir import RunDir

    config = debug_config(
        "train.rl_estimator=reinforce",
        "train.rl_start_step=0",
        "train.entropy_weight=0.1",
        "sampling.mode=gumbel",
        "sampling.min_p=0.3",
        "train.keep_snapshots=true",
        "train.steps=8",
        "train.eval_every=4",
    )
    trainer = Trainer(config, tmp_path / "run", progress=False)
    stats = trainer.generator_step(trainer.tau()).stats
    assert torch.isfinite(torch.tensor(stats["g_loss"]))
    assert all(torch.isfinite(p.grad).all() for p in trainer.generator.parameters() if p.grad is not None)
    trainer.train()
    run = RunDir(tmp_path / "run")
    snapshots = sorted(p.name for p in run.snapshot_dir.iterdir())
    assert snapshots == ["step-0000004.safetensors", "step-0000008.safetensors"]
    assert run.snapshots() == [(4, run.snapshot(4)), (8, run.snapshot(8))]
    meta = load_checkpoint(run.snapshot(4)).meta
    assert meta["step"] == 4 and "validity" in meta["metrics"]
    assert meta["config"]["sampling"]["min_p"] == 0.3


def test_a_fixed_atom_vocabulary_skips_other_atoms(
    tmp_path: Path, debug_config: Callable[..., Config]
) -> None:
    path = tmp_path / "mixed.smi"
    path.write_text("CCO\nC[NH3+]\nCC(=O)[O-]\nFC(F)F\nCN\n")
    config = debug_config(f"data.path={path}", "data.atoms=[C,N,O,F]")
    data = dataset_from_config(config.data)
    assert data.vocab.atoms == ("*", "C", "N", "O", "F")
    assert sorted(data.smiles) == sorted(["CCO", "FC(F)F", "CN"])
    assert data.report.skipped == {"unsupported_atom": 2}
    # Without the restriction the charged atoms are part of the vocabulary.
    full = load_dataset(path, max_atoms=9)
    assert {"N+", "O-"} <= set(full.vocab.atoms)


@pytest.mark.parametrize(
    "overrides",
    [
        ("reward.combine=product",),
        # The critic is trained anew: its fields may differ from the source run's.
        ("model.critic_features=[cycles, degrees]", "model.gcn_dims=[6, 4]"),
    ],
    ids=["same-critic", "another-critic"],
)
def test_init_generator_starts_from_a_checkpoints_generator_and_trains(
    debug_config: Callable[..., Config], debug_run: Path, tmp_path: Path, overrides: tuple[str, ...]
) -> None:
    from molgan.checkpoint import load_checkpoint
    from molgan.training.run_dir import BEST

    source = debug_run / BEST
    saved = load_checkpoint(source).state_dict("generator")
    trainer = Trainer(debug_config(f"train.init_generator={source}", "train.steps=2", *overrides),
                      tmp_path / "tuned", progress=False)
    if "model.gcn_dims=[6, 4]" in overrides:
        assert trainer.discriminator.features == ("cycles", "degrees")
    for name, value in trainer.generator.state_dict().items():
        assert torch.equal(value, saved[name]), name
    fresh = Trainer(debug_config(), tmp_path / "fresh", progress=False).generator.state_dict()
    assert any(not torch.equal(v, saved[k]) for k, v in fresh.items())  # not the default init
    trainer.train()
    assert (tmp_path / "tuned" / BEST).is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [("model.z_dim=8", "another generator"), ("data.atoms=[C,N,O]", "another vocabulary")],
)
def test_init_generator_refuses_another_model_or_vocabulary(
    debug_config: Callable[..., Config], debug_run: Path, tmp_path: Path, override: str, message: str
) -> None:
    from molgan.training.run_dir import BEST

    config = debug_config(f"train.init_generator={debug_run / BEST}", override)
    with pytest.raises(ConfigError, match=message):
        Trainer(config, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"train\.init_generator: .*not found"):
        Trainer(debug_config(f"train.init_generator={tmp_path / 'missing.safetensors'}"),
                tmp_path / "run2", progress=False)


def test_standardised_advantages_are_the_centred_ones_over_the_batch_spread() -> None:
    cfg = ModelConfig(z_dim=7, generator_dims=(11, 13))
    g = torch.Generator().manual_seed(0)
    generator = build_generator(cfg, 5, 3, 4)
    logits = generator(generator.noise(16, g))
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.0), g)
    reward = torch.rand(16, generator=g) * 0.1
    centred = reinforce_loss(logits, atoms, bonds, reward, temperature=1.0)
    scaled = reinforce_loss(logits, atoms, bonds, reward, temperature=1.0, standardise=True)
    torch.testing.assert_close(scaled, centred / reward.std(unbiased=False))
    # The spread of equal rewards is no scale: the advantages stay 0.
    same = torch.full((16,), 0.3)
    torch.testing.assert_close(
        reinforce_loss(logits, atoms, bonds, same, temperature=1.0, standardise=True),
        reinforce_loss(logits, atoms, bonds, same, temperature=1.0),
    )


def test_a_run_without_critic_updates_trains_the_generator_on_the_reward_alone(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    # Up to 4 atoms: valid and invalid graphs from the start, so the rewards vary.
    config = debug_config("data.max_atoms=4", "train.n_critic=0", "train.lam=0", "train.rl_start_step=0",
                          "train.rl_estimator=reinforce", "train.rl_advantage=standardised",
                          "train.steps=3", "train.log_every=1")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    critic = [p.detach().clone() for p in trainer.discriminator.parameters()]
    generator = [p.detach().clone() for p in trainer.generator.parameters()]
    calls: list[int] = []
    trainer.discriminator.register_forward_hook(lambda *_: calls.append(1))
    assert trainer.train()["step"] == 3
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(critic, trainer.discriminator.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters(), strict=True))
    records = training_records(tmp_path / "run")
    assert sorted(records) == [1, 2, 3] and all("d_loss" not in r for r in records.values())


def test_a_critic_warmup_holds_the_generator_and_then_lets_it_train(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config("train.critic_warmup_steps=2", "train.n_critic=1", "train.steps=3",
                          "train.log_every=1", "train.rl_start_step=0")
    trainer = Trainer(config, tmp_path / "run", progress=True)
    critic = [p.detach().clone() for p in trainer.discriminator.parameters()]
    generator = [p.detach().clone() for p in trainer.generator.parameters()]
    for _ in range(2):
        stats = trainer.train_step(1.0)
        trainer.state.step += 1  # as the loop counts
        assert "d_loss" in stats and "g_loss" not in stats
    trainer.state.step = 0
    assert all(torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(critic, trainer.discriminator.parameters(), strict=True))
    assert trainer.train()["step"] == 3  # the progress bar takes the steps without a generator loss
    assert any(not torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters(), strict=True))
    records = training_records(tmp_path / "run")
    assert "g_loss" not in records[1] and "g_loss" not in records[2] and "g_loss" in records[3]
    with pytest.raises(ConfigError, match="critic_warmup_steps"):
        debug_config("train.critic_warmup_steps=2", "train.n_critic=0", "train.lam=0",
                     "train.rl_estimator=reinforce")


@pytest.mark.parametrize("override", ["train.lam=0.4", "train.rl_start_step=2"])
def test_no_critic_updates_need_a_generator_on_the_reward_alone(
    debug_config: Callable[..., Config], override: str
) -> None:
    with pytest.raises(ConfigError, match="n_critic: 0 trains no critic"):
        debug_config("train.n_critic=0", "train.lam=0", "train.rl_estimator=reinforce", override)


def test_the_plausible_reward_knows_the_training_molecules(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    from rdkit import Chem

    trainer = Trainer(debug_config("reward.weights={validity: 1.0, plausible: 1.0}", "train.steps=2"),
                      tmp_path / "run", progress=False)
    known = trainer.reward_fn.known
    assert known is not None and trainer.real_reward_fn.known is known
    assert "C-C" in known.bonds and "O-O" not in known.bonds
    # Every training molecule is plausible by construction.
    some = sorted(trainer.train_smiles)[:50]
    assert all(known.allows(Chem.MolFromSmiles(s)) for s in some)
    assert trainer.reward_fn(some).tolist() == [1.0] * len(some)
    trainer.train()
