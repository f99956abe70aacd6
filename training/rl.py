"""The RL term of the generator loss: one function per ``train.rl_estimator``.

Each estimator scores the generator's graphs with the exact RDKit reward and returns the term to
minimise (``None`` while the RL term is off, when only the reward is needed for logging) with
the rewards and SMILES of the graphs it scored; what it reads of the run comes in an ``RLContext``.
REINFORCE can add the critic's standardised score
of the exact samples to the reward of the valid ones (``train.critic_reward_weight``,
``critic_reward``), so that the graphs people sample, not only the relaxed graphs the critic
trains on, are pushed towards the data. A new estimator is a new function, added to
``RL_ESTIMATORS`` under the name ``train.rl_estimator`` gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from molgan.config import TrainConfig
from molgan.models import GraphLogits, Graphs, critic_scores
from molgan.sampling_settings import SamplingSettings
from molgan.training.distributed import Processes

Scorer = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[list[str | None], list[bool], torch.Tensor]
]
"""Integer graphs, atoms (B, N) and bonds (B, N, N), and the conditions (B, C) they were generated
for (``None``: unconditional) -> their SMILES, strict validity and exact reward (B,)
(``Trainer.score``)."""


@dataclass(frozen=True)
class RLContext:
    """What the RL estimators read of a run: set up once by the trainer."""

    train: TrainConfig
    rng: torch.Generator
    """The training generator: the exact samples draw from it."""
    score: Scorer
    critic: nn.Module
    """The critic itself, not its DDP wrapper: its score in the reward must not train it."""
    reward_net: nn.Module | None
    """The reward network itself (``reward_net`` estimator), not its DDP wrapper."""
    processes: Processes


@dataclass
class RLTerm:
    """The RL term of one generator step, for a batch of B graphs (this process's share)."""

    loss: torch.Tensor | None
    """Scalar to minimise; ``None`` when the step did not ask for it."""
    reward: torch.Tensor
    """(B,) exact reward of the scored graphs, on the training device."""
    smiles: list[str | None]
    """(B,) their canonical SMILES; ``None`` for a graph that is not a molecule."""
    valid: list[bool]
    """(B,) strict validity of each (``molgan.chem``'s definition)."""
    critic: torch.Tensor | None = None
    """(B,) the critic's term added to ``reward`` for the policy gradient
    (``train.critic_reward_weight``); ``None`` when it is off."""
    stats: dict[str, float] = field(default_factory=dict)
    """Statistics of the term for the training log."""
    graphs: tuple[torch.Tensor, torch.Tensor] | None = None
    """The integer graphs scored, atoms (B, N) and bonds (B, N, N), where they were sampled
    (REINFORCE); ``None`` for the reward network's term."""


def reinforce(run: RLContext, logits: GraphLogits, relaxed: Graphs, with_loss: bool) -> RLTerm:
    """REINFORCE on the exact reward of Gumbel-Max samples of ``logits`` (see ``reinforce_loss``)."""
    cfg = run.train
    # Without min-p truncation: a truncated policy never draws a class again once it falls
    # below the cut, so it cannot learn that the class was good (uniqueness 43% against 64% at
    # step 1000 in a QM9 run).
    tau = cfg.rl_temperature
    atoms, bonds = logits.sample(SamplingSettings("gumbel", tau, 0.0), run.rng)
    smiles, valid, reward = run.score(atoms, bonds, relaxed.conditions)
    if not with_loss:
        return RLTerm(None, reward, smiles, valid, graphs=(atoms, bonds))
    critic: torch.Tensor | None = None
    stats: dict[str, float] = {}
    if cfg.critic_reward_weight > 0:
        graphs = Graphs.one_hot(atoms, bonds, logits.atoms.shape[-1], logits.pairs.shape[-1]).with_conditions(
            relaxed.conditions)
        is_valid = torch.tensor(valid, dtype=torch.bool, device=reward.device)
        critic, valid_mean = critic_reward(
            run.critic, graphs, is_valid, cfg.critic_reward_weight, run.processes.total,
            penalty_only=cfg.critic_reward_mode == "penalty",
        )
        stats = {"critic_reward": critic.mean().item(), "critic_score": valid_mean.item()}
    loss = reinforce_loss(
        logits, atoms, bonds, reward if critic is None else reward + critic, temperature=tau,
        samples_per_z=cfg.rl_samples_per_z, entropy_weight=cfg.entropy_weight,
        standardise=cfg.rl_advantage == "standardised", batch_mean=run.processes.mean,
    )
    return RLTerm(loss, reward, smiles, valid, critic, stats, graphs=(atoms, bonds))


STD_FLOOR = 1e-5
"""Below this spread (relative to the scale of the values, at least 1) ``standardise_valid``
treats the valid values as equal: float rounding alone leaves a spread of about 1e-7 there."""


def _own_share(values: torch.Tensor) -> torch.Tensor:
    """The sum over a single process: its own values (``Processes.total`` without a group)."""
    return values


def _centre_valid(
    values: torch.Tensor, valid: torch.Tensor, total: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values - mean) * valid``, the mean of the valid entries over all processes, and their
    count (at least 1: with no valid entry the mean is 0)."""
    mask = valid.to(values.dtype)
    count, summed = total(torch.stack([mask.sum(), (values * mask).sum()])).unbind()
    count = count.clamp(min=1.0)
    mean = summed / count
    return (values - mean) * mask, mean, count


def standardise_valid(
    values: torch.Tensor,
    valid: torch.Tensor,
    total: Callable[[torch.Tensor], torch.Tensor] = _own_share,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values - mean) / std`` (B,) at the valid entries and 0 at the others, where mean and
    (population) std are those of the valid entries; and that mean (a scalar). values (B,),
    valid (B,) bool.

    ``total`` sums a tensor over the processes (``Processes.total``): each process then
    standardises its share with the statistics of the whole batch. With fewer than two valid
    entries, or valid entries that are all equal (spread under ``STD_FLOOR``), the result is 0
    everywhere: there is nothing to rank.
    """
    centered, mean, count = _centre_valid(values, valid, total)
    std = (total(centered.pow(2).sum()) / count).sqrt()
    floor = STD_FLOOR * mean.abs().clamp(min=1.0)
    z = torch.where(std > floor, centered / torch.maximum(std, floor), torch.zeros_like(centered))
    return z, mean


def critic_reward(
    critic: nn.Module,
    graphs: Graphs,
    valid: torch.Tensor,
    weight: float,
    total: Callable[[torch.Tensor], torch.Tensor] = _own_share,
    *,
    penalty_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` times the critic's score of each of B one-hot graphs standardised over the
    valid ones (``standardise_valid``), 0 for invalid graphs: (B,); and the mean score of the
    valid graphs (a scalar). No gradient reaches the critic. valid (B,) bool.

    Why only valid graphs, standardised among themselves: the exact reward of an invalid graph
    is 0, and a realistic-looking invalid graph is still no molecule, so the critic must not buy
    it reward. Centred on the valid graphs, the term sums to 0 over the batch: it reorders the
    rewards of valid molecules by how data-like the critic finds them, while the mean reward of
    valid graphs, the batch-mean baseline, and so the push towards validity stay as they were.
    With the leave-one-out baseline a sample's term is compared with its siblings' (an invalid
    sibling's is 0). The uniqueness reward and its memory see the SMILES alone, as before: the
    critic term pays a repeated molecule again each time, and the uniqueness term still decays.

    ``penalty_only`` keeps only the below-average part, ``min(z, 0)``, centred again over the
    valid graphs. The full term pays the critic's favourites on every repeat, faster than the
    uniqueness reward takes it back (on QM9, uniqueness halved); clipped, every graph the critic
    likes earns the same and only the ones it dislikes are pushed away.
    """
    with torch.no_grad():
        scores = critic_scores(critic, graphs.atoms, graphs.bonds, graphs.conditions)
    z, valid_mean = standardise_valid(scores, valid, total)
    if penalty_only:
        z, _, _ = _centre_valid(z.clamp(max=0.0), valid, total)
    return weight * z, valid_mean


def reinforce_loss(
    logits: GraphLogits,
    atoms: torch.Tensor,
    bonds: torch.Tensor,
    reward: torch.Tensor,
    *,
    temperature: float,
    samples_per_z: int = 1,
    entropy_weight: float = 0.0,
    standardise: bool = False,
    batch_mean: Callable[[torch.Tensor], torch.Tensor] = torch.mean,
) -> torch.Tensor:
    """``-mean((r - baseline) log p(graph)) - entropy_weight * mean entropy`` for B graphs
    (atoms (B, N), bonds (B, N, N)) drawn from ``logits`` at ``temperature``, rewards (B,).

    The baseline is the batch mean reward, or with ``samples_per_z`` = k > 1 (the batch then
    holds k consecutive rows per noise vector) the mean reward of a sample's k - 1 siblings.
    ``batch_mean`` takes the mean over the whole batch; with several processes it is the mean
    over all of them (``Processes.mean``), so that, with DDP averaging the gradients, every
    process's share gets the gradient of the whole batch. Siblings never straddle processes.

    ``standardise`` divides the advantages by the whole batch's reward spread (population std;
    not when the rewards are all equal): the step then no longer shrinks with the reward's scale,
    which a product of several scores makes small, beside the entropy bonus and the WGAN term.
    """
    k = samples_per_z
    if k > 1:
        # Leave-one-out baseline among the k samples of the same z (RLOO): each sample is
        # compared with its siblings, so the signal says which choices broke a graph.
        groups = reward.view(-1, k)
        advantage = ((groups - groups.mean(1, keepdim=True)) * k / (k - 1)).flatten()
    else:
        mean = batch_mean(reward)
        advantage = reward - mean
    if standardise:
        if k > 1:
            mean = batch_mean(reward)  # the leave-one-out baseline did not need it
        std = batch_mean((reward - mean).pow(2)).sqrt()
        if std.item() > STD_FLOOR * max(abs(mean.item()), 1.0):
            advantage = advantage / std
    loss = -(advantage * logits.log_prob(atoms, bonds, temperature)).mean()
    if entropy_weight > 0:
        loss = loss - entropy_weight * logits.entropy().mean()
    return loss


def reward_network(run: RLContext, logits: GraphLogits, relaxed: Graphs, with_loss: bool) -> RLTerm:
    """The paper's term: minus the reward network's prediction on the ST-relaxed graphs, which
    the gradient flows through. The exact reward is of the graphs those relax (their argmax);
    the loop fits the reward network to it."""
    smiles, valid, reward = run.score(*relaxed.indices(), relaxed.conditions)
    if not with_loss:
        return RLTerm(None, reward, smiles, valid)
    assert run.reward_net is not None, "the trainer builds a reward network for this estimator"
    # The module itself, not its DDP wrapper: this gradient trains the generator alone (the
    # reward network's own update, with gradients averaged over processes, is the loop's).
    loss = -run.reward_net(relaxed.atoms, relaxed.bonds).mean()
    return RLTerm(loss, reward, smiles, valid)


RLEstimatorFn = Callable[[RLContext, GraphLogits, Graphs, bool], RLTerm]

RL_ESTIMATORS: dict[str, RLEstimatorFn] = {
    "reinforce": reinforce,
    "reward_net": reward_network,
}
"""``train.rl_estimator`` -> its function."""
