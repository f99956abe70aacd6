"""The installed distribution: one top-level package, and imports that a working directory cannot shadow."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_has_molgan_as_its_only_top_level_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools builds in the source tree, and a build/ folder left from an
    # earlier build would still hold modules that have since been removed.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("molgan", "api", "training"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = (tmp_path / "dist").glob("molgan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"molgan"}
    # The repository folders api/ and training/ are inside it, with their package data.
    assert "molgan/api/app.py" in names
    assert "molgan/api/static/index.html" in names
    assert "molgan/training/trainer.py" in names
    assert "molgan/assets/qm9.safetensors" in names


def test_a_decoy_api_package_in_the_working_directory_does_not_shadow_the_service(tmp_path: Path) -> None:
    decoy = tmp_path / "api"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy api package was imported')\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("raise ImportError('the decoy training')\n")
    # `molgan serve` imports the app factory by this string; build the app and read its page.
    script = (
        "import importlib, sys\n"
        "from fastapi.testclient import TestClient\n"
        "module, name = 'molgan.api.app:create_app'.split(':')\n"
        "app = getattr(importlib.import_module(module), name)()\n"
        "import molgan.training.trainer\n"
        "with TestClient(app) as client:\n"
        "    page = client.get('/')\n"
        "    assert page.status_code == 200 and '<html' in page.text.lower(), page.status_code\n"
        "assert 'api' not in sys.modules and 'training' not in sys.modules\n"
        "print('served')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("served")
