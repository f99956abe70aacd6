"""Property objectives scored as the MolGAN paper's Table 2 scores them, plus "hits".

For each objective, a strictly valid molecule (:func:`molgan.chem.is_valid_mol`) has a raw
property and a normalized score in [0, 1]; an invalid sample scores 0:

- ``qed``: RDKit's QED; the score is QED itself.
- ``logp``: Crippen logP; the score is ``(logP - LOGP_LOW) / (LOGP_HIGH - LOGP_LOW)`` clipped to
  [0, 1], with the bounds MolGAN took from its solubility objective.
- ``sa``: the SA score (1 = easy ... 10 = hard to synthesize); the score is ``(5 - SA) / 3.5``
  clipped to [0, 1].

A *hit* is a distinct valid molecule whose raw property passes a threshold (``DEFAULT_HITS``:
QED >= 0.6, logP >= 2.7, SA <= 2.5). Hits are reported per 10,000 samples, so that runs with
different sample counts compare; the count itself rewards a generator that finds many good
molecules rather than one good molecule many times.

These are the paper's reporting scales. The training reward's ``logp`` and ``sa`` components
(:mod:`molgan.rewards`) are scaled to QM9's own range instead, where the paper's would leave most
of QM9 at the bottom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from molgan.chem import is_valid_mol, mol_to_smiles, sanitized_mol
from molgan.metrics import mol_properties

__all__ = [
    "DEFAULT_HITS",
    "LOGP_HIGH",
    "LOGP_LOW",
    "OBJECTIVES",
    "HitRule",
    "objective_metrics",
    "paper_score",
    "parse_hit_rule",
    "rewarded_objectives",
]

OBJECTIVES = ("qed", "logp", "sa")
LOGP_LOW = -2.12178879609
LOGP_HIGH = 6.0429063424
SA_EASY, SA_SPAN = 5.0, 3.5
HITS_PER = 10_000


@dataclasses.dataclass(frozen=True)
class HitRule:
    """A molecule is a hit for ``objective`` when its raw property is >= (or <=) ``threshold``."""

    objective: str
    threshold: float

    @property
    def higher_is_better(self) -> bool:
        return self.objective != "sa"

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    def __str__(self) -> str:
        return f"{self.objective} {'>=' if self.higher_is_better else '<='} {self.threshold:g}"


DEFAULT_HITS: dict[str, HitRule] = {
    "qed": HitRule("qed", 0.6),
    "logp": HitRule("logp", 2.7),
    "sa": HitRule("sa", 2.5),
}


def rewarded_objectives(weights: Mapping[str, float]) -> list[str]:
    """The objectives a training reward's ``weights`` steer towards, in ``OBJECTIVES`` order
    (empty for a model trained for validity and variety alone)."""
    return [o for o in OBJECTIVES if weights.get(o, 0.0) > 0]


def parse_hit_rule(text: str) -> HitRule:
    """``"qed=0.65"`` -> ``HitRule("qed", 0.65)``; ValueError naming what is wrong."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in OBJECTIVES:
        raise ValueError(f"expected OBJECTIVE=VALUE with OBJECTIVE one of {list(OBJECTIVES)}, "
                         f"got {text!r}")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"the threshold in {text!r} is not a number") from None
    if threshold != threshold or threshold in (float("inf"), float("-inf")):
        raise ValueError(f"the threshold in {text!r} must be finite")
    return HitRule(name, threshold)


def paper_score(objective: str, raw: float) -> float:
    """The normalized score in [0, 1] of a raw property value (module docstring)."""
    if objective == "qed":
        value = raw
    elif objective == "logp":
        value = (raw - LOGP_LOW) / (LOGP_HIGH - LOGP_LOW)
    elif objective == "sa":
        value = (SA_EASY - raw) / SA_SPAN
    else:
        raise ValueError(f"unknown objective {objective!r}; known: {list(OBJECTIVES)}")
    return min(max(value, 0.0), 1.0)


def objective_metrics(
    samples: Sequence[str | None],
    objectives: Sequence[str] = OBJECTIVES,
    hits: Mapping[str, HitRule] | None = None,
) -> dict[str, float | str]:
    """Per objective, over ``n = len(samples)`` samples (``None``: did not sanitize):

    - ``{objective}_normalized``: mean normalized score, invalid samples counting 0;
    - ``{objective}_valid_mean``: mean raw property of the valid samples, repeats counted (0.0
      when none is valid);
    - ``{objective}_hits``: distinct valid hits per 10,000 samples;
    - ``{objective}_hit_rule``: the rule, e.g. ``"qed >= 0.6"``.
    """
    rules = {**DEFAULT_HITS, **(hits or {})}
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to score")
    # Generated samples repeat: each distinct string is parsed and scored once.
    raw: dict[str, dict[str, float] | None] = {}
    canonical: dict[str, str] = {}
    for s in samples:
        if s is None or s in raw:
            continue
        mol = sanitized_mol(s)
        if mol is None or not is_valid_mol(mol):
            raw[s] = None
            continue
        raw[s] = mol_properties(mol)
        canonical[s] = mol_to_smiles(mol)
    valid = [raw[s] for s in samples if s is not None and raw[s] is not None]
    out: dict[str, float | str] = {}
    for o in objectives:
        values = [v[o] for v in valid]
        rule = rules[o]
        hit_molecules = {canonical[s] for s, v in raw.items() if v is not None and rule.passes(v[o])}
        out[f"{o}_normalized"] = sum(paper_score(o, x) for x in values) / n
        out[f"{o}_valid_mean"] = sum(values) / len(values) if values else 0.0
        out[f"{o}_hits"] = len(hit_molecules) * HITS_PER / n
        out[f"{o}_hit_rule"] = str(rule)
    return out
