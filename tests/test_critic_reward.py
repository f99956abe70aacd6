"""The critic as a reward of REINFORCE's exact samples (``train.critic_reward_weight``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from molgan.checkpoint import load_checkpoint
from molgan.config import Config, ConfigError
from molgan.models import Graphs
from molgan.sampling_settings import SamplingSettings
from molgan.training.rl import reinforce, reinforce_loss, standardise_valid
from molgan.training.run_dir import LAST
from molgan.training.trainer import Trainer, resume_trainer
from tests.test_training import training_records

WEIGHT = 0.7
# Up to 4 atoms: a fresh generator's samples are then a mix of molecules and broken graphs.
SMALL_GRAPHS = ["data.max_atoms=4", "train.rl_estimator=reinforce", "train.rl_start_step=0"]


def expected_term(
    scores: np.ndarray, valid: np.ndarray, weight: float, mode: str = "standardised"
) -> np.ndarray:
    """The formula, in float64: ``weight * z`` with ``z = (s - mean) / std`` over the valid scores,
    0 elsewhere; under ``penalty``, ``z`` becomes ``min(z, 0)`` less its mean over the valid ones."""
    mean, std = scores[valid].mean(), scores[valid].std()
    z = (scores - mean) / std
    if mode == "penalty":
        z = np.minimum(z, 0.0)
        z = z - z[valid].mean()
    return np.where(valid, weight * z, 0.0)


def test_standardise_valid_is_the_formula_over_the_valid_entries() -> None:
    g = torch.Generator().manual_seed(3)
    values = 5 * torch.randn(20, generator=g) + 2
    valid = torch.rand(20, generator=g) < 0.6
    z, mean = standardise_valid(values, valid)
    v, m = values.double().numpy(), valid.numpy()
    np.testing.assert_allclose(z.numpy(), expected_term(v, m, 1.0), rtol=1e-5, atol=1e-6)
    assert mean.item() == pytest.approx(v[m].mean(), rel=1e-6)
    assert z[~valid].eq(0).all()
    # Standardised over the valid entries: mean 0 and std 1 there.
    assert z[valid].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert z[valid].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("level", [0.3, -1234.567, 0.0])
@pytest.mark.parametrize("n_valid", [0, 1, 7])
def test_standardise_valid_gives_zero_when_there_is_nothing_to_rank(level: float, n_valid: int) -> None:
    # Equal valid values (float rounding leaves their mean a little off each) or too few of them;
    # the invalid entries differ, and must not count.
    values = torch.full((9,), level)
    values[n_valid:] = torch.arange(9 - n_valid, dtype=torch.float32) * 10
    valid = torch.arange(9) < n_valid
    z, _ = standardise_valid(values, valid)
    assert torch.equal(z, torch.zeros(9))


def small_batch_trainer(debug_config: Callable[..., Config], tmp_path: Path, *extra: str) -> Trainer:
    config = debug_config(*SMALL_GRAPHS, "train.batch_size=64", "train.rl_samples_per_z=2", *extra)
    return Trainer(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize("mode", ["standardised", "penalty"])
def test_the_reward_of_each_sample_is_the_exact_reward_plus_the_standardised_critic(
    debug_config: Callable[..., Config], tmp_path: Path, mode: str
) -> None:
    trainer = small_batch_trainer(
        debug_config, tmp_path, f"train.critic_reward_weight={WEIGHT}", f"train.critic_reward_mode={mode}"
    )
    z = trainer.generator.noise(32, trainer.rng).repeat_interleave(2, dim=0)
    logits = trainer.generator(z)
    relaxed = logits.relax("st_gumbel", 1.0, trainer.rng)
    state = trainer.rng.get_state()
    rl = reinforce(trainer.rl_context, logits, relaxed, with_loss=True)

    # The same exact samples, drawn again from the same random state, scored by the critic here.
    trainer.rng.set_state(state)
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.0), trainer.rng)  # T of debug.yaml
    a, e = trainer.vocab.num_atom_types, trainer.vocab.num_bond_types
    graphs = Graphs.one_hot(atoms, bonds, a, e)
    with torch.no_grad():
        scores = trainer.discriminator(graphs.atoms, graphs.bonds)
    valid = np.array(rl.valid)
    assert 2 <= valid.sum() <= len(valid) - 2, "the batch must hold valid and invalid graphs"
    expected = expected_term(scores.double().numpy(), valid, WEIGHT, mode)
    assert rl.critic is not None
    np.testing.assert_allclose(rl.critic.numpy(), expected, rtol=1e-5, atol=1e-6)
    if mode == "penalty":
        # Every graph the critic scores above the valid mean earns the same; some earn less.
        above = valid & (scores.numpy() > scores.numpy()[valid].mean())
        assert above.any() and np.ptp(rl.critic.numpy()[above]) < 1e-6
        assert rl.critic.numpy()[valid].min() < rl.critic.numpy()[above].min() - 1e-3
    # The exact reward is reported as it is; the policy gradient uses the sum.
    loss = reinforce_loss(
        logits, atoms, bonds, rl.reward + torch.from_numpy(expected).float(), temperature=1.0,
        samples_per_z=2, entropy_weight=trainer.config.train.entropy_weight,
    )
    assert rl.loss is not None
    torch.testing.assert_close(rl.loss, loss)
    assert rl.stats["critic_score"] == pytest.approx(scores.double().numpy()[valid].mean(), rel=1e-5)
    assert rl.stats["critic_reward"] == pytest.approx(expected.mean(), abs=1e-6)
    # The critic is not trained by this reward.
    rl.loss.backward()
    assert all(p.grad is None for p in trainer.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.generator.parameters())


def test_weight_zero_is_plain_reinforce_without_calling_the_critic(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    trainer = small_batch_trainer(debug_config, tmp_path)
    calls: list[int] = []
    trainer.discriminator.register_forward_hook(lambda *_: calls.append(1))
    logits = trainer.generator(trainer.generator.noise(32, trainer.rng).repeat_interleave(2, dim=0))
    state = trainer.rng.get_state()
    rl = reinforce(trainer.rl_context, logits, logits.relax("st_gumbel", 1.0), with_loss=True)
    trainer.rng.set_state(state)
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.0), trainer.rng)
    plain = reinforce_loss(logits, atoms, bonds, rl.reward, temperature=1.0, samples_per_z=2)
    assert rl.loss is not None and torch.equal(rl.loss, plain)
    assert rl.critic is None and rl.stats == {} and calls == []


def test_a_run_with_the_critic_reward_logs_it_checkpoints_and_resumes(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    settings = [*SMALL_GRAPHS, f"train.critic_reward_weight={WEIGHT}", "train.log_every=1",
                "train.eval_every=4", "train.checkpoint_every=4"]
    Trainer(debug_config(*settings, "train.steps=8"), tmp_path / "straight", progress=False).train()
    Trainer(debug_config(*settings, "train.steps=4"), tmp_path / "split", progress=False).train()
    resume_trainer(tmp_path / "split", ["train.steps=8"], progress=False).train()

    straight, split = training_records(tmp_path / "straight"), training_records(tmp_path / "split")
    assert split == straight and sorted(straight) == list(range(1, 9))
    assert all({"critic_reward", "critic_score"} <= record.keys() for record in straight.values())
    assert any(record["critic_reward"] != 0 or record["critic_score"] != 0 for record in straight.values())
    ckpt = load_checkpoint(tmp_path / "split" / LAST)
    assert ckpt.meta["step"] == 8 and ckpt.meta["config"]["train"]["critic_reward_weight"] == WEIGHT


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.critic_reward_weight=0.5"],  # debug.yaml trains with the reward network
        ["train.rl_estimator=reinforce", "train.critic_reward_weight=0.5", "model.pack=2"],
        ["train.rl_estimator=reinforce", "train.critic_reward_weight=-1"],
    ],
)
def test_a_critic_reward_it_cannot_give_is_a_config_error(
    debug_config: Callable[..., Config], overrides: list[str]
) -> None:
    with pytest.raises(ConfigError, match=r"train\.critic_reward_weight"):
        debug_config(*overrides)
