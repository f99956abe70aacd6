"""Write generated molecules to .smi, .csv, .sdf or JSON lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from rdkit import Chem
from rdkit.Chem import AllChem

from molgan.chem import to_mol
from molgan.metrics import properties
from molgan.sampling import Sample

OutputFormat = Literal["smi", "csv", "sdf", "jsonl"]
FORMATS: tuple[str, ...] = ("smi", "csv", "sdf", "jsonl")
PROPERTY_COLUMNS = ("qed", "logp", "sa", "mol_weight")


def format_from_path(path: Path) -> OutputFormat:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("smi", "txt"):
        return "smi"
    if suffix in ("csv", "sdf", "jsonl"):
        return suffix  # type: ignore[return-value]
    raise ValueError(f"cannot tell the output format of {path.name!r}: use .smi, .csv, .sdf or .jsonl")


def write_samples(samples: Sequence[Sample], out: TextIO, fmt: OutputFormat) -> int:
    """Write samples; returns how many records were written.

    ``jsonl`` writes one record per raw sample, invalid ones included, so validity can be
    recomputed; ``smi`` and ``csv`` skip graphs that did not sanitize; ``sdf`` writes strictly
    valid molecules with 2D coordinates.
    """
    if fmt == "jsonl":
        for s in samples:
            out.write(json.dumps({"smiles": s.smiles, "valid": s.valid}) + "\n")
        return len(samples)
    kept = [s for s in samples if s.smiles is not None]
    if fmt == "smi":
        out.writelines(f"{s.smiles}\n" for s in kept)
        return len(kept)
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["smiles", "valid", *PROPERTY_COLUMNS])
        for s in kept:
            props = properties(s.smiles) if s.valid else {}
            writer.writerow([s.smiles, s.valid, *(_fmt(props.get(c)) for c in PROPERTY_COLUMNS)])
        return len(kept)
    if fmt == "sdf":
        writer = Chem.SDWriter(out)
        written = 0
        for s in kept:
            if not s.valid:
                continue
            mol = to_mol(s.smiles)
            AllChem.Compute2DCoords(mol)
            mol.SetProp("_Name", s.smiles)
            writer.write(mol)
            written += 1
        writer.close()
        return written
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
