"""Structural features of (relaxed) graphs for the critic: ring counts, bonds per element pair and
degrees (``model.critic_features``).

A relational GCN of depth two cannot count a six-ring or tell a cage from a chain. These features
hand the critic such facts directly. They are tensor expressions of the one-hot graphs: on the
straight-through graphs of training they are exact counts in the forward pass, and their gradient
reaches the generator's logits through the relaxation.

Shapes: B graphs, N atoms, A atom types (index 0 = no atom), E bond types (index 0 = no bond).
"""

from __future__ import annotations

import torch

from molgan.config import CriticFeature

MAX_DEGREE = 4
"""Degrees 0..MAX_DEGREE get a bin each, higher ones share the last (no QM9 atom has more)."""


def adjacency(bonds: torch.Tensor) -> torch.Tensor:
    """Bonds (B, N, N, E) -> adjacency (B, N, N): 1 - P(no bond), with a zero diagonal."""
    adj = 1.0 - bonds[..., 0]
    return adj * (1.0 - torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device))


def _diagonal(m: torch.Tensor) -> torch.Tensor:
    return m.diagonal(dim1=-2, dim2=-1)


def cycle_counts(adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Simple cycles of a graph from powers of its adjacency (B, N, N) (exact for a 0/1 matrix).

    Returns per atom the cycles of length 3, 4 and 5 through it (B, N, 3), and per graph the
    cycles of length 3, 4, 5 and 6 (B, 4). A closed walk of length k from an atom goes round a
    k-cycle (twice per cycle, once each way) or retraces edges; the retracing walks are counted
    from degrees and shorter cycles and subtracted.
    """
    a2 = adj @ adj
    a3 = a2 @ adj
    a4 = a3 @ adj
    a5 = a4 @ adj
    a6 = a5 @ adj
    degree = adj.sum(-1)  # (B, N)
    walks3, walks4, walks5 = _diagonal(a3), _diagonal(a4), _diagonal(a5)
    neighbours = torch.einsum("bij,bj->bi", adj, degree)  # sum of the neighbours' degrees
    # Length 3: every closed 3-walk is a triangle.
    c3 = walks3 / 2
    # Length 4: i-j-i-k-i (degree^2) and i-j-k-j-i with k != i (neighbours' degrees - 1 each).
    c4 = (walks4 - degree * degree - neighbours + degree) / 2
    # Length 5: a closed 5-walk that is no 5-cycle goes round a triangle and retraces one edge.
    # With the triangle through the atom: the detour at the atom itself (before or after the
    # triangle), or at either other corner; three kinds of walk fit two of these patterns each.
    # Without it: a step to a neighbour, a triangle there, the step back.
    corner_degrees = torch.einsum("bij,bij,bj->bi", adj, a2, degree)
    through = 2 * degree * walks3 + 2 * corner_degrees - 3 * walks3
    elsewhere = torch.einsum("bij,bj->bi", adj, walks3) - 2 * walks3
    c5 = (walks5 - through - elsewhere) / 2
    per_atom = torch.stack([c3, c4, c5], dim=-1)

    # Length 6, per graph only (no closed form per atom): closed 6-walks minus those that retrace
    # edges or go round shorter cycles, by the inclusion-exclusion of Alon, Yuster and Zwick,
    # "Finding and counting given length cycles" (1997).
    def trace(m: torch.Tensor) -> torch.Tensor:
        return _diagonal(m).sum(-1)

    d = _diagonal(a2)  # degrees again, as closed 2-walks
    c6 = (
        trace(a6)
        - 3 * trace(a3 * a3)
        + 9 * (adj * a2 * a2).sum((-2, -1))
        - 6 * (d * walks4).sum(-1)
        + 6 * trace(a4)
        - 4 * trace(a3)
        + 4 * d.pow(3).sum(-1)
        + 3 * a3.sum((-2, -1))
        - 12 * d.pow(2).sum(-1)
        + 4 * trace(a2)
    ) / 12
    per_graph = torch.stack([c3.sum(-1) / 3, c4.sum(-1) / 4, c5.sum(-1) / 5, c6], dim=-1)
    return per_atom, per_graph


def _degree_bins(degree: torch.Tensor) -> torch.Tensor:
    """Degrees (B, N) -> (B, N, MAX_DEGREE + 1): one-hot for an integer degree, linear between
    neighbouring bins otherwise (so relaxed graphs get a gradient)."""
    bins = torch.arange(MAX_DEGREE + 1, dtype=degree.dtype, device=degree.device)
    soft = (1.0 - (degree.unsqueeze(-1) - bins).abs()).clamp(min=0.0)
    # The last bin takes every degree above it.
    soft[..., -1] = (degree - MAX_DEGREE + 1).clamp(0.0, 1.0)
    return soft


def feature_sizes(names: tuple[CriticFeature, ...], n_atom_types: int, n_bond_types: int) -> tuple[int, int]:
    """(per-atom, per-graph) widths of ``structure_features`` for these names."""
    elements = n_atom_types - 1
    per_atom = {"cycles": 3, "bond_pairs": 0, "degrees": MAX_DEGREE + 1}
    per_graph = {"cycles": 4, "bond_pairs": elements * (elements + 1) // 2 * (n_bond_types - 1),
                 "degrees": MAX_DEGREE + 1}
    return sum(per_atom[n] for n in names), sum(per_graph[n] for n in names)


def structure_features(
    atoms: torch.Tensor, bonds: torch.Tensor, names: tuple[CriticFeature, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Atoms (B, N, A) and bonds (B, N, N, E) -> per-atom (B, N, F) and per-graph (B, G) features
    (widths by ``feature_sizes``), counts as ``log(1 + count)``.

    Computed in float32 whatever the autocast: a count of closed 6-walks exceeds what bfloat16
    holds exactly. Bonds to an absent atom do not count, as they do not in the decoded molecule.
    """
    with torch.autocast(atoms.device.type, enabled=False):
        atoms, bonds = atoms.float(), bonds.float()
        present = 1.0 - atoms[..., 0]  # (B, N)
        adj = adjacency(bonds) * present.unsqueeze(-1) * present.unsqueeze(-2)
        per_atom: list[torch.Tensor] = []
        per_graph: list[torch.Tensor] = []
        for name in names:
            if name == "cycles":
                through_atom, of_graph = cycle_counts(adj)
                per_atom.append(through_atom.clamp(min=0.0).log1p())
                per_graph.append(of_graph.clamp(min=0.0).log1p())
            elif name == "degrees":
                bins = _degree_bins(adj.sum(-1)) * present.unsqueeze(-1)
                per_atom.append(bins)
                per_graph.append(bins.sum(1).log1p())
            elif name == "bond_pairs":
                # Absent atoms are no element, so their bonds drop out; the diagonal is no bond.
                elements = atoms[..., 1:]  # (B, N, A - 1)
                counts = torch.einsum("bia,bije,bjc->bace", elements, bonds[..., 1:], elements)
                a = elements.shape[-1]
                i, j = torch.triu_indices(a, a, device=atoms.device)
                # Each bond is seen from both ends: once in each of (a, c) and (c, a), twice in (a, a).
                unordered = counts[:, i, j] / torch.where(i == j, 2.0, 1.0).unsqueeze(-1)  # (B, pairs, E - 1)
                per_graph.append(unordered.flatten(1).log1p())
            else:
                raise ValueError(f"unknown critic feature {name!r}")
        b, n = present.shape
        node = torch.cat(per_atom, -1) if per_atom else atoms.new_zeros(b, n, 0)
        graph = torch.cat(per_graph, -1) if per_graph else atoms.new_zeros(b, 0)
    return node, graph
