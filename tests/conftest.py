"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from molgan.chem import Vocab
from molgan.data import qm9_path, read_smiles

# The atom labels that featurizing the bundled QM9 file produces, in vocabulary order.
QM9_ATOMS = ("*", "C", "N", "O", "F", "N+", "O-", "C-", "N-")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep dataset caches of the test session out of the user's ~/.cache."""
    path = tmp_path_factory.mktemp("molgan-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLGAN_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def qm9_vocab() -> Vocab:
    return Vocab(atoms=QM9_ATOMS, max_atoms=9)


@pytest.fixture(scope="session")
def qm9_smiles() -> list[str]:
    """The raw SMILES of the bundled QM9 file, in file order."""
    return read_smiles(qm9_path())
