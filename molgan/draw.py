"""Pictures of molecules from SMILES: one SVG, or a PNG grid of samples.

Anything :func:`molgan.chem.to_mol` reads is drawn, fragments included (a bag of fragments is
worth seeing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rdkit import Chem, Geometry
from rdkit.Chem.Draw import rdMolDraw2D

from molgan.chem import to_mol
from molgan.files import atomic_write

__all__ = ["MAX_SIZE", "MIN_SIZE", "grid_png", "smiles_to_svg"]

MIN_SIZE = 50
MAX_SIZE = 1000
_MAX_GRID_SIDE = 16_000  # pixels; keeps a mistaken call from allocating gigabytes
INVALID_LEGEND = "invalid"
_INVALID_COLOUR = (0.6, 0.0, 0.0)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise ValueError(f"{name} must be in [{MIN_SIZE}, {MAX_SIZE}] pixels, got {value}")


def smiles_to_svg(smiles: str, width: int = 250, height: int = 200) -> str:
    """SVG text of one molecule drawn by RDKit.

    Raises ValueError when ``smiles`` does not sanitize or a size is outside [50, 1000].
    """
    _check_size("width", width)
    _check_size("height", height)
    mol = to_mol(smiles)
    if mol is None:
        raise ValueError(f"SMILES does not parse/sanitize: {smiles!r}")
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    drawer.DrawMolecule(rdMolDraw2D.PrepareMolForDrawing(mol))
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def grid_png(
    smiles: Sequence[str | None],
    path: Path,
    *,
    legends: Sequence[str] | None = None,
    per_row: int = 8,
    size: int = 200,
) -> Path:
    """Draw molecules in a grid of ``size`` x ``size`` cells and write it as a PNG at ``path``.

    The image is ``min(per_row, n) * size`` wide and ``ceil(n / per_row) * size`` high. A sample
    that is None or does not sanitize is an empty cell with the legend "invalid" (or
    "<legend> (invalid)" when ``legends`` are given). Without ``legends`` valid cells carry their
    SMILES. The file is written atomically; parent folders are created. Returns ``path``.
    """
    if len(smiles) == 0:
        raise ValueError("grid_png needs at least one SMILES")
    if isinstance(per_row, bool) or not isinstance(per_row, int) or per_row < 1:
        raise ValueError(f"per_row must be an int >= 1, got {per_row!r}")
    _check_size("size", size)
    if legends is not None and len(legends) != len(smiles):
        raise ValueError(f"{len(legends)} legends for {len(smiles)} molecules")
    n_cols = min(per_row, len(smiles))
    n_rows = math.ceil(len(smiles) / per_row)
    if max(n_cols, n_rows) * size > _MAX_GRID_SIDE:
        raise ValueError(
            f"grid of {n_rows} x {n_cols} cells of {size} px exceeds {_MAX_GRID_SIDE} px a side"
        )

    mols: list[Chem.Mol] = []
    labels: list[str] = []
    invalid: dict[int, str] = {}
    for k, s in enumerate(smiles):
        mol = to_mol(s)
        given = None if legends is None else str(legends[k])
        if mol is None:
            mols.append(Chem.Mol())  # drawn as an empty cell
            labels.append("")
            invalid[k] = INVALID_LEGEND if given is None else f"{given} ({INVALID_LEGEND})"
        else:
            mols.append(rdMolDraw2D.PrepareMolForDrawing(mol))
            labels.append(s if given is None else given)

    drawer = rdMolDraw2D.MolDraw2DCairo(n_cols * size, n_rows * size, size, size)
    opts = drawer.drawOptions()
    opts.legendFraction = 0.16
    opts.legendFontSize = max(12, size // 12)
    drawer.DrawMolecules(mols, legends=labels)
    # RDKit draws no legend under an empty molecule: write it where the legend would be.
    drawer.SetOffset(0, 0)
    drawer.SetFontSize(opts.legendFontSize)
    drawer.SetColour(_INVALID_COLOUR)
    for k, text in invalid.items():
        row, col = divmod(k, per_row)
        where = Geometry.Point2D((col + 0.5) * size, (row + 0.92) * size)
        drawer.DrawString(text, where, 0, True)  # 0: centred; True: pixel coordinates
    drawer.FinishDrawing()
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_bytes(drawer.GetDrawingText()))
    return path
