"""Generators, the distributions over graphs they return, relational-GCN critic and reward network.

Three generators (``model.generator``): ``MLPGenerator`` returns ``GraphLogits``, independent atom
and bond choices; ``TransformerGenerator`` returns them too, from atom tokens and pair states that
attend to one another; ``AtomsFirstGenerator`` returns ``AtomsFirstLogits``, atom choices first
and bond choices given them. All offer ``relax`` (graphs for the critic), ``sample``, ``log_prob``
and ``entropy``, so training and sampling need not know which generator they drive.

Shapes: B graphs, N atoms per graph, A atom types (index 0 = no atom), E bond types
(index 0 = no bond), Z noise dimensions, P = N (N - 1) / 2 atom pairs, H per-atom embedding.
A graph is a pair of one-hot (or relaxed one-hot) tensors: atoms (B, N, A), bonds (B, N, N, E).
A conditional model (``model.conditions``, C properties) also takes a condition tensor (B, C) of
standardised targets, NaN where unset (``molgan.conditions``), in its generator and its critic.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from molgan.conditions import condition_features
from molgan.config import CriticFeature, ModelConfig
from molgan.graph_features import feature_sizes, structure_features
from molgan.gumbel import Estimator, check_temperature, gumbel_max, relax, truncate_min_p
from molgan.sampling_settings import SamplingSettings


@dataclass(frozen=True)
class Graphs:
    """A batch of (possibly relaxed) one-hot graphs.

    atoms: (B, N, A); bonds: (B, N, N, E), symmetric, diagonal = "no bond"; conditions: (B, C)
    the targets they were generated for (or the real molecules' own properties), ``None`` for an
    unconditional model.
    """

    atoms: torch.Tensor
    bonds: torch.Tensor
    conditions: torch.Tensor | None = None

    def with_conditions(self, conditions: torch.Tensor | None) -> Graphs:
        return replace(self, conditions=conditions)

    def indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer graphs: atoms (B, N) and bonds (B, N, N), as ``molgan.chem`` decodes them."""
        return self.atoms.argmax(-1), self.bonds.argmax(-1)

    def __getitem__(self, rows: slice) -> Graphs:
        """The graphs of ``rows`` (a slice of the batch)."""
        conditions = None if self.conditions is None else self.conditions[rows]
        return Graphs(self.atoms[rows], self.bonds[rows], conditions)

    @staticmethod
    def one_hot(atoms: torch.Tensor, bonds: torch.Tensor, n_atom_types: int, n_bond_types: int) -> Graphs:
        """From integer atoms (B, N) and bonds (B, N, N) to float one-hot graphs."""
        return Graphs(
            F.one_hot(atoms.long(), n_atom_types).float(),
            F.one_hot(bonds.long(), n_bond_types).float(),
        )


@dataclass(frozen=True)
class GraphLogits:
    """Unnormalised log-probabilities of the generator's categorical choices.

    atoms: (B, N, A); pairs: (B, P, E) for the upper triangle i < j (``triu_indices`` order).
    """

    atoms: torch.Tensor
    pairs: torch.Tensor

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[1]

    def bonds(self) -> torch.Tensor:
        """Full symmetric bond logits (B, N, N, E); the diagonal allows only "no bond"."""
        b, _, e = self.pairs.shape
        n = self.n_atoms
        diagonal = torch.full((e,), float("-inf"), dtype=self.pairs.dtype, device=self.pairs.device)
        diagonal[0] = 0.0
        full = diagonal.expand(b, n, n, e).clone()
        return _scatter_pairs(full, self.pairs)

    def relax(
        self, estimator: Estimator, tau: float, generator: torch.Generator | None = None
    ) -> Graphs:
        """Graphs for the critic through an estimator of ``molgan.gumbel``.

        Noise is drawn once per atom pair, so sampled bond matrices stay symmetric.
        """
        atoms = relax(self.atoms, estimator, tau, generator)
        pairs = relax(self.pairs, estimator, tau, generator)
        return Graphs(atoms, _pairs_to_bonds(pairs, self.n_atoms))

    def tempered(self, temperature: float = 1.0, min_p: float = 0.0) -> GraphLogits:
        """The logits that Gumbel-Max sampling draws from: ``logits / temperature``, then min-p
        truncation (``molgan.gumbel.truncate_min_p``)."""
        return GraphLogits(
            _tempered(self.atoms, temperature, min_p), _tempered(self.pairs, temperature, min_p)
        )

    def sample(
        self, settings: SamplingSettings, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete graphs: atoms (B, N) and bonds (B, N, N) as integer tensors.

        ``argmax``: the most likely class of every choice (the paper's test-time behaviour);
        ``gumbel``: an exact sample of ``softmax(logits / temperature)`` per choice, restricted to
        the classes at least ``min_p`` times as likely as the most likely one.
        """
        atoms = _draw(self.atoms, settings, generator)
        pairs = _draw(self.pairs, settings, generator)
        return atoms, _pair_indices_to_matrix(pairs, self.n_atoms)

    def log_prob(
        self, atoms: torch.Tensor, bonds: torch.Tensor, temperature: float = 1.0, min_p: float = 0.0
    ) -> torch.Tensor:
        """log p(graph) (B,) of integer graphs under the distribution that
        ``sample(SamplingSettings("gumbel", temperature, min_p))`` draws from (``-inf`` for a graph
        it cannot draw)."""
        n = self.n_atoms
        iu = torch.triu_indices(n, n, offset=1, device=bonds.device)
        pairs = bonds[:, iu[0], iu[1]]
        policy = self.tempered(temperature, min_p)
        lp_atoms = F.log_softmax(policy.atoms, -1).gather(-1, atoms.long().unsqueeze(-1))
        lp_pairs = F.log_softmax(policy.pairs, -1).gather(-1, pairs.long().unsqueeze(-1))
        lp_atoms, lp_pairs = lp_atoms.squeeze(-1), lp_pairs.squeeze(-1)
        return lp_atoms.sum(-1) + lp_pairs.sum(-1)

    def entropy(self) -> torch.Tensor:
        """Mean entropy (B,) of the N + P categorical choices of each graph."""
        def h(logits: torch.Tensor) -> torch.Tensor:
            logp = F.log_softmax(logits, -1)
            # Truncated classes (logit -inf) add 0, not 0 * -inf = nan, and no gradient.
            return -(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1)

        return torch.cat([h(self.atoms), h(self.pairs)], dim=1).mean(-1)


@dataclass(frozen=True)
class AtomsFirstLogits:
    """Logits of a two-stage choice: atom types first, then bond types given those atoms.

    atoms: (B, N, A) atom-type logits; nodes: (B, N, H) per-atom embeddings of the noise;
    bond_stage: maps the nodes and chosen atoms (B, N, A) (one-hot or relaxed) to pair logits
    (B, P, E) for the upper triangle i < j (``triu_indices`` order).

    It offers what ``GraphLogits`` offers (the trainer and the sampler use either alike), each
    time drawing the atoms before the bonds. ``pairs``, ``bonds()`` and ``entropy()`` describe the
    bonds given the most likely atoms, the one choice of atoms that needs no sample.
    """

    atoms: torch.Tensor
    nodes: torch.Tensor
    bond_stage: BondsGivenAtoms

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[1]

    def given(self, atoms: torch.Tensor) -> GraphLogits:
        """Independent per-choice logits once the atoms (B, N, A) are chosen: these atom logits
        and the pair logits of bonds between those atoms."""
        return GraphLogits(self.atoms, self.bond_stage(self.nodes, atoms))

    def _one_hot(self, atoms: torch.Tensor) -> torch.Tensor:
        """Integer atoms (B, N) -> one-hot (B, N, A) in the logits' dtype."""
        return F.one_hot(atoms.long(), self.atoms.shape[-1]).to(self.atoms.dtype)

    @functools.cached_property
    def most_likely(self) -> GraphLogits:
        """``given`` the argmax atom types; computed once (the entropy bonus and the mode-seeking
        term of one step both read it)."""
        return self.given(self._one_hot(self.atoms.argmax(-1)))

    @property
    def pairs(self) -> torch.Tensor:
        """Pair logits (B, P, E) given the most likely atoms."""
        return self.most_likely.pairs

    def bonds(self) -> torch.Tensor:
        """Full symmetric bond logits (B, N, N, E) given the most likely atoms."""
        return self.most_likely.bonds()

    def relax(
        self, estimator: Estimator, tau: float, generator: torch.Generator | None = None
    ) -> Graphs:
        """Graphs for the critic: relaxed atoms, then relaxed bonds given them.

        With a straight-through estimator the bond stage sees exact one-hot atoms, and the
        gradient of anything computed from the bonds reaches the atom logits through them.
        """
        atoms = relax(self.atoms, estimator, tau, generator)
        pairs = relax(self.bond_stage(self.nodes, atoms), estimator, tau, generator)
        return Graphs(atoms, _pairs_to_bonds(pairs, self.n_atoms))

    def sample(
        self, settings: SamplingSettings, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete graphs, atoms (B, N) and bonds (B, N, N): the atoms drawn as
        ``GraphLogits.sample`` draws them, then the bonds given those atoms, by the same rule."""
        atoms = _draw(self.atoms, settings, generator)
        with torch.no_grad():  # a discrete sample has no gradient; log_prob recomputes the logits
            pair_logits = self.bond_stage(self.nodes, self._one_hot(atoms))
        pairs = _draw(pair_logits, settings, generator)
        return atoms, _pair_indices_to_matrix(pairs, self.n_atoms)

    def log_prob(
        self, atoms: torch.Tensor, bonds: torch.Tensor, temperature: float = 1.0, min_p: float = 0.0
    ) -> torch.Tensor:
        """log p(atoms) + log p(bonds | atoms) (B,) of integer graphs under the distribution that
        ``sample(SamplingSettings("gumbel", temperature, min_p))`` draws from."""
        return self.given(self._one_hot(atoms)).log_prob(atoms, bonds, temperature, min_p)

    def entropy(self) -> torch.Tensor:
        """Mean entropy (B,) of the N atom choices and of the P bond choices given the most
        likely atoms."""
        return self.most_likely.entropy()


GraphDistribution = GraphLogits | AtomsFirstLogits
"""What a generator returns: independent choices, or atoms first and bonds given them."""


def _tempered(logits: torch.Tensor, temperature: float, min_p: float) -> torch.Tensor:
    check_temperature(temperature)
    return truncate_min_p(logits / temperature, min_p)


def _draw(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None
) -> torch.Tensor:
    """Integer choices (...) from logits (..., K) by the rule of ``GraphLogits.sample``."""
    if settings.mode == "argmax":
        return logits.argmax(-1)
    assert settings.temperature is not None and settings.min_p is not None  # gumbel has both
    return gumbel_max(_tempered(logits, settings.temperature, settings.min_p), 1.0, generator)


def _scatter_pairs(full: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    n = full.shape[1]
    iu = torch.triu_indices(n, n, offset=1, device=pairs.device)
    full[:, iu[0], iu[1]] = pairs
    full[:, iu[1], iu[0]] = pairs
    return full


def _pairs_to_bonds(pairs: torch.Tensor, n: int) -> torch.Tensor:
    """(B, P, E) relaxed pair choices -> (B, N, N, E) symmetric, diagonal one-hot "no bond"."""
    b, _, e = pairs.shape
    eye = torch.eye(n, dtype=pairs.dtype, device=pairs.device)
    full = pairs.new_zeros(b, n, n, e)
    full[..., 0] = eye
    return _scatter_pairs(full, pairs)


def _pair_indices_to_matrix(pairs: torch.Tensor, n: int) -> torch.Tensor:
    """(B, P) integer pair choices -> (B, N, N) symmetric, zero diagonal."""
    full = pairs.new_zeros(pairs.shape[0], n, n)
    iu = torch.triu_indices(n, n, offset=1, device=pairs.device)
    full[:, iu[0], iu[1]] = pairs
    full[:, iu[1], iu[0]] = pairs
    return full


def _mlp(dims: list[int], activation: type[nn.Module], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims):
        layers += [nn.Linear(d_in, d_out), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """Noise z (B, Z) and, for a conditional model, conditions (B, C) -> a ``GraphDistribution``.
    An MLP trunk and a linear atom head are common to both kinds (``model.generator``); how the
    bond logits arise is the subclass's (``build_bond_stage`` and ``forward``). The trunk reads
    ``[z, condition_features(conditions)]``; conditions ``None`` leave every condition unset."""

    def __init__(
        self,
        z_dim: int,
        hidden_dims: tuple[int, ...],
        n_atoms: int,
        n_atom_types: int,
        n_bond_types: int,
        dropout: float = 0.0,
        n_conditions: int = 0,
    ) -> None:
        super().__init__()
        self.z_dim, self.n_atoms, self.n_conditions = z_dim, n_atoms, n_conditions
        self.n_atom_types, self.n_bond_types = n_atom_types, n_bond_types
        self.n_pairs = n_atoms * (n_atoms - 1) // 2
        self.body = _mlp([z_dim + 2 * n_conditions, *hidden_dims], nn.Tanh, dropout)
        self.trunk_dim = hidden_dims[-1] if hidden_dims else z_dim + 2 * n_conditions
        if self.atoms_from_trunk:
            self.atom_head = nn.Linear(self.trunk_dim, n_atoms * n_atom_types)
        self.build_bond_stage()

    atoms_from_trunk = True
    """Whether the atom logits are a linear head of the trunk (``atom_logits``)."""

    def build_bond_stage(self) -> None:
        """Add the modules that give the bond logits (called at the end of ``__init__``)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal z (B, Z) from an explicit generator."""
        device = self.device
        return torch.randn(batch_size, self.z_dim, generator=generator, device=device)

    def trunk(self, z: torch.Tensor, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (B, Z) and conditions (B, C) -> trunk features (B, trunk_dim)."""
        if self.n_conditions:
            if conditions is None:
                conditions = z.new_full((z.shape[0], self.n_conditions), math.nan)
            z = torch.cat([z, condition_features(conditions.to(z.dtype))], dim=-1)
        elif conditions is not None:
            raise ValueError("this generator is not conditional: it takes no conditions")
        return self.body(z)

    def atom_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk features (B, trunk_dim) -> atom logits (B, N, A)."""
        return self.atom_head(h).view(-1, self.n_atoms, self.n_atom_types)

    def forward(self, z: torch.Tensor, conditions: torch.Tensor | None = None) -> GraphDistribution:
        raise NotImplementedError


class MLPGenerator(Generator):
    """MolGAN's generator: atoms (B, N, A) and pairs (B, P, E) as two linear heads of the trunk,
    independent choices given z (``GraphLogits``)."""

    def build_bond_stage(self) -> None:
        # Logits for the upper triangle only: the bond matrix is symmetric by construction and the
        # diagonal is never a choice.
        self.pair_head = nn.Linear(self.trunk_dim, self.n_pairs * self.n_bond_types)

    def forward(self, z: torch.Tensor, conditions: torch.Tensor | None = None) -> GraphLogits:
        h = self.trunk(z, conditions)
        atoms = self.atom_logits(h)
        pairs = self.pair_head(h).view(-1, self.n_pairs, self.n_bond_types)
        return GraphLogits(atoms, pairs)


class AtomAttention(nn.Module):
    """One pre-norm transformer layer over the atoms of each graph: (B, N, H) -> (B, N, H), so
    that each atom's state knows which atoms the graph has.

    Attention is written out with batched matrix products: with N = 9 atoms they are faster
    on a CPU than the fused kernels, which are built for long sequences."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_attention = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mix = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias`` (B, heads, N, N), if given, is added to the attention logits (what the pairs
        of atoms say about attending from one to the other)."""
        b, n, dim = x.shape
        # (3, B, heads, N, dim / heads)
        q, k, v = self.qkv(self.norm_attention(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, N, N)
        weights = torch.softmax(scores if bias is None else scores + bias, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(b, n, dim)
        x = x + self.mix(attended)
        return x + self.mlp(self.norm_mlp(x))


class BondsGivenAtoms(nn.Module):
    """The bond stage of ``AtomsFirstGenerator``: node embeddings (B, N, H) and chosen atom
    types (B, N, A) (one-hot, or relaxed in training) -> pair logits (B, P, E).

    Each node's state is its embedding plus an embedding of its type, mixed over the graph by
    ``layers`` attention layers; with its raw type appended, ``v_i = [x_i, a_i]``. A pair (i, j)
    is scored by an MLP on the sum and the product of the two ends:
    ``out(tanh(S (v_i + v_j) + (M v_i) * (M v_j)))``, the same for (j, i): the logits are
    symmetric by construction. ``S`` and ``M`` are applied once per atom rather than once per
    pair, so a pair costs a few elementwise operations and the small output layer (four times
    fewer multiplications than a linear layer on the concatenated pair features).
    """

    def __init__(
        self, n_atom_types: int, n_bond_types: int, dim: int, hidden: int, layers: int, heads: int
    ) -> None:
        super().__init__()
        self.type_embedding = nn.Linear(n_atom_types, dim, bias=False)
        self.layers = nn.ModuleList(AtomAttention(dim, heads) for _ in range(layers))
        self.pair_sum = nn.Linear(dim + n_atom_types, hidden)
        self.pair_product = nn.Linear(dim + n_atom_types, hidden, bias=False)
        self.out = nn.Linear(hidden, n_bond_types)

    def forward(self, nodes: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
        x = nodes + self.type_embedding(atoms)
        for layer in self.layers:
            x = layer(x)
        v = torch.cat([x, atoms], dim=-1)  # (B, N, H + A)
        # The bias of pair_sum would count twice in s_i + s_j: it is added once below instead.
        s, m = F.linear(v, self.pair_sum.weight), self.pair_product(v)  # (B, N, hidden) each
        ends = torch.cat([s, m], dim=-1)
        n, h = atoms.shape[1], s.shape[-1]
        i, j = torch.triu_indices(n, n, offset=1, device=atoms.device)
        first, second = ends.index_select(1, i), ends.index_select(1, j)  # (B, P, 2 hidden) each
        sums = first[..., :h] + second[..., :h] + self.pair_sum.bias
        hidden = torch.tanh(sums + first[..., h:] * second[..., h:])  # (B, P, hidden)
        return self.out(hidden)


class AtomsFirstGenerator(Generator):
    """Atom types first, then bonds that know them (``AtomsFirstLogits``): the trunk gives the
    atom logits (B, N, A) and a per-atom embedding (B, N, H); ``BondsGivenAtoms`` turns the
    embeddings and the chosen atoms into bond logits."""

    node_dim = 32
    """H: per-atom embedding and attention width."""
    pair_hidden = 64
    """Hidden units of the pair MLP."""
    attention_layers = 2
    attention_heads = 4

    def build_bond_stage(self) -> None:
        self.node_head = nn.Linear(self.trunk_dim, self.n_atoms * self.node_dim)
        self.bond_stage = BondsGivenAtoms(
            self.n_atom_types, self.n_bond_types, self.node_dim, self.pair_hidden,
            self.attention_layers, self.attention_heads,
        )

    def forward(self, z: torch.Tensor, conditions: torch.Tensor | None = None) -> AtomsFirstLogits:
        h = self.trunk(z, conditions)
        nodes = self.node_head(h).view(-1, self.n_atoms, self.node_dim)
        return AtomsFirstLogits(self.atom_logits(h), nodes, self.bond_stage)


class PairUpdate(nn.Module):
    """Atom states (B, N, H) -> an update (B, N, N, D) of the state of every atom pair, symmetric by
    construction: ``tanh(S (x_i + x_j) + (M x_i) * (M x_j))``, with ``S`` and ``M`` applied once per
    atom (as ``BondsGivenAtoms`` scores its pairs)."""

    def __init__(self, dim: int, pair_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pair_sum = nn.Linear(dim, pair_dim)
        self.pair_product = nn.Linear(dim, pair_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        # The bias of pair_sum would count twice in s_i + s_j: it is added once below instead.
        s, m = F.linear(x, self.pair_sum.weight), self.pair_product(x)  # (B, N, D) each
        sums = s.unsqueeze(2) + s.unsqueeze(1) + self.pair_sum.bias
        return torch.tanh(sums + m.unsqueeze(2) * m.unsqueeze(1))


class TransformerGenerator(Generator):
    """A generator that sees the whole graph it emits (``GraphLogits``): the trunk gives N atom
    tokens (B, N, H), the per-position weights of ``token_head`` acting as learned positions, and
    ``layers`` rounds refine them together with a state per atom pair (B, N, N, D). Each round
    updates the pair states from the atoms (``PairUpdate``) and lets the atoms attend to one
    another with the pair states as attention biases (``AtomAttention``). Atom logits come from
    each token, bond logits from each pair's final state. Still one shot: every choice is made at
    once, but each knows what the others are likely to be."""

    token_dim = 48
    """H: width of an atom token."""
    pair_dim = 16
    """D: width of a pair state."""
    layers = 2
    heads = 4
    atoms_from_trunk = False

    def build_bond_stage(self) -> None:
        h, d = self.token_dim, self.pair_dim
        self.token_head = nn.Linear(self.trunk_dim, self.n_atoms * h)
        self.pair_updates = nn.ModuleList(PairUpdate(h, d) for _ in range(self.layers + 1))
        self.attention_biases = nn.ModuleList(nn.Linear(d, self.heads) for _ in range(self.layers))
        self.attention = nn.ModuleList(AtomAttention(h, self.heads) for _ in range(self.layers))
        self.atom_out = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, self.n_atom_types))
        self.bond_out = nn.Linear(d, self.n_bond_types)

    def forward(self, z: torch.Tensor, conditions: torch.Tensor | None = None) -> GraphLogits:
        h = self.trunk(z, conditions)
        x = self.token_head(h).view(-1, self.n_atoms, self.token_dim)  # (B, N, H)
        pairs = x.new_zeros(x.shape[0], self.n_atoms, self.n_atoms, self.pair_dim)
        for update, to_bias, attend in zip(
            self.pair_updates[:-1], self.attention_biases, self.attention, strict=True
        ):
            pairs = pairs + update(x)
            x = attend(x, to_bias(pairs).permute(0, 3, 1, 2))
        pairs = pairs + self.pair_updates[-1](x)
        i, j = torch.triu_indices(self.n_atoms, self.n_atoms, offset=1, device=x.device)
        return GraphLogits(self.atom_out(x), self.bond_out(pairs[:, i, j]))


class RelationalGCN(nn.Module):
    """Relational graph convolutions: one weight per bond type plus a self connection.

    atoms (B, N, A), bonds (B, N, N, E) -> node features (B, N, D) with D = dims[-1] + A
    (the atom types are concatenated to every layer's input and to the output, as in MolGAN).
    """

    def __init__(self, n_atom_types: int, n_bond_types: int, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.n_relations = n_bond_types - 1  # "no bond" carries no message
        self.relation = nn.ModuleList()
        self.self_loop = nn.ModuleList()
        d_in = n_atom_types
        for d in dims:
            self.relation.append(nn.Linear(d_in, d * self.n_relations, bias=False))
            self.self_loop.append(nn.Linear(d_in, d))
            d_in = d + n_atom_types
        self.out_dim = d_in

    def forward(self, atoms: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
        b, n, _ = atoms.shape
        adjacency = bonds[..., 1:]  # (B, N, N, R)
        x = atoms
        for relation, self_loop in zip(self.relation, self.self_loop, strict=True):
            messages = relation(x).view(b, n, self.n_relations, -1)  # (B, N, R, D)
            h = torch.einsum("bijr,bjrd->bid", adjacency, messages) + self_loop(x)
            x = torch.cat([torch.tanh(h), atoms], dim=-1)
        return x


class GraphAggregation(nn.Module):
    """Gated sum over nodes: (B, N, D) -> (B, G), ``tanh(sum_n sigmoid(W1 h) * tanh(W2 h))``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(in_dim, out_dim)
        self.value = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh((torch.sigmoid(self.gate(h)) * torch.tanh(self.value(h))).sum(1))


class GraphCritic(nn.Module):
    """R-GCN -> gated aggregation -> MLP -> one score per graph (or per pack of graphs).

    atoms (B, N, A), bonds (B, N, N, E) -> (B / pack,). Accepts hard one-hot and relaxed graphs.
    With ``features`` (``molgan.graph_features``), each atom's structural features (B, N, F) join
    its type at every R-GCN layer and the graph's (B, G) join its embedding, so the critic sees
    rings, cages and the bonds between elements, which two rounds of messages cannot count.
    With ``pack > 1`` (PacGAN) the embeddings of ``pack`` consecutive graphs are concatenated
    before the MLP, so the critic can see a lack of variety inside a pack. A conditional critic
    (``n_conditions`` C) also reads each graph's conditions (B, C): their features
    (``condition_features``) join the graph's embedding before the MLP, so it judges the pair of
    molecule and property, and a molecule generated for the wrong target looks fake.
    """

    def __init__(
        self,
        n_atom_types: int,
        n_bond_types: int,
        gcn_dims: tuple[int, ...],
        aggregation_dim: int,
        head_dims: tuple[int, ...],
        pack: int = 1,
        n_conditions: int = 0,
        features: tuple[CriticFeature, ...] = (),
        features_detached: bool = False,
    ) -> None:
        super().__init__()
        self.pack, self.n_conditions, self.features = pack, n_conditions, features
        self.features_detached = features_detached
        per_atom, per_graph = feature_sizes(features, n_atom_types, n_bond_types)
        self.gcn = RelationalGCN(n_atom_types + per_atom, n_bond_types, gcn_dims)
        self.aggregate = GraphAggregation(self.gcn.out_dim, aggregation_dim)
        embedding = (aggregation_dim + per_graph + 2 * n_conditions) * pack
        self.head = _mlp([embedding, *head_dims], nn.Tanh)
        self.out = nn.Linear(head_dims[-1] if head_dims else embedding, 1)

    def forward(
        self, atoms: torch.Tensor, bonds: torch.Tensor, conditions: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.features:
            per_atom, per_graph = structure_features(atoms, bonds, self.features)
            if self.features_detached:
                per_atom, per_graph = per_atom.detach(), per_graph.detach()
            nodes = torch.cat([atoms, per_atom.to(atoms.dtype)], dim=-1)
            g = self.aggregate(self.gcn(nodes, bonds))
            g = torch.cat([g, per_graph.to(g.dtype)], dim=-1)
        else:
            g = self.aggregate(self.gcn(atoms, bonds))  # (B, G)
        if self.n_conditions:
            if conditions is None:
                conditions = g.new_full((g.shape[0], self.n_conditions), math.nan)
            g = torch.cat([g, condition_features(conditions.to(g.dtype))], dim=-1)
        if self.pack > 1:
            if g.shape[0] % self.pack:
                raise ValueError(f"batch of {g.shape[0]} graphs does not split into packs of {self.pack}")
            g = g.reshape(g.shape[0] // self.pack, -1)
        return self.out(self.head(g)).squeeze(-1)


def critic_scores(
    critic: nn.Module, atoms: torch.Tensor, bonds: torch.Tensor, conditions: torch.Tensor | None
) -> torch.Tensor:
    """``critic``'s scores of graphs, given their conditions (B, C) where the model has some: a
    critic of an unconditional model is called with the graph alone."""
    return critic(atoms, bonds) if conditions is None else critic(atoms, bonds, conditions)


class RewardNetwork(GraphCritic):
    """The critic's architecture with a sigmoid: predicts a reward in [0, 1] per graph (B,)
    (built without packing: the reward belongs to a single graph)."""

    def forward(
        self, atoms: torch.Tensor, bonds: torch.Tensor, conditions: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.sigmoid(super().forward(atoms, bonds, conditions))


GENERATORS: dict[str, type[Generator]] = {
    "mlp": MLPGenerator, "atoms_first": AtomsFirstGenerator, "transformer": TransformerGenerator,
}
"""``model.generator`` -> its class."""


def build_generator(cfg: ModelConfig, n_atoms: int, n_atom_types: int, n_bond_types: int) -> Generator:
    return GENERATORS[cfg.generator](
        cfg.z_dim, cfg.generator_dims, n_atoms, n_atom_types, n_bond_types, cfg.generator_dropout,
        len(cfg.conditions),
    )


def build_discriminator(cfg: ModelConfig, n_atom_types: int, n_bond_types: int) -> GraphCritic:
    return GraphCritic(
        n_atom_types, n_bond_types, cfg.gcn_dims, cfg.aggregation_dim, cfg.head_dims, cfg.pack,
        len(cfg.conditions), cfg.critic_features, cfg.critic_features_detached,
    )


def build_reward_network(cfg: ModelConfig, n_atom_types: int, n_bond_types: int) -> RewardNetwork:
    return RewardNetwork(n_atom_types, n_bond_types, cfg.gcn_dims, cfg.aggregation_dim, cfg.head_dims,
                         n_conditions=len(cfg.conditions), features=cfg.critic_features,
                         features_detached=cfg.critic_features_detached)
