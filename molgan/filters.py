"""MOSES's construction filters for one molecule: what the MOSES data set was built to allow.

A chemistry-level rule (no benchmark machinery): the ``filters`` reward component and the MOSES
metrics' Filters share it. The MCF and PAINS alerts are read from the molsets wheel's files.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

from rdkit import Chem, rdBase

from molgan.moses_files import moses_file

FILTER_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MAX_RING_SIZE = 7  # a ring of 8 or more atoms fails the filters


def _read_alerts(path: Path, header: bool) -> list[Chem.Mol]:
    # mcf.csv has a "names,smarts" header; wehi_pains.csv has none and puts the SMARTS first.
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    patterns = [row[1] for row in rows[1:]] if header else [row[0] for row in rows]
    alerts = [Chem.MolFromSmarts(p.strip()) for p in patterns]
    if any(a is None for a in alerts):
        raise ValueError(f"{path.name}: a structural alert does not parse as SMARTS")
    return alerts


@functools.cache
def _alerts() -> list[Chem.Mol]:
    return _read_alerts(moses_file("mcf"), header=True) + _read_alerts(moses_file("pains"),
                                                                       header=False)


def passes_filters(mol: Chem.Mol) -> bool:
    """MOSES's Filters for one molecule: no ring of 8+ atoms, no formal charge, only C, N, S, O,
    F, Cl, Br, H, no MCF or PAINS alert (matched with explicit hydrogens), and its SMILES reads
    back."""
    if any(len(ring) > MAX_RING_SIZE for ring in mol.GetRingInfo().AtomRings()):
        return False
    atoms = list(mol.GetAtoms())
    if any(a.GetFormalCharge() != 0 or a.GetSymbol() not in FILTER_ATOMS for a in atoms):
        return False
    with_h = Chem.AddHs(mol)
    if any(with_h.HasSubstructMatch(alert) for alert in _alerts()):
        return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    with rdBase.BlockLogs():
        return bool(smiles) and Chem.MolFromSmiles(smiles) is not None
