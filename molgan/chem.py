"""Molecular graph <-> RDKit codec.

A molecule is a pair of integer tensors over ``N = vocab.max_atoms`` slots:

* ``atoms`` (N,): index into ``vocab.atoms``; 0 (``"*"``) means "no atom here".
* ``bonds`` (N, N): index into ``vocab.bonds``; symmetric with a zero diagonal. With the
  default ``BOND_TYPES`` the index is the bond order (0 none, 1 single, 2 double, 3 triple).

Two kinds of vocabulary:

* kekulized (``BOND_TYPES``, the default): hydrogens are implicit and aromatic rings are stored
  as alternating single and double bonds, so RDKit recomputes both when a graph is decoded;
* aromatic (``AROMATIC_BOND_TYPES``, :attr:`Vocab.aromatic`): aromatic bonds keep a type of their
  own (index 4, ``AROMATIC_BOND``) and RDKit's sanitization decides on decoding whether the ring
  can be kekulized. An aromatic atom whose hydrogens RDKit's valence model cannot infer (the N
  of pyrrole, ``[nH]``) gets a label that fixes its hydrogen count: ``"NH"``. Every other atom
  keeps implicit hydrogens, so all labels of a kekulized vocabulary mean the same here.

Graphs carry no stereochemistry, therefore every SMILES this module returns is canonical
*non-isomeric* SMILES (:func:`canonical_smiles` and :func:`decode` share that convention, so
comparing their outputs is meaningful).

This module is also the one place that says what a SMILES means: :func:`to_mol` reads one,
:func:`canonical_smiles` names it, and :func:`is_valid` says whether it is *strictly valid*:
RDKit sanitizes it without clean-up repairs AND it is one connected fragment.

Decoding is honest: a graph that RDKit refuses to sanitize decodes to ``None``; no valence
repair or hydrogen fixing happens here. RDKit's sanitization "cleanup" step is skipped for the
same reason (it would turn a pentavalent neutral nitro graph N(=O)=O into [N+](=O)[O-]).
Formal charges come from the atom labels ("N+", "O-"); hydrogens are whatever RDKit's default
valence model gives the atom, except for labels that fix them ("NH": exactly one hydrogen, as
the SMILES ``[nH]`` says). An aromatic bond outside a ring, or an aromatic ring RDKit cannot
kekulize, makes the graph invalid.

Skip reasons raised by :func:`encode` (``EncodeError.reason``): ``unparseable``, ``empty``,
``too_many_atoms``, ``unsupported_element`` (dummy atoms, hydrogens kept as atoms),
``radical``, ``charge`` (|charge| > 3), ``unsupported_atom`` (label not in the vocab),
``multi_fragment``, ``unsupported_bond`` (dative, quadruple, zero-order, ...), ``kekulize``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import torch
from rdkit import Chem, rdBase

ATOM_NONE = 0
BOND_NONE = 0
PAD_LABEL = "*"
BOND_TYPES: tuple[str, ...] = ("none", "single", "double", "triple")
AROMATIC_BOND_TYPES: tuple[str, ...] = (*BOND_TYPES, "aromatic")
AROMATIC_BOND = AROMATIC_BOND_TYPES.index("aromatic")

# Indexed by bond type; RWMol.AddBond flags an AROMATIC bond and both its atoms aromatic.
_RDKIT_BONDS: tuple[Chem.BondType, ...] = (
    Chem.BondType.ZERO,
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)
# Twice the valence each bond type adds to an atom in RDKit's valence check (an aromatic bond
# counts 1.5 there, before the ring is kekulized): the valence pre-check of aromatic
# vocabularies counts in these half units.
_BOND_HALF_VALENCE = np.array([0, 2, 4, 6, 3], dtype=np.uint8)
# RDKit lets an aromatic atom exceed its largest valence by up to 1.5 (it trusts that
# kekulization brings it down): the pre-check's allowance, in half units.
_AROMATIC_EXCESS = 3
# Element, then an optional fixed hydrogen count ("H", "H2", ...), then the charge: "NH+".
_LABEL_RE = re.compile(r"^([A-Z][a-z]?)(H[2-9]?)?(\+{1,3}|-{1,3})?$")
_PTABLE = Chem.GetPeriodicTable()
# Full sanitization minus the "cleanup" steps: those rewrite hypervalent groups (N(=O)=O into
# [N+](=O)[O-], metal bonds into dative ones), i.e. they would repair a graph, not check it.
SANITIZE_OPS = (
    Chem.SanitizeFlags.SANITIZE_ALL
    ^ Chem.SanitizeFlags.SANITIZE_CLEANUP
    ^ Chem.SanitizeFlags.SANITIZE_CLEANUP_ORGANOMETALLICS
)
_SANITIZE_OK = Chem.SanitizeFlags.SANITIZE_NONE
# Labels that come first in every vocabulary, so the common organic atoms keep stable indices.
_PREFERRED_ORDER = ("C", "N", "O", "F")


class EncodeError(ValueError):
    """A molecule that cannot be represented as a graph; ``reason`` is a short snake_case key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def atom_label(atom: Chem.Atom, hydrogens: int = 0) -> str:
    """Vocabulary label of an atom: element symbol, then ``H``/``H2``... when ``hydrogens``
    (a fixed hydrogen count) is given, then one sign per unit of formal charge."""
    charge = atom.GetFormalCharge()
    sign = "+" * charge if charge > 0 else "-" * -charge
    h = "" if hydrogens == 0 else "H" if hydrogens == 1 else f"H{hydrogens}"
    return atom.GetSymbol() + h + sign


class AtomLabel(NamedTuple):
    """What an atom label says: ``"NH+"`` is nitrogen with one hydrogen and charge +1."""

    atomic_number: int
    charge: int
    hydrogens: int
    """Fixed hydrogen count; 0: RDKit's valence model decides (every label without ``H``)."""


def parse_label(label: str) -> AtomLabel:
    """``"N+"`` -> (7, +1, 0), ``"NH"`` -> (7, 0, 1). Raises ValueError on a bad label."""
    m = _LABEL_RE.match(label)
    if m is None:
        raise ValueError(f"invalid atom label {label!r} (expected e.g. 'C', 'N+', 'O-', 'NH')")
    symbol, h, sign = m.group(1), m.group(2) or "", m.group(3) or ""
    try:
        z = _PTABLE.GetAtomicNumber(symbol)
    except RuntimeError:
        z = 0
    if z <= 1:
        raise ValueError(f"invalid atom label {label!r}: unknown or unsupported element")
    charge = len(sign) if sign.startswith("+") else -len(sign)
    hydrogens = 0 if not h else int(h[1:] or 1)
    return AtomLabel(z, charge, hydrogens)


def bond_types(aromatic: bool) -> tuple[str, ...]:
    """The bond vocabulary: ``AROMATIC_BOND_TYPES`` when ``aromatic``, else ``BOND_TYPES``."""
    return AROMATIC_BOND_TYPES if aromatic else BOND_TYPES


@dataclass(frozen=True)
class Vocab:
    """Atom and bond vocabularies plus the graph size ``max_atoms`` (N).

    ``bonds`` is ``BOND_TYPES`` (kekulized) or ``AROMATIC_BOND_TYPES``; labels with a fixed
    hydrogen count (``"NH"``) belong to aromatic vocabularies only, where they are needed.
    """

    atoms: tuple[str, ...]
    max_atoms: int
    bonds: tuple[str, ...] = BOND_TYPES

    def __post_init__(self) -> None:
        atoms = tuple(self.atoms)
        bonds = tuple(self.bonds)
        object.__setattr__(self, "atoms", atoms)
        object.__setattr__(self, "bonds", bonds)
        if not atoms or atoms[0] != PAD_LABEL:
            raise ValueError(f"vocab atoms must start with the padding label {PAD_LABEL!r}")
        if len(atoms) < 2:
            raise ValueError("vocab needs at least one atom type besides padding")
        if len(set(atoms)) != len(atoms):
            raise ValueError(f"vocab atoms contain duplicates: {atoms}")
        if len(atoms) > 256:
            raise ValueError("vocab atoms must fit in uint8 (at most 256 labels)")
        if bonds not in (BOND_TYPES, AROMATIC_BOND_TYPES):
            raise ValueError(f"vocab bonds must be {BOND_TYPES} or {AROMATIC_BOND_TYPES}, "
                             f"got {bonds}")
        for label in atoms[1:]:
            if not isinstance(label, str):
                raise ValueError(f"vocab atom label must be a string, got {label!r}")
            if parse_label(label).hydrogens and bonds != AROMATIC_BOND_TYPES:
                raise ValueError(f"atom label {label!r} fixes a hydrogen count, which only a "
                                 "vocabulary with aromatic bonds uses")
        if isinstance(self.max_atoms, bool) or not isinstance(self.max_atoms, int):
            raise ValueError(f"max_atoms must be an int, got {self.max_atoms!r}")
        if not 1 <= self.max_atoms <= 255:
            raise ValueError(f"max_atoms must be in 1..255, got {self.max_atoms}")

    @property
    def num_atom_types(self) -> int:
        """A: number of atom labels including padding."""
        return len(self.atoms)

    @property
    def num_bond_types(self) -> int:
        """E: number of bond types including "none"."""
        return len(self.bonds)

    @property
    def aromatic(self) -> bool:
        """Whether aromatic bonds are a bond type of their own (else rings are kekulized)."""
        return self.bonds == AROMATIC_BOND_TYPES

    @cached_property
    def atom_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.atoms)}

    @cached_property
    def atomic_numbers(self) -> tuple[int, ...]:
        """Atomic number per atom index (0 for padding)."""
        return (0, *(parse_label(a)[0] for a in self.atoms[1:]))

    @cached_property
    def charges(self) -> tuple[int, ...]:
        """Formal charge per atom index (0 for padding)."""
        return (0, *(parse_label(a)[1] for a in self.atoms[1:]))

    @cached_property
    def hydrogens(self) -> tuple[int, ...]:
        """Fixed hydrogen count per atom index (0: implicit, and for padding)."""
        return (0, *(parse_label(a).hydrogens for a in self.atoms[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {"atoms": list(self.atoms), "max_atoms": self.max_atoms, "bonds": list(self.bonds)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocab:
        if not isinstance(d, Mapping):
            raise ValueError(f"vocab must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"atoms", "max_atoms", "bonds"}
        if unknown:
            raise ValueError(f"unknown vocab keys: {sorted(unknown)}")
        for key in ("atoms", "max_atoms"):
            if key not in d:
                raise ValueError(f"vocab is missing {key!r}")
        atoms = d["atoms"]
        if not isinstance(atoms, list | tuple):
            raise ValueError("vocab 'atoms' must be a list of labels")
        bonds = d.get("bonds", BOND_TYPES)
        if not isinstance(bonds, list | tuple):
            raise ValueError("vocab 'bonds' must be a list of names")
        return cls(atoms=tuple(atoms), max_atoms=d["max_atoms"], bonds=tuple(bonds))


# --------------------------------------------------------------------------- SMILES and validity


def _read(smiles: str | None, repair: bool) -> Chem.Mol | None:
    """Parse and sanitize ``smiles`` (with RDKit's clean-up when ``repair``); None unless that
    succeeds with at least one atom."""
    if smiles is None:
        return None
    if not isinstance(smiles, str):
        raise TypeError(f"expected a SMILES string or None, got {type(smiles).__name__}")
    with rdBase.BlockLogs():  # bad input is expected and reported by the caller
        if repair:
            mol = Chem.MolFromSmiles(smiles)
        else:
            mol = Chem.MolFromSmiles(smiles, sanitize=False)
            if mol is None or Chem.SanitizeMol(mol, SANITIZE_OPS, catchErrors=True) != _SANITIZE_OK:
                return None
            # Hydrogen atoms become H counts, as MolFromSmiles does after sanitizing:
            # "[H]C([H])([H])[H]" is methane, "C". Only a SMILES with an "H" can have any.
            if "H" in smiles and any(atom.GetAtomicNum() == 1 for atom in mol.GetAtoms()):
                mol = Chem.RemoveHs(mol, sanitize=False)
                # RemoveHs drops the ring information that sanitizing computed: redo it.
                if Chem.SanitizeMol(mol, SANITIZE_OPS, catchErrors=True) != _SANITIZE_OK:
                    return None
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def to_mol(smiles: str | None) -> Chem.Mol | None:
    """The molecule a SMILES names, read as RDKit reads it by default; None if it does not.

    RDKit's clean-up is part of that reading: it rewrites hypervalent spellings into
    charge-separated ones (``CN(=O)=O`` is read as ``C[N+](=O)[O-]``; QM9 spells 139 nitro
    groups that way). That suits molecules someone wrote down (datasets, canonical names,
    pictures); a generated sample is judged by :func:`sanitized_mol` instead, which repairs
    nothing. None also for no atoms; TypeError for a non-string.
    """
    return _read(smiles, repair=True)


def sanitized_mol(smiles: str | None) -> Chem.Mol | None:
    """The molecule of a SMILES exactly as written, or None if RDKit will not sanitize it.

    Sanitized like a decoded graph (``SANITIZE_OPS``: no clean-up repairs), so a sample keeps
    the verdict its graph got from :func:`decode`. None also for no atoms; TypeError for a
    non-string.
    """
    return _read(smiles, repair=False)


def mol_to_smiles(mol: Chem.Mol) -> str:
    """Canonical non-isomeric SMILES of a sanitized molecule (the convention of this module)."""
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def canonical_smiles(smiles: str | None) -> str | None:
    """Canonical non-isomeric SMILES of what :func:`to_mol` reads, or None if it reads nothing.

    On a strictly valid SMILES this equals ``mol_to_smiles(sanitized_mol(smiles))``: the
    clean-up only rewrites groups that fail sanitization without it.
    """
    mol = to_mol(smiles)
    return None if mol is None else mol_to_smiles(mol)


def is_valid_mol(mol: Chem.Mol | None) -> bool:
    """Strict validity of a molecule from :func:`sanitized_mol` (None: did not sanitize).

    Strictly valid = sanitizes without repairs, is one connected fragment AND has no radical.
    Fragments are counted on the graph, not by a "." in the SMILES: ``C1.C1`` is one molecule
    (ethane). Radicals sanitize but are not molecules a dataset holds (the encoder refuses them);
    a graph makes one only from an atom with a fixed hydrogen count (an ``NH`` with one bond),
    and a validity reward must not pay for it.
    """
    return (mol is not None and len(Chem.GetMolFrags(mol)) == 1
            and not any(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms()))


def is_valid(smiles: str | None) -> bool:
    """Strict validity of a SMILES (see :func:`is_valid_mol`); TypeError for a non-string."""
    return is_valid_mol(sanitized_mol(smiles))


def is_valid_loose(smiles: str | None) -> bool:
    """Loose validity (the MolGAN paper's): sanitizes without repairs; fragments allowed."""
    return sanitized_mol(smiles) is not None


# --------------------------------------------------------------------------- vocabulary


def vocab_from_counts(counts: Mapping[str, int], max_atoms: int, aromatic: bool = False) -> Vocab:
    """Vocabulary of the atom labels counted in ``counts`` (label -> number of atoms), with the
    bond types :func:`bond_types` gives for ``aromatic``.

    Order: padding, then C, N, O, F when present, then the rest by decreasing count and
    name -- deterministic for given counts.
    """
    if not counts:
        raise ValueError("cannot build a vocabulary from zero atoms")
    first = [label for label in _PREFERRED_ORDER if counts.get(label, 0) > 0]
    rest = sorted((k for k in counts if k not in first), key=lambda k: (-counts[k], k))
    return Vocab(atoms=(PAD_LABEL, *first, *rest), max_atoms=max_atoms, bonds=bond_types(aromatic))


# --------------------------------------------------------------------------- encode


def fixed_hydrogens(mol: Chem.Mol) -> list[int]:
    """Per atom of a sanitized molecule, the hydrogen count an aromatic vocabulary's label must
    fix: the atom's hydrogens where it is aromatic and RDKit's valence model, given only its
    element, charge and aromatic bonds, would give it another number (pyrrole's N: 1, where the
    model gives 0); else 0. Decided on the molecule, not on its spelling: ``[cH]1ccccc1`` has
    none, and the N of ``C1=CNC=C1`` is pyrrole's."""
    counts = [0] * mol.GetNumAtoms()
    hydrogenated = [a.GetIdx() for a in mol.GetAtoms() if a.GetIsAromatic() and a.GetTotalNumHs()]
    if not hydrogenated:
        return counts
    plain = Chem.RWMol(mol)  # the caller's molecule is left untouched
    for i in hydrogenated:
        atom = plain.GetAtomWithIdx(i)
        atom.SetNumExplicitHs(0)
        atom.SetNoImplicit(False)
    plain.UpdatePropertyCache(strict=False)
    for i in hydrogenated:
        total = mol.GetAtomWithIdx(i).GetTotalNumHs()
        if plain.GetAtomWithIdx(i).GetTotalNumHs() != total:
            counts[i] = total
    return counts


def mol_to_graph(
    mol: Chem.Mol, vocab: Vocab, out_atoms: np.ndarray, out_bonds: np.ndarray
) -> None:
    """Write the graph of a sanitized molecule into zeroed (N,) / (N, N) arrays.

    Raises EncodeError for molecules a graph cannot represent faithfully. With a kekulized
    vocabulary, aromatic bonds are kekulized on a copy, so the caller's molecule is left
    untouched; with an aromatic one they become ``AROMATIC_BOND`` and atoms get the labels of
    :func:`fixed_hydrogens`.
    """
    n = mol.GetNumAtoms()
    if n == 0:
        raise EncodeError("empty")
    if n > vocab.max_atoms:
        raise EncodeError("too_many_atoms", f"{n} > {vocab.max_atoms}")
    index = vocab.atom_index
    hydrogens = fixed_hydrogens(mol) if vocab.aromatic else [0] * n
    for i in range(n):
        atom = mol.GetAtomWithIdx(i)
        if atom.GetAtomicNum() <= 1:
            # Dummy atoms and hydrogens kept as heavy atoms (e.g. "[H][H]") have no slot.
            raise EncodeError("unsupported_element", atom.GetSymbol())
        if atom.GetNumRadicalElectrons():
            raise EncodeError("radical", atom_label(atom))
        if abs(atom.GetFormalCharge()) > 3:
            raise EncodeError("charge", atom_label(atom))
        label = atom_label(atom, hydrogens[i])
        k = index.get(label)
        if k is None:
            raise EncodeError("unsupported_atom", label)
        out_atoms[i] = k
    if len(Chem.GetMolFrags(mol)) > 1:
        raise EncodeError("multi_fragment")
    num_bonds = mol.GetNumBonds()
    if num_bonds == 0:
        return
    # force=True: RDKit caches the matrix on the molecule, and copies inherit that cache.
    adj = Chem.GetAdjacencyMatrix(mol, useBO=True, force=True)
    aromatic = adj == 1.5
    if vocab.aromatic:
        # Checked as single bonds below, then given their own type.
        adj = np.where(aromatic, 1.0, adj)
    elif aromatic.any():
        kek = Chem.Mol(mol)
        try:
            Chem.Kekulize(kek, clearAromaticFlags=True)
        except Exception as exc:  # RDKit raises KekulizeException (a ValueError subclass)
            raise EncodeError("kekulize", str(exc)) from exc
        adj = Chem.GetAdjacencyMatrix(kek, useBO=True, force=True)
    orders = adj.astype(np.int64)
    # Dative bonds appear in one triangle only, zero-order/hydrogen bonds as 0, others as
    # non-integers or > 3: all are bonds this graph format cannot hold.
    if (orders != adj).any() or orders.max() > 3 or (orders != orders.T).any() or (
            np.count_nonzero(orders) != 2 * num_bonds):
        raise EncodeError("unsupported_bond")
    if vocab.aromatic:
        orders[aromatic] = AROMATIC_BOND
    out_bonds[:n, :n] = orders


def encode(mol_or_smiles: str | Chem.Mol, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Graph of a molecule: atoms (N,) int64 and bonds (N, N) int64 (symmetric, zero diagonal).

    Raises EncodeError (with ``.reason``) if the molecule cannot be represented.
    """
    if isinstance(mol_or_smiles, str):
        mol = to_mol(mol_or_smiles)
        if mol is None:
            raise EncodeError("unparseable", mol_or_smiles)
    elif isinstance(mol_or_smiles, Chem.Mol):
        mol = mol_or_smiles
    else:
        raise TypeError(f"expected SMILES or RDKit Mol, got {type(mol_or_smiles).__name__}")
    n = vocab.max_atoms
    atoms = np.zeros(n, dtype=np.int64)
    bonds = np.zeros((n, n), dtype=np.int64)
    mol_to_graph(mol, vocab, atoms, bonds)
    return torch.from_numpy(atoms), torch.from_numpy(bonds)


# --------------------------------------------------------------------------- decode


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class _DecodeTables:
    """Per-vocabulary lookup data for decoding."""

    templates: tuple[Chem.Atom | None, ...]  # one prototype atom per atom index
    max_valence: np.ndarray  # (A,) int16: largest total bond order RDKit accepts per label


_TABLES: dict[Vocab, _DecodeTables] = {}
_VALENCE_UNBOUNDED = 32767


def _accepts_valence(z: int, charge: int, valence: int) -> bool:
    mol = Chem.RWMol()
    atom = Chem.Atom(z)
    atom.SetFormalCharge(charge)
    atom.SetNumExplicitHs(valence)
    atom.SetNoImplicit(True)
    mol.AddAtom(atom)
    return Chem.SanitizeMol(mol, SANITIZE_OPS, catchErrors=True) == _SANITIZE_OK


def _tables(vocab: Vocab) -> _DecodeTables:
    """Build (once per vocab) atom prototypes and the valence limits used to skip RDKit.

    The limits are measured by asking RDKit itself, for every total bond order a graph of
    this size can produce, so the shortcut rejects exactly what sanitization would reject.
    A label's fixed hydrogens take their share of its valence.
    """
    tab = _TABLES.get(vocab)
    if tab is not None:
        return tab
    templates: list[Chem.Atom | None] = [None]
    limits = [_VALENCE_UNBOUNDED]
    highest = 3 * (vocab.max_atoms - 1)  # every other atom bonded with a triple bond
    with rdBase.BlockLogs():
        for z, q, h in zip(vocab.atomic_numbers[1:], vocab.charges[1:], vocab.hydrogens[1:],
                           strict=True):
            atom = Chem.Atom(z)
            atom.SetFormalCharge(q)
            if h:
                # Exactly h hydrogens, as in the SMILES [nH]: RDKit adds none of its own.
                atom.SetNumExplicitHs(h)
                atom.SetNoImplicit(True)
            templates.append(atom)
            accepted = [v for v in range(highest + 1) if _accepts_valence(z, q, v + h)]
            limits.append(_VALENCE_UNBOUNDED if accepted and accepted[-1] == highest
                          else (accepted[-1] if accepted else -1))
    tab = _DecodeTables(tuple(templates), np.asarray(limits, dtype=np.int16))
    _TABLES[vocab] = tab
    return tab


def _mol_from_parts(
    atom_ids: list[int], rows: list[int], cols: list[int], vals: list[int],
    templates: Sequence[Chem.Atom | None],
) -> Chem.Mol | None:
    """Sanitized molecule from compact atom ids and bonds (rows[k], cols[k], type vals[k]),
    or None if RDKit will not sanitize it."""
    mol = Chem.RWMol()
    for k in atom_ids:
        mol.AddAtom(templates[k])
    for i, j, b in zip(rows, cols, vals, strict=True):
        mol.AddBond(i, j, _RDKIT_BONDS[b])
    if Chem.SanitizeMol(mol, SANITIZE_OPS, catchErrors=True) != _SANITIZE_OK:
        return None
    return mol


def _over_valent_aromatic(ub: np.ndarray, atoms: np.ndarray, max_valence: np.ndarray
                          ) -> np.ndarray:
    """(B, N) atoms that RDKit's valence check rejects, for bond upper triangles ``ub``
    (B, N, N) of an aromatic vocabulary: it counts an aromatic bond as 1.5 and lets an atom with
    one exceed its largest valence by up to 1.5 (a kekulized ring may bring it down)."""
    half = _BOND_HALF_VALENCE[ub]
    valence2 = half.sum(axis=2, dtype=np.int16) + half.sum(axis=1, dtype=np.int16)
    aromatic = ub == AROMATIC_BOND
    has_aromatic = aromatic.any(axis=2) | aromatic.any(axis=1)
    limit2 = 2 * max_valence[atoms].astype(np.int32) + _AROMATIC_EXCESS * has_aromatic
    return valence2 > limit2


def _validate_graph(atoms: np.ndarray, bonds: np.ndarray, vocab: Vocab) -> None:
    n = atoms.shape[-1]
    if bonds.shape[-2:] != (n, n):
        raise ValueError(f"bonds shape {bonds.shape} does not match atoms shape {atoms.shape}")
    for name, x, hi in (("atom", atoms, vocab.num_atom_types), ("bond", bonds,
                                                                 vocab.num_bond_types)):
        if x.dtype.kind not in "iub":
            raise ValueError(f"{name} indices must be integers, got dtype {x.dtype}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= hi):
            raise ValueError(f"{name} index out of range 0..{hi - 1}")


def decode(
    atoms: torch.Tensor | np.ndarray, bonds: torch.Tensor | np.ndarray, vocab: Vocab
) -> str | None:
    """Canonical SMILES of one graph (atoms (N,), bonds (N, N)), or None if not a molecule.

    Absent atoms (index 0) are dropped together with every bond touching them; only the upper
    triangle of ``bonds`` is read. The result may contain "." for disconnected graphs.
    This is the plain reference path; use :func:`decode_batch` for many graphs.
    """
    a = _as_numpy(atoms)
    b = _as_numpy(bonds)
    if a.ndim != 1 or b.ndim != 2:
        raise ValueError(f"decode expects atoms (N,) and bonds (N, N), got {a.shape}, {b.shape}")
    _validate_graph(a, b, vocab)
    present = np.flatnonzero(a != ATOM_NONE)
    if present.size == 0:
        return None
    sub = np.triu(b[np.ix_(present, present)].astype(np.int64), k=1)
    rows, cols = np.nonzero(sub)
    with rdBase.BlockLogs():
        mol = _mol_from_parts(a[present].tolist(), rows.tolist(), cols.tolist(),
                              sub[rows, cols].tolist(), _tables(vocab).templates)
    return None if mol is None else mol_to_smiles(mol)


def decode_batch(
    atoms: torch.Tensor | np.ndarray,
    bonds: torch.Tensor | np.ndarray,
    vocab: Vocab,
    *,
    memo: dict[bytes, tuple[str | None, bool]] | None = None,
) -> list[str | None]:
    """Decode a batch: atoms (B, N), bonds (B, N, N) -> B canonical SMILES or None.

    Same result as ``[decode(atoms[i], bonds[i], vocab) ...]``, faster; see
    :func:`decode_and_validate`, which also says which graphs are strictly valid.
    """
    return decode_and_validate(atoms, bonds, vocab, memo=memo)[0]


def decode_and_validate(
    atoms: torch.Tensor | np.ndarray,
    bonds: torch.Tensor | np.ndarray,
    vocab: Vocab,
    *,
    memo: dict[bytes, tuple[str | None, bool]] | None = None,
) -> tuple[list[str | None], list[bool]]:
    """Decode a batch: atoms (B, N), bonds (B, N, N) -> B canonical SMILES (or None) and B
    strict validity flags (:func:`is_valid_mol` of each decoded molecule).

    The SMILES are those of :func:`decode`, found faster: bonds are extracted for the whole
    batch with numpy, graphs with an atom over its valence limit are rejected without RDKit,
    and identical graphs (after dropping bonds to absent atoms) are decoded once per call.
    Validity is read off the molecule the decoder built, so a sample is never parsed twice.
    ``memo`` maps graph bytes to results; pass the same dict across calls to make repeated
    graphs free (it grows without bound: the caller owns its lifetime).
    """
    a = _as_numpy(atoms)
    b = _as_numpy(bonds)
    if a.ndim != 2 or b.ndim != 3 or b.shape[0] != a.shape[0]:
        raise ValueError(f"batch decoding expects atoms (B, N) and bonds (B, N, N), got {a.shape}, {b.shape}")
    _validate_graph(a, b, vocab)
    count, n = a.shape
    smiles: list[str | None] = [None] * count
    valid = [False] * count
    if count == 0:
        return smiles, valid
    tab = _tables(vocab)
    a8 = a.astype(np.uint8, copy=False)
    present = a8 != ATOM_NONE
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    keep = present[:, :, None] & present[:, None, :] & upper
    ub = np.where(keep, b, 0).astype(np.uint8)  # (B, N, N) upper triangle between atoms
    if vocab.aromatic:
        over = _over_valent_aromatic(ub, a8, tab.max_valence)
    else:  # bond types are bond orders
        valence = ub.sum(axis=2, dtype=np.int16) + ub.sum(axis=1, dtype=np.int16)  # (B, N)
        over = valence > tab.max_valence[a8]
    feasible = present.any(axis=1) & ~over.any(axis=1)

    cand = np.flatnonzero(feasible)
    if cand.size == 0:
        return smiles, valid
    memo = {} if memo is None else memo
    keys = np.concatenate([a8[cand], ub[cand].reshape(cand.size, -1)], axis=1)
    todo: list[int] = []  # batch rows to decode, one per distinct unseen graph
    todo_keys: list[bytes] = []
    pending: dict[bytes, list[int]] = {}
    for r, key in zip(cand.tolist(), map(bytes, keys), strict=True):
        if key in memo:
            smiles[r], valid[r] = memo[key]
        elif key in pending:
            pending[key].append(r)
        else:
            pending[key] = [r]
            todo.append(r)
            todo_keys.append(key)
    if not todo:
        return smiles, valid

    sel = np.asarray(todo)
    sub_present = present[sel]
    pos = np.cumsum(sub_present, axis=1) - 1  # compact index of each present atom
    g, i, j = np.nonzero(ub[sel])
    vals = ub[sel][g, i, j].tolist()
    ci = pos[g, i].tolist()
    cj = pos[g, j].tolist()
    bounds = np.searchsorted(g, np.arange(sel.size + 1)).tolist()
    atom_rows = a8[sel].tolist()
    templates = tab.templates
    with rdBase.BlockLogs():
        for t, key in enumerate(todo_keys):
            lo, hi = bounds[t], bounds[t + 1]
            mol = _mol_from_parts([k for k in atom_rows[t] if k], ci[lo:hi], cj[lo:hi],
                                  vals[lo:hi], templates)
            result = (None if mol is None else mol_to_smiles(mol), is_valid_mol(mol))
            memo[key] = result
            for r in pending[key]:
                smiles[r], valid[r] = result
    return smiles, valid
