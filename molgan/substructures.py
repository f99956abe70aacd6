"""Substructure statistics of a set of molecules, and how two sets differ in them.

FCD says *how far* generated molecules are from a dataset; these statistics say *where*. A
profile counts, over the valid molecules of a set (repeats included, as FCD sees them):

- ring sizes: molecules with at least one ring of each size (RDKit's smallest set of smallest
  rings), and molecules with no ring;
- bond types: bonds by the elements at their ends and their order, written as in SMILES
  (``C-C``, ``C=O``, ``C#N``, ``C:N`` aromatic, ``N-N``), lighter element first;
- atom types: heavy atoms by element and formal charge (``C``, ``N``, ``N+``);
- heavy-atom counts: molecules by their number of heavy atoms;
- ring systems: rings that share at least one atom (fused, spiro and bridged rings) form one
  system, written as the canonical SMILES of its atoms and the bonds between them (``C1CN1``
  for an aziridine, ``C12CC1C2`` for a bicyclobutane cage); molecules holding each system.

Nothing here knows a dataset: elements, ring sizes and systems are whatever the molecules hold,
so the same code describes QM9 and drug-like sets. A SMILES that does not give one valid
molecule (:func:`molgan.chem.is_valid`: sanitizes without repairs, one fragment) is skipped and
counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Sequence

from rdkit import Chem, rdBase

from molgan.chem import atom_label, is_valid_mol, sanitized_mol

__all__ = [
    "GROUPS",
    "Comparison",
    "RingSystemRow",
    "SubstructureProfile",
    "bond_label",
    "compare",
    "profile",
    "ring_system_extremes",
    "ring_systems",
]

_BOND_SYMBOLS = {
    Chem.BondType.SINGLE: "-",
    Chem.BondType.DOUBLE: "=",
    Chem.BondType.TRIPLE: "#",
    Chem.BondType.AROMATIC: ":",
}

# The feature groups of a comparison, in the order tables and pictures show them.
GROUPS = ("ring size", "bond type", "atom type", "heavy atoms")
# Ring-size features: molecules without a ring, and with a ring of k atoms ("3-ring").
NO_RING, RING_SUFFIX = "no ring", "-ring"


@dataclasses.dataclass(frozen=True)
class SubstructureProfile:
    """Counts over the valid molecules of one set; see the module docstring.

    Ring sizes, heavy-atom counts and ring systems count molecules (a molecule with two
    aziridines counts once for ``C1CN1``); bond and atom types count bonds and atoms.
    """

    molecules: int
    skipped: int
    atoms: int
    bonds: int
    acyclic: int
    ring_sizes: Counter[int]
    bond_types: Counter[str]
    atom_types: Counter[str]
    heavy_atoms: Counter[int]
    ring_systems: Counter[str]

    def shares(self) -> dict[str, dict[str, float]]:
        """Each group's features as shares of their denominator: ring sizes and heavy-atom
        counts of the molecules, bond types of all bonds, atom types of all heavy atoms."""
        rings = {NO_RING: _ratio(self.acyclic, self.molecules)}
        rings |= {f"{k}{RING_SUFFIX}": _ratio(v, self.molecules) for k, v in sorted(self.ring_sizes.items())}
        return {
            "ring size": rings,
            "bond type": {k: _ratio(v, self.bonds) for k, v in self.bond_types.items()},
            "atom type": {k: _ratio(v, self.atoms) for k, v in self.atom_types.items()},
            "heavy atoms": {
                str(k): _ratio(v, self.molecules) for k, v in sorted(self.heavy_atoms.items())
            },
        }


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def bond_label(bond: Chem.Bond) -> str:
    """``C-N``, ``C=O``, ``C#N`` ...: the two elements, lighter first, joined by the bond's SMILES
    symbol (``:`` aromatic, ``~`` any other kind)."""
    ends = sorted(
        (bond.GetBeginAtom(), bond.GetEndAtom()), key=lambda a: (a.GetAtomicNum(), a.GetSymbol())
    )
    symbol = _BOND_SYMBOLS.get(bond.GetBondType(), "~")
    return f"{ends[0].GetSymbol()}{symbol}{ends[1].GetSymbol()}"


def _standalone_smiles(mol: Chem.Mol, atoms: set[int]) -> str:
    """Canonical SMILES of the atoms ``atoms`` of ``mol`` and the bonds between them, as a
    molecule of its own: cut substituents become hydrogens.

    The fragment is rebuilt atom by atom because RDKit's fragment SMILES ranks atoms with
    invariants of the whole molecule, which would spell one ring two ways in two molecules.
    """
    fragment = Chem.RWMol()
    index = {}
    for i in sorted(atoms):
        atom = mol.GetAtomWithIdx(i)
        copy = Chem.Atom(atom.GetAtomicNum())
        copy.SetFormalCharge(atom.GetFormalCharge())
        copy.SetIsAromatic(atom.GetIsAromatic())
        inside = sum(1 for n in atom.GetNeighbors() if n.GetIdx() in atoms)
        if atom.GetIsAromatic() and atom.GetAtomicNum() != 6 and inside == 2 and atom.GetTotalDegree() == 3:
            # A pyrrole-type N keeps its hydrogen (or gets one in place of its substituent):
            # without it the aromatic ring could not be written down.
            copy.SetNumExplicitHs(1)
        index[i] = fragment.AddAtom(copy)
    for bond in mol.GetBonds():
        begin, end = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if begin in atoms and end in atoms:
            fragment.AddBond(index[begin], index[end], bond.GetBondType())
            fragment.GetBondBetweenAtoms(index[begin], index[end]).SetIsAromatic(bond.GetIsAromatic())
    standalone = fragment.GetMol()
    with rdBase.BlockLogs():  # a failure is expected and handled below
        failed = Chem.SanitizeMol(standalone, catchErrors=True) != Chem.SanitizeFlags.SANITIZE_NONE
    if failed:
        # A ring aromatic only with its substituents (a pyridone's ring without the C=O): keep
        # the flags as they were, unsanitized.
        standalone = fragment.GetMol()
        standalone.UpdatePropertyCache(strict=False)
    return Chem.MolToSmiles(standalone, isomericSmiles=False)


def ring_systems(mol: Chem.Mol) -> list[str]:
    """The ring systems of a sanitized molecule as canonical SMILES, one per system.

    A system is the union of rings that share atoms; its SMILES holds its atoms and the bonds
    between them, with ring bond orders and aromaticity kept and substituents replaced by
    hydrogens, so a ring is spelled the same whatever it carries.
    """
    systems: list[set[int]] = []
    for ring in mol.GetRingInfo().AtomRings():
        merged = set(ring)
        # A ring joins every system it touches; those systems become one.
        for system in [s for s in systems if s & merged]:
            systems.remove(system)
            merged |= system
        systems.append(merged)
    return sorted(_standalone_smiles(mol, system) for system in systems)


@dataclasses.dataclass(frozen=True)
class _MoleculeCounts:
    atoms: Counter[str]
    bonds: Counter[str]
    ring_sizes: frozenset[int]
    systems: frozenset[str]


def _count(mol: Chem.Mol) -> _MoleculeCounts:
    return _MoleculeCounts(
        atoms=Counter(atom_label(a) for a in mol.GetAtoms()),
        bonds=Counter(bond_label(b) for b in mol.GetBonds()),
        ring_sizes=frozenset(len(r) for r in mol.GetRingInfo().AtomRings()),
        systems=frozenset(ring_systems(mol)),
    )


def profile(smiles: Iterable[str | None]) -> SubstructureProfile:
    """The substructure counts of the valid molecules among ``smiles`` (repeats count each
    time; ``None`` and SMILES that are not one valid molecule are skipped and counted)."""
    # Generated sets repeat molecules: each distinct string is read once.
    seen: dict[str, _MoleculeCounts | None] = {}
    molecules = skipped = acyclic = 0
    atom_types: Counter[str] = Counter()
    bond_types: Counter[str] = Counter()
    ring_sizes: Counter[int] = Counter()
    heavy_atoms: Counter[int] = Counter()
    systems: Counter[str] = Counter()
    for s in smiles:
        if s is None:
            skipped += 1
            continue
        if s not in seen:
            mol = sanitized_mol(s)
            seen[s] = _count(mol) if is_valid_mol(mol) else None
        counts = seen[s]
        if counts is None:
            skipped += 1
            continue
        molecules += 1
        atom_types.update(counts.atoms)
        bond_types.update(counts.bonds)
        ring_sizes.update(counts.ring_sizes)
        heavy_atoms[counts.atoms.total()] += 1
        systems.update(counts.systems)
        acyclic += not counts.ring_sizes
    return SubstructureProfile(
        molecules=molecules,
        skipped=skipped,
        atoms=atom_types.total(),
        bonds=bond_types.total(),
        acyclic=acyclic,
        ring_sizes=ring_sizes,
        bond_types=bond_types,
        atom_types=atom_types,
        heavy_atoms=heavy_atoms,
        ring_systems=systems,
    )


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One feature's share in the reference and in each sample set.

    ``ratios`` are sample share / reference share (``inf`` where the reference has none).
    """

    group: str
    feature: str
    reference: float
    samples: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(
            s / self.reference if self.reference else (math.inf if s else 1.0) for s in self.samples
        )


def _feature_order(group: str, features: set[str], reference: dict[str, float]) -> list[str]:
    if group in ("bond type", "atom type"):
        # Most common in the reference first: the rows a reader looks for come first.
        return sorted(features, key=lambda f: (-reference.get(f, 0.0), f))
    if group == "ring size":
        return sorted(features, key=lambda f: 0 if f == NO_RING else int(f.removesuffix(RING_SUFFIX)))
    return sorted(features, key=int)


def compare(
    reference: SubstructureProfile, samples: Sequence[SubstructureProfile]
) -> list[Comparison]:
    """Every feature of :meth:`SubstructureProfile.shares` present in any set, by group."""
    ref_shares = reference.shares()
    sample_shares = [p.shares() for p in samples]
    rows = []
    for group in GROUPS:
        ref = ref_shares[group]
        features = set(ref).union(*(s[group] for s in sample_shares))
        for feature in _feature_order(group, features, ref):
            rows.append(
                Comparison(
                    group=group,
                    feature=feature,
                    reference=ref.get(feature, 0.0),
                    samples=tuple(s[group].get(feature, 0.0) for s in sample_shares),
                )
            )
    return rows


@dataclasses.dataclass(frozen=True)
class RingSystemRow:
    """A ring system's molecule counts in the samples and the reference, and the ratio of their
    smoothed frequencies (> 1: more common in the samples)."""

    system: str
    sample_count: int
    reference_count: int
    ratio: float


def ring_system_extremes(
    samples: SubstructureProfile,
    reference: SubstructureProfile,
    *,
    top: int = 10,
    pseudocount: float = 1.0,
) -> tuple[list[RingSystemRow], list[RingSystemRow]]:
    """(most over-represented, most under-represented) ring systems of ``samples``.

    A system's frequency is ``(count + pseudocount) / (molecules + pseudocount)`` on each side.
    The pseudocount keeps a system seen once on one side and never on the other from topping the
    list: a ratio needs support to be large.
    """
    if pseudocount <= 0:
        raise ValueError(f"pseudocount must be > 0, got {pseudocount}")

    def frequency(count: int, molecules: int) -> float:
        return (count + pseudocount) / (molecules + pseudocount)

    rows = [
        RingSystemRow(
            system=system,
            sample_count=samples.ring_systems[system],
            reference_count=reference.ring_systems[system],
            ratio=frequency(samples.ring_systems[system], samples.molecules)
            / frequency(reference.ring_systems[system], reference.molecules),
        )
        for system in set(samples.ring_systems) | set(reference.ring_systems)
    ]
    over = sorted(rows, key=lambda r: (-r.ratio, -r.sample_count, r.system))
    under = sorted(rows, key=lambda r: (r.ratio, -r.reference_count, r.system))
    return [r for r in over if r.ratio > 1][:top], [r for r in under if r.ratio < 1][:top]
