"""Non-differentiable rewards for generated SMILES, in [0, 1], for the RL part of training.

Components, each in [0, 1] for a strictly valid molecule (:func:`molgan.chem.is_valid`):

- ``validity``: 1.
- ``qed``: RDKit's QED as is.
- ``logp``: Crippen logP clipped to ``LOGP_RANGE`` = [-2.0, 3.0], then min-max scaled to [0, 1]
  (higher logP = higher score). The range is QM9's: on 8,000 random QM9 molecules the 1st and
  99th percentiles of Crippen logP are -1.77 and 2.75 (MolGAN used [-2.12, 6.04], a range QM9
  molecules never reach at the top).
- ``sa``: SA score (1 = easy ... 10 = hard to synthesise) clipped to ``SA_RANGE`` = [2.0, 6.5]
  and mapped linearly so that 2.0 -> 1 and 6.5 -> 0 (easier = higher). Again QM9's range: its
  1st and 99th SA percentiles are 2.06 and 6.43 (MolGAN mapped [1.5, 5.0], which scores a
  third of QM9 as 0).
- ``filters``: 1 if the molecule passes the MOSES benchmark's filters
  (:func:`molgan.filters.passes_filters`: no ring of 8 or more atoms, no MCF or PAINS
  structural alert, no formal charge), else 0. The dataset was built from molecules that pass
  them, so a sample that fails one is unlike every training molecule.
- ``plausible``: 1 if every ring system of the molecule and every kind of bond (elements and
  order, ``molgan.substructures``) occurs in a reference set of molecules, the training set, else
  0 (``KnownStructures``). It rules out the strained cages and heteroatom chains that a dataset
  built by rules, as QM9 was, never holds.
- ``uniqueness``: 1 / (occurrences of the same SMILES in this batch plus in a rolling memory of
  the last ``memory_size`` valid SMILES this reward function scored). A call may give each
  sample its *contexts* (labels, e.g. which tenth of the data's logP its target lies in): repeats
  are then counted under each label apart, and the divisor is the largest of those counts, so a
  molecule is a repeat only where it was asked for something alike.

The reward of a strictly invalid sample (``None``, does not sanitize without repairs, or several
fragments) is 0.
The reward of a valid one combines its components with the configured weights ``w``:

- ``mean`` (the default): the weighted mean ``sum(w_k c_k) / sum(w_k)``;
- ``product``: ``prod(c_k ** w_k)`` over the components other than ``validity`` (which is 1 for
  every valid sample). A property then scales the uniqueness term instead of being added to it,
  so a repeat of a good molecule is worth less than a new one that is good, and a new one that
  is bad is worth little.
SMILES are compared as strings: pass canonical SMILES, as the generator's decoder produces.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from rdkit import Chem
from rdkit.Chem import QED, Crippen

from molgan.chem import is_valid_mol, sanitized_mol
from molgan.filters import passes_filters
from molgan.metrics import sa_score
from molgan.substructures import bond_label, ring_systems

__all__ = [
    "LOGP_RANGE",
    "REWARD_COMBINATIONS",
    "REWARD_COMPONENTS",
    "SA_RANGE",
    "SCORED_COMPONENTS",
    "KnownStructures",
    "RewardFunction",
    "clear_scores_cache",
    "normalized_scores",
    "scores_cache_info",
]

REWARD_COMPONENTS = ("validity", "qed", "logp", "sa", "filters", "plausible", "uniqueness")
SCORED_COMPONENTS = ("qed", "logp", "sa", "filters")
REWARD_COMBINATIONS = ("mean", "product")
LOGP_RANGE = (-2.0, 3.0)
SA_RANGE = (2.0, 6.5)
# Entries are (component, SMILES) pairs: 2**17 holds every score of about 44,000 molecules.
SCORES_CACHE_SIZE = 1 << 17
_PARSED_CACHE_SIZE = 4096
# How the uniqueness memory joins a label to a SMILES, and a sample's keys: neither occurs in one.
_LABEL_SEP = "\t"
_ENTRY_SEP = "\n"


def _scale(value: float, low: float, high: float) -> float:
    """``value`` clipped to [low, high] and mapped to [0, 1]."""
    return (min(max(value, low), high) - low) / (high - low)


@functools.lru_cache(maxsize=_PARSED_CACHE_SIZE)
def _parsed(smiles: str) -> Chem.Mol | None:
    # Validity and each component of a new molecule share one parse.
    return sanitized_mol(smiles)


@functools.lru_cache(maxsize=SCORES_CACHE_SIZE)
def _cached_validity(smiles: str) -> bool:
    return is_valid_mol(_parsed(smiles))


@functools.lru_cache(maxsize=SCORES_CACHE_SIZE)
def _component_score(component: str, smiles: str) -> float:
    # One entry per component: a reward without QED (the slow one, ~0.5 ms) never computes it.
    mol = _parsed(smiles)
    if mol is None:
        raise ValueError(f"SMILES does not parse/sanitize: {smiles!r}")
    if component == "qed":
        return min(max(float(QED.qed(mol)), 0.0), 1.0)
    if component == "logp":
        return _scale(float(Crippen.MolLogP(mol)), *LOGP_RANGE)
    if component == "sa":
        return 1.0 - _scale(sa_score(mol), *SA_RANGE)
    if component == "filters":
        return float(passes_filters(mol))
    raise ValueError(f"not a scored component: {component!r}; known: {SCORED_COMPONENTS}")


def normalized_scores(
    smiles: str, components: Sequence[str] = SCORED_COMPONENTS
) -> dict[str, float]:
    """``{"qed", "logp", "sa", "filters"}`` (or the given subset) of one molecule, each in [0, 1].

    The maps are in the module docstring. Each score is cached per (component, SMILES) string
    (least recently used, ``SCORES_CACHE_SIZE`` entries), so a repeated molecule costs a
    dictionary look-up. Raises ValueError when ``smiles`` does not sanitize (without repairs).
    """
    return {c: _component_score(c, smiles) for c in components}


def scores_cache_info() -> functools._CacheInfo:
    """Hits, misses and size of the score cache; one look-up per component scored."""
    return _component_score.cache_info()


def clear_scores_cache() -> None:
    """Empty the score, validity and parse caches (benchmarks use it to time cold scoring)."""
    _component_score.cache_clear()
    _cached_validity.cache_clear()
    _parsed.cache_clear()


@dataclasses.dataclass(frozen=True)
class KnownStructures:
    """The ring systems and kinds of bond of a set of molecules: what ``plausible`` accepts."""

    ring_systems: frozenset[str]
    bonds: frozenset[str]

    @classmethod
    def of(cls, smiles: Iterable[str]) -> KnownStructures:
        """Those of the molecules ``smiles`` (those that do not sanitize are skipped)."""
        systems: set[str] = set()
        bonds: set[str] = set()
        for s in smiles:
            mol = sanitized_mol(s)
            if mol is not None:
                systems.update(ring_systems(mol))
                bonds.update(bond_label(b) for b in mol.GetBonds())
        return cls(frozenset(systems), frozenset(bonds))

    def allows(self, mol: Chem.Mol) -> bool:
        """Whether every ring system and kind of bond of the sanitized ``mol`` is known."""
        return (all(bond_label(b) in self.bonds for b in mol.GetBonds())
                and all(system in self.ring_systems for system in ring_systems(mol)))


class RewardFunction:
    """Batch reward: the components of each strictly valid sample combined (``combine``: weighted
    ``mean`` or weighted ``product``, see the module docstring), 0 otherwise.

    ``weights`` maps component names (``REWARD_COMPONENTS``) to non-negative weights, not all 0;
    missing components weigh 0. ``memory_size`` is how many of the most recent valid SMILES scored
    by this object count towards ``uniqueness`` (0: only the current batch). ``known``: the
    reference of ``plausible`` (required when it has a weight).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        memory_size: int = 0,
        combine: str = "mean",
        known: KnownStructures | None = None,
    ) -> None:
        unknown = sorted(set(weights) - set(REWARD_COMPONENTS))
        if unknown:
            raise ValueError(
                f"unknown reward component(s) {unknown}; known: {list(REWARD_COMPONENTS)}"
            )
        clean: dict[str, float] = {}
        for name, weight in weights.items():
            w = float(weight)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"reward weight {name!r} must be finite and >= 0, got {weight!r}")
            if w > 0:
                clean[name] = w
        if not clean:
            raise ValueError("reward weights must not all be 0")
        if memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, got {memory_size}")
        if combine not in REWARD_COMBINATIONS:
            raise ValueError(f"combine must be one of {list(REWARD_COMBINATIONS)}, got {combine!r}")
        if "plausible" in clean and known is None:
            raise ValueError("the plausible component needs the known structures of a dataset")
        self.combine = combine
        self.known = known
        self._plausible: dict[str, float] = {}
        self.weights: dict[str, float] = clean
        self.memory_size = memory_size
        self._total_weight = sum(clean.values())
        self._memory: deque[tuple[str, ...]] = deque()
        self._memory_counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (f"RewardFunction(weights={self.weights}, memory_size={self.memory_size}, "
                f"combine={self.combine!r})")

    def __call__(
        self,
        smiles: Sequence[str | None],
        *,
        gather: Callable[[list[str]], list[str]] | None = None,
        contexts: Sequence[Sequence[str]] | None = None,
    ) -> torch.Tensor:
        """(B,) float32 rewards in [0, 1] for B samples (None = did not sanitize).

        ``gather`` is for a batch shared by several processes, each scoring its own samples: it
        takes this process's valid SMILES and returns those of the whole batch, every process's in
        rank order, the same list everywhere. Repeats then count over the whole batch and every
        process remembers the same sequence, so the processes do not each rediscover the same
        molecules. Only the strings travel; each process scores its own molecules.

        ``contexts`` (B, each a non-empty sequence of labels without tabs or newlines) counts
        the repeats of ``uniqueness`` per label (module docstring); ``None``: one count over all.
        """
        valid = [s is not None and _cached_validity(s) for s in smiles]
        labels = [None] * len(smiles) if contexts is None else contexts
        keys = [_keys(s, c) if ok else () for s, ok, c in zip(smiles, valid, labels, strict=True)]
        mine = [_ENTRY_SEP.join(k) for k in keys if k]
        batch = [tuple(e.split(_ENTRY_SEP)) for e in (gather(mine) if gather is not None else mine)]
        batch_counts = Counter(key for entry in batch for key in entry)
        w = self.weights
        score_weights = [(k, w[k]) for k in SCORED_COMPONENTS if k in w]
        product = self.combine == "product"
        rewards = []
        for s, ok, own in zip(smiles, valid, keys, strict=True):
            if not ok:
                rewards.append(0.0)
                continue
            parts = [(weight, _component_score(k, s)) for k, weight in score_weights]
            if "plausible" in w:
                parts.append((w["plausible"], self._plausibility(s)))
            if "uniqueness" in w:
                seen = max(batch_counts[k] + self._memory_counts[k] for k in own)
                parts.append((w["uniqueness"], 1.0 / seen))
            if product:
                rewards.append(math.prod(c**weight for weight, c in parts))
            else:
                total = w.get("validity", 0.0) + sum(weight * c for weight, c in parts)
                rewards.append(total / self._total_weight)
        self._remember(batch)
        # Rounding in the weighted mean may overshoot 1 by an ulp.
        return torch.tensor(rewards, dtype=torch.float32).clamp_(0.0, 1.0)

    def _plausibility(self, smiles: str) -> float:
        score = self._plausible.get(smiles)
        if score is None:
            assert self.known is not None  # checked in __init__
            if len(self._plausible) >= SCORES_CACHE_SIZE:
                self._plausible.clear()
            score = self._plausible[smiles] = float(self.known.allows(_parsed(smiles)))
        return score

    def _remember(self, entries: Iterable[tuple[str, ...]]) -> None:
        """Append each valid sample's keys to the rolling memory, evicting the oldest sample's:
        O(1) per molecule and label."""
        if self.memory_size == 0:
            return
        for entry in entries:
            self._memory.append(entry)
            self._memory_counts.update(entry)
            if len(self._memory) > self.memory_size:
                for old in self._memory.popleft():
                    self._memory_counts[old] -= 1
                    if self._memory_counts[old] == 0:
                        del self._memory_counts[old]

    def occurrences(
        self, smiles: Sequence[str], contexts: Sequence[Sequence[str]] | None = None
    ) -> list[int]:
        """How often each SMILES occurs in the memory (under the most frequent of its
        ``contexts``, as in ``__call__``), at least 1. Once the memory holds the last batch scored
        (``memory_size`` at least the batch), this is the divisor of that batch's ``uniqueness``;
        a smaller memory has forgotten part of the batch."""
        labels = [None] * len(smiles) if contexts is None else contexts
        return [max(1, *(self._memory_counts[k] for k in _keys(s, c)))
                for s, c in zip(smiles, labels, strict=True)]

    def reset_memory(self) -> None:
        """Forget the SMILES remembered for ``uniqueness``."""
        self._memory.clear()
        self._memory_counts.clear()

    def memory_state(self) -> list[str]:
        """The remembered samples, oldest first, each its SMILES or with contexts its keys
        (JSON-safe, for checkpoints)."""
        return [_ENTRY_SEP.join(entry) for entry in self._memory]

    def load_memory_state(self, entries: Iterable[str]) -> None:
        """Replace the memory with ``entries`` (oldest first), as saved by :meth:`memory_state`."""
        self.reset_memory()
        self._remember(tuple(e.split(_ENTRY_SEP)) for e in entries)


def _keys(smiles: str, contexts: Sequence[str] | None) -> tuple[str, ...]:
    """What the uniqueness memory counts for one valid sample: its SMILES, or one key per label."""
    if contexts is None:
        return (smiles,)
    if not contexts:
        raise ValueError("a sample's contexts must name at least one label")
    return tuple(f"{label}{_LABEL_SEP}{smiles}" for label in contexts)
