"""Generator, critic and reward network: shapes, graph symmetry, PacGAN, log-probabilities,
gradients through the straight-through estimators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from molgan.config import ModelConfig, load_config
from molgan.gumbel import ESTIMATORS
from molgan.models import (
    GraphCritic,
    GraphLogits,
    Graphs,
    RewardNetwork,
    build_discriminator,
    build_generator,
    build_reward_network,
)
from molgan.sampling_settings import SamplingSettings
from tests.conftest import DEBUG_CONFIG

# The debug sizes: every dimension differs, so a swapped axis cannot broadcast silently.
N, A, E, B = 9, 7, 4, 6
P = N * (N - 1) // 2


@pytest.fixture(scope="module")
def model_cfg() -> ModelConfig:
    return load_config(DEBUG_CONFIG).model


@pytest.fixture(params=["mlp", "atoms_first", "transformer"])
def generator_cfg(request: pytest.FixtureRequest, model_cfg: ModelConfig) -> ModelConfig:
    """The debug model with each kind of generator: what holds for all."""
    return model_cfg.model_copy(update={"generator": request.param})


@pytest.fixture(params=[(), ("cycles", "bond_pairs", "degrees")], ids=["plain", "features"])
def critic_cfg(request: pytest.FixtureRequest, model_cfg: ModelConfig) -> ModelConfig:
    """The debug model with and without the critic's structural features."""
    return model_cfg.model_copy(update={"critic_features": request.param})


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw a module's parameters from an explicit generator (not the global one)."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=rng))
    return module


def logits_of(model_cfg: ModelConfig, seed: int = 0, batch: int = B) -> GraphLogits:
    generator = seeded(build_generator(model_cfg, N, A, E), seed)
    return generator(generator.noise(batch, torch.Generator().manual_seed(seed)))


def random_hard_graphs(batch: int, seed: int) -> Graphs:
    rng = torch.Generator().manual_seed(seed)
    logits = GraphLogits(torch.randn(batch, N, A, generator=rng), torch.randn(batch, P, E, generator=rng))
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.0), rng)
    return Graphs.one_hot(atoms, bonds, A, E)


def assert_graph_structure(bonds: torch.Tensor) -> None:
    """(B, N, N, E) symmetric with a one-hot "no bond" diagonal."""
    assert torch.equal(bonds, bonds.transpose(1, 2))
    diagonal = bonds.diagonal(dim1=1, dim2=2)  # (B, E, N)
    expected = torch.zeros_like(diagonal)
    expected[:, 0] = 1.0
    assert torch.equal(diagonal, expected)


# ------------------------------------------------------------------------------ shapes


def test_shapes_with_debug_sizes(generator_cfg: ModelConfig) -> None:
    generator = build_generator(generator_cfg, N, A, E)
    z = generator.noise(B, torch.Generator().manual_seed(0))
    assert z.shape == (B, generator_cfg.z_dim)
    logits = generator(z)
    assert logits.atoms.shape == (B, N, A)
    assert logits.pairs.shape == (B, P, E)
    assert logits.bonds().shape == (B, N, N, E)
    graphs = logits.relax("st_gumbel", 1.0, torch.Generator().manual_seed(1))
    assert graphs.atoms.shape == (B, N, A)
    assert graphs.bonds.shape == (B, N, N, E)
    atoms, bonds = logits.sample(SamplingSettings("argmax"))
    assert atoms.shape == (B, N) and bonds.shape == (B, N, N)

    critic = build_discriminator(generator_cfg, A, E)
    assert critic.gcn(graphs.atoms, graphs.bonds).shape == (B, N, generator_cfg.gcn_dims[-1] + A)
    assert critic(graphs.atoms, graphs.bonds).shape == (B,)
    reward = build_reward_network(generator_cfg, A, E)(graphs.atoms, graphs.bonds)
    assert reward.shape == (B,)
    assert ((reward >= 0) & (reward <= 1)).all()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_relaxed_graphs_symmetric_with_no_bond_diagonal(generator_cfg: ModelConfig, estimator: str) -> None:
    logits = logits_of(generator_cfg)
    graphs = logits.relax(estimator, 0.7, torch.Generator().manual_seed(3))
    assert_graph_structure(graphs.bonds)
    # Every choice is a distribution over its classes; straight-through ones are exactly one-hot.
    torch.testing.assert_close(graphs.atoms.sum(-1), torch.ones(B, N))
    torch.testing.assert_close(graphs.bonds.sum(-1), torch.ones(B, N, N))
    if estimator.startswith("st"):
        assert set(graphs.atoms.unique().tolist()) <= {0.0, 1.0}
        assert set(graphs.bonds.unique().tolist()) <= {0.0, 1.0}


def test_full_bond_logits_symmetric_and_diagonal_only_no_bond(generator_cfg: ModelConfig) -> None:
    full = logits_of(generator_cfg).bonds()
    assert torch.equal(full, full.transpose(1, 2))
    probs = F.softmax(full, -1).diagonal(dim1=1, dim2=2)  # (B, E, N)
    assert torch.equal(probs[:, 0], torch.ones(B, N))


@pytest.mark.parametrize("mode", ["argmax", "gumbel"])
def test_sampled_integer_graphs_symmetric_zero_diagonal(generator_cfg: ModelConfig, mode: str) -> None:
    logits = logits_of(generator_cfg, batch=32)
    settings = SamplingSettings("argmax") if mode == "argmax" else SamplingSettings("gumbel", 1.5, 0.0)
    atoms, bonds = logits.sample(settings, torch.Generator().manual_seed(5))
    assert not atoms.is_floating_point() and not bonds.is_floating_point()
    assert torch.equal(bonds, bonds.transpose(1, 2))
    assert (bonds.diagonal(dim1=1, dim2=2) == 0).all()
    assert atoms.min() >= 0 and atoms.max() < A and bonds.min() >= 0 and bonds.max() < E
    if mode == "gumbel":  # real samples: more than one bond type shows up
        assert bonds.unique().numel() > 1
    assert_graph_structure(Graphs.one_hot(atoms, bonds, A, E).bonds)


def test_argmax_sample_is_the_most_likely_class(generator_cfg: ModelConfig) -> None:
    logits = logits_of(generator_cfg)
    atoms, bonds = logits.sample(SamplingSettings("argmax"))
    assert torch.equal(atoms, logits.atoms.argmax(-1))
    iu = torch.triu_indices(N, N, offset=1)
    assert torch.equal(bonds[:, iu[0], iu[1]], logits.pairs.argmax(-1))


# ------------------------------------------------------------------------------ critic


def test_critic_accepts_soft_and_hard_graphs(critic_cfg: ModelConfig) -> None:
    critic = seeded(build_discriminator(critic_cfg, A, E), 1)
    logits = logits_of(critic_cfg)
    soft = logits.relax("gumbel", 1.0, torch.Generator().manual_seed(2))
    hard = random_hard_graphs(B, seed=4)
    scores = {name: critic(g.atoms, g.bonds) for name, g in (("soft", soft), ("hard", hard))}
    for score in scores.values():
        assert score.shape == (B,) and torch.isfinite(score).all()
    # The score depends on the graph, not only on the batch size.
    assert not torch.allclose(scores["soft"], scores["hard"])


def test_critic_is_invariant_to_atom_order(critic_cfg: ModelConfig) -> None:
    critic = seeded(build_discriminator(critic_cfg, A, E), 1)
    graphs = random_hard_graphs(B, seed=7)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    permuted_bonds = graphs.bonds[:, perm][:, :, perm]
    torch.testing.assert_close(
        critic(graphs.atoms[:, perm], permuted_bonds), critic(graphs.atoms, graphs.bonds)
    )


def test_critic_messages_follow_bonds(critic_cfg: ModelConfig) -> None:
    critic = seeded(build_discriminator(critic_cfg, A, E), 1)
    graphs = random_hard_graphs(B, seed=8)
    no_bonds = torch.zeros_like(graphs.bonds)
    no_bonds[..., 0] = 1.0
    assert not torch.allclose(critic(graphs.atoms, graphs.bonds), critic(graphs.atoms, no_bonds))


def test_ring_features_tell_a_six_ring_from_two_triangles(model_cfg: ModelConfig) -> None:
    """Every atom of either graph is a carbon with two single bonds to carbons: message passing
    alone cannot tell them apart, the cycle counts can."""
    atoms = torch.tensor([[1] * 6 + [0] * (N - 6)] * 2)
    bonds = torch.zeros(2, N, N, dtype=torch.long)
    for graph, ring in ((0, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0)]),
                        (1, [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)])):
        for i, j in ring:
            bonds[graph, i, j] = bonds[graph, j, i] = 1
    graphs = Graphs.one_hot(atoms, bonds, A, E)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)  # PyTorch's own initialisation: 0.5 N(0, 1) weights saturate the tanh
        plain = build_discriminator(model_cfg, A, E)
        featured = build_discriminator(model_cfg.model_copy(update={"critic_features": ("cycles",)}), A, E)
    scores = plain(graphs.atoms, graphs.bonds)
    torch.testing.assert_close(scores[0], scores[1])
    scores = featured(graphs.atoms, graphs.bonds)
    assert (scores[0] - scores[1]).abs() > 1e-4


@pytest.mark.parametrize("detached", [False, True])
def test_detached_features_pass_no_gradient_to_the_graph(model_cfg: ModelConfig, detached: bool) -> None:
    cfg = model_cfg.model_copy(update={"critic_features": ("cycles", "bond_pairs"),
                                       "critic_features_detached": detached})
    critic = build_discriminator(cfg, A, E)
    with torch.no_grad():  # messages that ignore the bonds: only the features can see them
        for relation in critic.gcn.relation:
            relation.weight.zero_()
    graphs = random_hard_graphs(B, seed=5)
    bonds = graphs.bonds.clone().requires_grad_(True)
    critic(graphs.atoms, bonds).sum().backward()
    assert bonds.grad is not None
    assert (bonds.grad.abs().sum() == 0) == detached


def test_transformer_generator_stays_small() -> None:
    """The design's limit for a generator that sees the whole graph: a few million parameters at
    QM9's sizes."""
    cfg = ModelConfig(generator="transformer")
    generator = build_generator(cfg, 9, 5, 5)
    assert sum(p.numel() for p in generator.parameters()) < 3_000_000


def test_pacgan_packs_consecutive_graphs(critic_cfg: ModelConfig) -> None:
    packed = seeded(build_discriminator(critic_cfg.model_copy(update={"pack": 3}), A, E), 2)
    assert isinstance(packed, GraphCritic) and packed.pack == 3
    graphs = random_hard_graphs(12, seed=9)
    scores = packed(graphs.atoms, graphs.bonds)
    assert scores.shape == (4,)
    # Changing graph 4 (pack 1) changes the score of pack 1 only.
    atoms = graphs.atoms.clone()
    atoms[4] = torch.roll(atoms[4], 1, dims=-1)
    changed = packed(atoms, graphs.bonds)
    differs = ~torch.isclose(changed, scores)
    assert differs.tolist() == [False, True, False, False]


def test_pacgan_rejects_batch_not_divisible_by_pack(model_cfg: ModelConfig) -> None:
    packed = build_discriminator(model_cfg.model_copy(update={"pack": 4}), A, E)
    graphs = random_hard_graphs(10, seed=0)
    with pytest.raises(ValueError, match="packs of 4"):
        packed(graphs.atoms, graphs.bonds)


# ------------------------------------------------------------------ log_prob and entropy


def test_log_prob_matches_hand_computation() -> None:
    n, a, e = 3, 2, 3
    rng = torch.Generator().manual_seed(11)
    logits = GraphLogits(torch.randn(2, n, a, generator=rng), torch.randn(2, 3, e, generator=rng))
    atoms = torch.tensor([[1, 0, 1], [0, 0, 1]])
    bonds = torch.zeros(2, n, n, dtype=torch.long)
    # Pairs in triu order: (0, 1), (0, 2), (1, 2).
    for g, (b01, b02, b12) in enumerate([(1, 0, 2), (2, 2, 0)]):
        for (i, j), v in zip(((0, 1), (0, 2), (1, 2)), (b01, b02, b12), strict=True):
            bonds[g, i, j] = bonds[g, j, i] = v

    def log_softmax_entry(row: list[float], k: int, t: float) -> float:
        return row[k] / t - math.log(sum(math.exp(x / t) for x in row))

    for t in (1.0, 0.5):
        expected = []
        for g in range(2):
            total = sum(log_softmax_entry(logits.atoms[g, i].tolist(), int(atoms[g, i]), t) for i in range(n))
            for p, (i, j) in enumerate(((0, 1), (0, 2), (1, 2))):
                total += log_softmax_entry(logits.pairs[g, p].tolist(), int(bonds[g, i, j]), t)
            expected.append(total)
        torch.testing.assert_close(logits.log_prob(atoms, bonds, t), torch.tensor(expected))


def test_min_p_log_prob_is_the_log_frequency_of_min_p_samples() -> None:
    # One atom with 3 types, no pairs: p = (0.6, 0.3, 0.1); min_p 0.25 keeps (0.6, 0.3) -> (2/3, 1/3).
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = GraphLogits(probs.log().expand(40_000, 1, 3), torch.zeros(40_000, 0, 2))
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.25), torch.Generator().manual_seed(1))
    freq = torch.bincount(atoms.flatten(), minlength=3).double() / 40_000
    torch.testing.assert_close(freq, torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.double), atol=0.01, rtol=0)
    lp = logits.log_prob(atoms, bonds, 1.0, 0.25)
    first = lp[atoms.flatten() == 0]
    torch.testing.assert_close(first, torch.full_like(first, math.log(2 / 3)))
    never = torch.full_like(atoms, 2)
    assert torch.isneginf(logits.log_prob(never, bonds, 1.0, 0.25)).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_tempered_logits_reject_a_temperature_that_is_not_finite_and_positive(bad: float) -> None:
    logits = GraphLogits(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="finite number > 0"):
        logits.tempered(bad)


def test_truncated_entropy_and_log_prob_have_finite_gradients(model_cfg: ModelConfig) -> None:
    logits = logits_of(model_cfg)
    leaf = GraphLogits(logits.atoms.detach().requires_grad_(), logits.pairs.detach().requires_grad_())
    atoms, bonds = leaf.sample(SamplingSettings("gumbel", 0.7, 0.3), torch.Generator().manual_seed(0))
    policy = leaf.tempered(0.7, 0.3)
    assert torch.isinf(policy.atoms).any(), "min_p 0.3 should truncate some classes here"
    h = policy.entropy()
    assert torch.isfinite(h).all() and (h >= 0).all()
    (leaf.log_prob(atoms, bonds, 0.7, 0.3).sum() - h.sum()).backward()
    assert torch.isfinite(leaf.atoms.grad).all() and torch.isfinite(leaf.pairs.grad).all()
    # A truncated class cannot be sampled, so it gets no gradient either.
    assert (leaf.atoms.grad[torch.isinf(policy.atoms)] == 0).all()


def test_log_prob_gradient_raises_probability_of_the_sample(model_cfg: ModelConfig) -> None:
    logits = logits_of(model_cfg)
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 1.0, 0.0), torch.Generator().manual_seed(0))
    leaf = GraphLogits(logits.atoms.detach().requires_grad_(), logits.pairs.detach().requires_grad_())
    lp = leaf.log_prob(atoms, bonds)
    lp.sum().backward()
    stepped = GraphLogits(leaf.atoms + 0.1 * leaf.atoms.grad, leaf.pairs + 0.1 * leaf.pairs.grad)
    assert (stepped.log_prob(atoms, bonds) > lp.detach()).all()


def test_entropy_in_range() -> None:
    uniform = GraphLogits(torch.zeros(2, N, A), torch.zeros(2, P, E))
    expected = (N * math.log(A) + P * math.log(E)) / (N + P)
    torch.testing.assert_close(uniform.entropy(), torch.full((2,), expected))

    peaked_atoms = torch.full((2, N, A), -50.0)
    peaked_atoms[..., 1] = 50.0
    peaked_pairs = torch.full((2, P, E), -50.0)
    peaked_pairs[..., 0] = 50.0
    assert GraphLogits(peaked_atoms, peaked_pairs).entropy().abs().max() < 1e-6

    rng = torch.Generator().manual_seed(0)
    random = GraphLogits(3 * torch.randn(4, N, A, generator=rng), 3 * torch.randn(4, P, E, generator=rng))
    h = random.entropy()
    assert h.shape == (4,)
    assert ((h > 0) & (h < expected)).all()


# ------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("estimator", ["st_gumbel", "st"])
def test_critic_loss_gradient_reaches_generator_through_straight_through(
    generator_cfg: ModelConfig, estimator: str
) -> None:
    generator = seeded(build_generator(generator_cfg, N, A, E), 0)
    critic = seeded(build_discriminator(generator_cfg, A, E), 1)
    rng = torch.Generator().manual_seed(2)
    graphs = generator(generator.noise(B, rng)).relax(estimator, 0.8, rng)
    # The forward pass sees discrete graphs ...
    assert set(graphs.bonds.unique().tolist()) <= {0.0, 1.0}
    (-critic(graphs.atoms, graphs.bonds).mean()).backward()
    # ... and yet every generator parameter gets a finite, non-zero gradient.
    for name, p in generator.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------- reward network


def test_reward_network_loss_falls_on_fixed_batch(model_cfg: ModelConfig) -> None:
    net = seeded(RewardNetwork(A, E, model_cfg.gcn_dims, model_cfg.aggregation_dim, model_cfg.head_dims), 3)
    graphs = random_hard_graphs(16, seed=12)
    targets = torch.rand(16, generator=torch.Generator().manual_seed(13))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(net(graphs.atoms, graphs.bonds), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert min(losses[-5:]) < min(losses[:5])
