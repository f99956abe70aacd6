"""Where the MOSES benchmark's files are: the data and statistics of the ``molsets`` 0.3.1 wheel.

MOSES (Polykovskiy et al., 2020, MIT licence) ships its splits, the FCD statistics of its test
sets and the structural-alert lists inside its PyPI wheel. molgan reads those files from where
pip put them and never imports the ``moses`` package itself: its ``__init__`` pulls in pandas,
fcd_torch and its baseline models, none of which reading a CSV needs. Install it without its
dependencies (one of them, pomegranate 0.12, no longer builds)::

    pip install --no-deps molsets==0.3.1
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

MOSES_VERSION = "0.3.1"
INSTALL_HINT = f"pip install --no-deps molsets=={MOSES_VERSION}"

# Name -> path inside the ``moses`` package.
FILES: dict[str, str] = {
    "train": "dataset/data/train.csv.gz",
    "test": "dataset/data/test.csv.gz",
    "test_scaffolds": "dataset/data/test_scaffolds.csv.gz",
    "test_stats": "dataset/data/test_stats.npz",
    "test_scaffolds_stats": "dataset/data/test_scaffolds_stats.npz",
    "mcf": "metrics/mcf.csv",
    "pains": "metrics/wehi_pains.csv",
}


class MosesNotInstalled(FileNotFoundError):
    """The ``molsets`` wheel (or the wanted version of it) is not installed."""


def moses_dir() -> Path:
    """The installed ``moses`` package folder (located without importing the package)."""
    try:
        version = importlib.metadata.version("molsets")
    except importlib.metadata.PackageNotFoundError:
        raise MosesNotInstalled(f"the MOSES data is not installed; run: {INSTALL_HINT}") from None
    if version != MOSES_VERSION:
        raise MosesNotInstalled(
            f"molsets {version} is installed, molgan reads the files of {MOSES_VERSION}; "
            f"run: {INSTALL_HINT}")
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise MosesNotInstalled(f"molsets is installed but its 'moses' folder is missing; "
                                f"run: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def moses_file(name: str) -> Path:
    """The path of one MOSES file by its name in :data:`FILES` (``train``, ``test``, ...)."""
    if name not in FILES:
        raise KeyError(f"unknown MOSES file {name!r}; known: {', '.join(FILES)}")
    path = moses_dir() / FILES[name]
    if not path.is_file():
        raise MosesNotInstalled(f"MOSES file {FILES[name]} is missing from the installed "
                                f"molsets; run: {INSTALL_HINT}")
    return path
