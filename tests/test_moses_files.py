"""The MOSES files are found where the molsets wheel put them, without importing ``moses``."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys

import pytest

from molgan.moses_files import FILES, MosesNotInstalled, moses_file


def test_every_named_file_exists() -> None:
    for name in FILES:
        assert moses_file(name).is_file()


def test_train_file_holds_the_published_split() -> None:
    with gzip.open(moses_file("train"), "rt") as f:
        header = f.readline().strip()
        rows = sum(1 for _ in f)
    assert header == "SMILES"
    assert rows == 1_584_663


def test_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="known: train"):
        moses_file("validation")


def test_locating_does_not_import_moses() -> None:
    code = ("import sys; from molgan.moses_files import moses_file; moses_file('test'); "
            "print('moses' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def not_found(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_found)
    with pytest.raises(MosesNotInstalled, match=re.escape("pip install --no-deps molsets==0.3.1")):
        moses_file("train")
