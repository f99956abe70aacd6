import numpy as np
import pytest
from PIL import Image

from molgan.draw import grid_png, smiles_to_svg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_svg_of_a_molecule():
    svg = smiles_to_svg("c1ccccc1O", width=300, height=180)
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert "width='300px'" in svg and "height='180px'" in svg
    assert "<path" in svg  # bonds were drawn


def test_svg_rejects_bad_input():
    with pytest.raises(ValueError, match="does not parse"):
        smiles_to_svg("C(C)(C)(C)(C)C")
    with pytest.raises(ValueError, match="width"):
        smiles_to_svg("CCO", width=49)
    with pytest.raises(ValueError, match="height"):
        smiles_to_svg("CCO", height=1001)
    with pytest.raises(TypeError):
        smiles_to_svg("CCO", width=True)


def _cells(path, size):
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return img, lambda row, col: img[row * size : (row + 1) * size, col * size : (col + 1) * size]


def test_grid_png_layout_and_invalid_cells(tmp_path):
    smiles = ["CCO", "c1ccccc1", None, "C.C", "xx", "CC#N", "O=C1CCCN1"]
    out = grid_png(smiles, tmp_path / "grid.png", per_row=3, size=120)
    assert out == tmp_path / "grid.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as img:
        assert img.size == (3 * 120, 3 * 120)  # 7 molecules, 3 per row
    img, cell = _cells(out, 120)
    molecule_area = slice(0, 90)  # above the legend strip
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 2), (2, 0)]:  # sanitizing samples
        assert (cell(row, col)[molecule_area] < 200).any(), (row, col)
    for row, col in [(0, 2), (1, 1)]:  # None and "xx": nothing drawn, red "invalid" legend
        assert (cell(row, col)[molecule_area] > 250).all(), (row, col)
        legend = cell(row, col)[90:]
        red = (legend[..., 0] > 100) & (legend[..., 1] < 60) & (legend[..., 2] < 60)
        assert red.sum() > 20, (row, col)
    # Unused cells of the last row stay blank.
    assert (cell(2, 1) > 250).all() and (cell(2, 2) > 250).all()


def test_grid_png_narrow_grid_and_legends(tmp_path):
    out = grid_png(["CCO", "CCN"], tmp_path / "sub" / "dir" / "two.png", legends=["a", "b"])
    with Image.open(out) as img:
        assert img.size == (2 * 200, 200)  # fewer molecules than per_row


def test_grid_png_overwrites_atomically(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old")
    grid_png(["CCO"], path, size=100)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smiles": []}, "at least one"),
        ({"per_row": 0}, "per_row"),
        ({"size": 20}, "size"),
        ({"legends": ["only one"]}, "legends"),
        ({"smiles": ["C"] * 200, "per_row": 1, "size": 100}, "exceeds"),
    ],
)
def test_grid_png_rejects_bad_arguments(tmp_path, kwargs, message):
    args = {"smiles": ["CCO", "CCN"], "path": tmp_path / "g.png", **kwargs}
    with pytest.raises(ValueError, match=message):
        grid_png(**args)
    assert not (tmp_path / "g.png").exists()
