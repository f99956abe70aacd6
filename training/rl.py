"""The RL term of the generator loss: one function per ``train.rl_estimator``.

Each estimator scores the generator's graphs with the exact RDKit reward and returns the term to
minimise (``None`` while the RL term is off, when only the reward is needed for logging) with
the rewards and SMILES of the graphs it scored. A new estimator is a new function, added to
``RL_ESTIMATORS`` under the name ``train.rl_estimator`` gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from molgan.chem import decode_and_validate
from molgan.models import GraphLogits, Graphs
from molgan.sampling_settings import SamplingSettings

if TYPE_CHECKING:  # the trainer imports this module
    from molgan.training.trainer import Trainer


@dataclass
class RLTerm:
    """The RL term of one generator step, for a batch of B graphs."""

    loss: torch.Tensor | None
    """Scalar to minimise; ``None`` when the step did not ask for it."""
    reward: torch.Tensor
    """(B,) exact reward of the scored graphs."""
    smiles: list[str | None]
    """(B,) their canonical SMILES; ``None`` for a graph that is not a molecule."""
    valid: list[bool]
    """(B,) strict validity of each (``molgan.chem``'s definition)."""


def reinforce(trainer: Trainer, logits: GraphLogits, relaxed: Graphs, with_loss: bool) -> RLTerm:
    """REINFORCE on the exact reward of Gumbel-Max samples of ``logits``.

    The baseline is the batch mean reward, or with ``train.rl_samples_per_z`` = k > 1 (the batch
    then holds k consecutive rows per noise vector) the mean reward of a sample's k - 1 siblings.
    """
    cfg = trainer.config.train
    # Exact samples at the test-time temperature but without min-p truncation: a truncated
    # policy never draws a class again once it falls below the cut, so it cannot learn
    # that the class was good (uniqueness 43% against 64% at step 1000 in a QM9 run).
    tau = trainer.config.sampling.temperature
    atoms, bonds = logits.sample(SamplingSettings("gumbel", tau, 0.0), trainer.rng)
    smiles, valid = decode_and_validate(atoms, bonds, trainer.vocab)
    reward = trainer.reward_fn(smiles)
    if not with_loss:
        return RLTerm(None, reward, smiles, valid)
    k = cfg.rl_samples_per_z
    if k > 1:
        # Leave-one-out baseline among the k samples of the same z (RLOO): each sample is
        # compared with its siblings, so the signal says which choices broke a graph.
        groups = reward.view(-1, k)
        advantage = ((groups - groups.mean(1, keepdim=True)) * k / (k - 1)).flatten()
    else:
        advantage = reward - reward.mean()
    loss = -(advantage * logits.log_prob(atoms, bonds, tau)).mean()
    if cfg.entropy_weight > 0:
        loss = loss - cfg.entropy_weight * logits.entropy().mean()
    return RLTerm(loss, reward, smiles, valid)


def reward_network(trainer: Trainer, logits: GraphLogits, relaxed: Graphs, with_loss: bool) -> RLTerm:
    """The paper's term: minus the reward network's prediction on the ST-relaxed graphs, which
    the gradient flows through. The exact reward is of the graphs those relax (their argmax);
    the loop fits the reward network to it."""
    smiles, valid = decode_and_validate(*relaxed.indices(), trainer.vocab)
    reward = trainer.reward_fn(smiles)
    if not with_loss:
        return RLTerm(None, reward, smiles, valid)
    assert trainer.reward_net is not None, "the trainer builds a reward network for this estimator"
    loss = -trainer.reward_net(relaxed.atoms, relaxed.bonds).mean()
    return RLTerm(loss, reward, smiles, valid)


RLEstimatorFn = Callable[["Trainer", GraphLogits, Graphs, bool], RLTerm]

RL_ESTIMATORS: dict[str, RLEstimatorFn] = {
    "reinforce": reinforce,
    "reward_net": reward_network,
}
"""``train.rl_estimator`` -> its function."""
