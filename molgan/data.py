"""Molecule datasets: reading SMILES files, featurizing them into graphs, caching, QM9 and MOSES.

Featurization never fails on a bad record: every skipped molecule is counted under a short
reason in a :class:`SkipReport`. Featurized tensors are cached on disk (safetensors + JSON
metadata, never pickle) keyed by the input file's bytes and the settings.

Graphs are stored compactly: atoms ``(M, N)`` uint8 and the upper triangle of each symmetric
bond matrix, ``(M, P)`` uint8 with ``P = N (N - 1) / 2`` (pairs ``i < j`` in ``triu_indices``
order). For MOSES (N = 27) that is 351 bytes of bonds per molecule instead of 729; the full
``(B, N, N)`` bond matrices are built for one batch at a time (:meth:`MolDataset.graphs`).
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase

from molgan.chem import (
    PAD_LABEL,
    EncodeError,
    Vocab,
    bond_types,
    decode_batch,
    mol_to_graph,
    mol_to_smiles,
    to_mol,
    vocab_from_counts,
)
from molgan.config import DataConfig
from molgan.files import atomic_write

log = logging.getLogger(__name__)

# Bump whenever featurization or the cache layout changes: old cache entries are then ignored.
# 2: bonds stored as upper-triangle pairs (M, P) instead of full matrices (M, N, N).
FORMAT_VERSION = 2
QM9_FILENAME = "qm9.smi.gz"
# MOSES molecules have at most 27 heavy atoms (Polykovskiy et al. 2020).
MOSES_MAX_ATOMS = 27
SMILES_SUFFIXES = (".smi", ".txt")
TABLE_SUFFIXES = (".csv", ".tsv")
SDF_SUFFIXES = (".sdf",)
SUPPORTED_SUFFIXES = SMILES_SUFFIXES + TABLE_SUFFIXES + SDF_SUFFIXES
# Below this many molecules a worker pool costs more than it saves.
_PARALLEL_MIN = 20_000
_CHUNK = 4_096


@dataclass
class SkipReport:
    """How many records were read, kept, and skipped (by reason)."""

    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        total = sum(self.skipped.values())
        text = f"read {self.read}, kept {self.kept}, skipped {total}"
        if total:
            parts = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
            text += " (" + ", ".join(f"{k} {v}" for k, v in parts) + ")"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept, "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkipReport:
        return cls(read=int(d["read"]), kept=int(d["kept"]),
                   skipped={str(k): int(v) for k, v in d["skipped"].items()})


# --------------------------------------------------------------------------- reading files


def _base_suffix(path: Path) -> tuple[str, bool]:
    """(".smi", True) for "x.smi.gz"."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), gz


class DatasetError(ValueError):
    """A molecule file that cannot be read as what its name says (the message names the file)."""


class MissingColumn(DatasetError):
    """A table without the SMILES column asked for; ``hint`` says how to choose another, in the
    words of the interface at hand (``smiles_column=`` here, ``--smiles-column`` on the command
    line, ``data.smiles_column`` in a config)."""

    def __init__(self, problem: str, hint: str = "pass smiles_column= to choose one") -> None:
        super().__init__(f"{problem}; {hint}")
        self.problem = problem

    def with_hint(self, hint: str) -> MissingColumn:
        return MissingColumn(self.problem, hint)


def _open_text(path: Path, gz: bool) -> io.TextIOBase:
    # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name.
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _check_path(path: str | Path) -> tuple[Path, str, bool]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"molecule file not found: {path}")
    suffix, gz = _base_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"unsupported molecule file {path.name!r}: expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)} (optionally .gz)"
        )
    return path, suffix, gz


def _read_smiles_lines(f: io.TextIOBase) -> Iterator[str]:
    first = True
    for line in f:
        token = line.split(maxsplit=1)[0] if line.strip() else ""
        if not token or token.startswith("#"):
            continue
        if first and token.lower() == "smiles":
            first = False
            continue
        first = False
        yield token


def _read_table(f: io.TextIOBase, delimiter: str, smiles_column: str | None,
                name: str) -> Iterator[str]:
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    if smiles_column is not None:
        candidates = [smiles_column]
    else:
        candidates = [h for h in header if h.lower() == "smiles"]
    col = next((header.index(c) for c in candidates if c in header), None)
    if col is None:
        wanted = repr(smiles_column) if smiles_column else "'smiles'"
        raise MissingColumn(f"{name}: no column {wanted} among columns {header}")
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        # A short row yields "" and is counted as unparseable rather than dropped silently.
        yield row[col].strip() if col < len(row) else ""


def _read_sdf(path: Path, gz: bool) -> Iterator[str]:
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh, rdBase.BlockLogs():
        for mol in Chem.ForwardSDMolSupplier(fh):
            # A record RDKit cannot read becomes "" and is counted as unparseable later.
            yield "" if mol is None else Chem.MolToSmiles(mol)


def read_smiles(path: str | Path, smiles_column: str | None = None,
                limit: int | None = None) -> list[str]:
    """Raw SMILES strings from a .smi/.txt, .csv/.tsv or .sdf file, each optionally gzipped.

    * .smi/.txt: first whitespace-separated token per line; blank lines, ``#`` comments and
      an optional ``smiles`` header line are skipped.
    * .csv/.tsv: the column named ``smiles`` (any case) or ``smiles_column``.
    * .sdf: each record converted with RDKit; unreadable records yield ``""``.

    ``limit``: read only the first ``limit`` records (the rest of the file is never read).
    """
    path, suffix, gz = _check_path(path)
    try:
        if suffix in SDF_SUFFIXES:
            return list(islice(_read_sdf(path, gz), limit))
        with _open_text(path, gz) as f:
            if suffix in TABLE_SUFFIXES:
                delim = "\t" if suffix == ".tsv" else ","
                return list(islice(_read_table(f, delim, smiles_column, path.name), limit))
            return list(islice(_read_smiles_lines(f), limit))
    except (gzip.BadGzipFile, EOFError, zlib.error, UnicodeDecodeError, SystemError) as exc:
        # RDKit's SDF reader hands on what the stream raised as the cause of a SystemError.
        cause = exc.__cause__ if isinstance(exc, SystemError) else exc
        if isinstance(cause, gzip.BadGzipFile):
            raise DatasetError(f"{path}: not a gzip file, as its name says ({cause})") from None
        if isinstance(cause, (EOFError, zlib.error)):
            raise DatasetError(f"{path}: a damaged or truncated gzip file ({cause})") from None
        if isinstance(cause, UnicodeDecodeError):
            raise DatasetError(f"{path}: not UTF-8 text (byte {cause.start}: {cause.reason})") from None
        raise


def dataset_file(path: str | Path | None) -> tuple[Path, str]:
    """The file a ``data.path`` means and the dataset's short name (its ``source``).

    ``None`` or ``"qm9"``: the bundled QM9 file. ``"moses"``: the training split of MOSES in
    the installed molsets wheel (:func:`molgan.moses_files.moses_file`; raises
    :class:`~molgan.moses_files.MosesNotInstalled`, a FileNotFoundError that names the install
    command, when it is missing). Anything else is a file path, named by its file name (no
    molecule file lacks a suffix, so the two names never hide a file).
    """
    if path is None or str(path) == "qm9":
        return qm9_path(), "qm9"
    if str(path) == "moses":
        from molgan.moses_files import moses_file

        return moses_file("train"), "moses"
    return Path(path), Path(path).name


# --------------------------------------------------------------------------- compact bonds


def num_pairs(n: int) -> int:
    """P: atom pairs i < j of a graph with N slots, N (N - 1) / 2."""
    return n * (n - 1) // 2


def pack_bonds(bonds: np.ndarray) -> np.ndarray:
    """Upper triangles (M, P) of symmetric bond matrices (M, N, N), pairs in ``triu_indices`` order.

    The diagonal and lower triangle are dropped: a graph's bond matrix is symmetric with a zero
    diagonal, so :func:`unpack_bonds` rebuilds it exactly.
    """
    n = bonds.shape[-1]
    rows, cols = np.triu_indices(n, k=1)
    return np.ascontiguousarray(bonds[:, rows, cols])


def unpack_bonds(pairs: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric bond matrices (B, N, N) with a zero diagonal from upper triangles (B, P).

    Same dtype and device as ``pairs``; the inverse of :func:`pack_bonds`.
    """
    if pairs.ndim != 2 or pairs.shape[1] != num_pairs(n):
        raise ValueError(f"bond pairs must be (B, {num_pairs(n)}) for N={n}, got {tuple(pairs.shape)}")
    rows, cols = torch.triu_indices(n, n, 1, device=pairs.device)
    bonds = pairs.new_zeros((pairs.shape[0], n, n))
    bonds[:, rows, cols] = pairs
    bonds[:, cols, rows] = pairs
    return bonds


# --------------------------------------------------------------------------- featurizing


@dataclass
class _Chunk:
    """Featurized slice of the input; atom ids index ``labels`` (local to the chunk) + 1."""

    atoms: np.ndarray  # (K, N) uint8
    pairs: np.ndarray  # (K, P) uint8, see pack_bonds
    smiles: list[str]
    labels: list[str]
    skipped: Counter[str]


def _featurize_chunk(smiles: Sequence[str], max_atoms: int,
                     fixed_labels: Sequence[str] | None, aromatic: bool) -> _Chunk:
    """Featurize SMILES with a chunk-local label table (grown on the fly unless fixed)."""
    table = _LabelTable(max_atoms, fixed_labels, aromatic)
    n = max_atoms
    atoms = np.zeros((len(smiles), n), dtype=np.uint8)
    bonds = np.zeros((len(smiles), n, n), dtype=np.uint8)
    canon: list[str] = []
    skipped: Counter[str] = Counter()
    k = 0
    with rdBase.BlockLogs():  # skipped molecules are counted; RDKit's messages are noise
        for s in smiles:
            mol = to_mol(s)
            if mol is None:
                skipped["unparseable"] += 1
                continue
            try:
                mol_to_graph(mol, table, atoms[k], bonds[k])  # type: ignore[arg-type]
            except EncodeError as exc:
                skipped[exc.reason] += 1
                atoms[k] = 0
                bonds[k] = 0
                continue
            canon.append(mol_to_smiles(mol))
            k += 1
    atoms, bonds = atoms[:k], bonds[:k]
    if k == 0:
        return _Chunk(atoms, pack_bonds(bonds), [], table.labels[1:], skipped)
    # Keep only graphs that decode back to their molecule (rejects e.g. unusual H counts).
    decoded = decode_batch(atoms, bonds, Vocab(tuple(table.labels), max_atoms,
                                               bond_types(aromatic)))
    ok = [i for i, (d, c) in enumerate(zip(decoded, canon, strict=True)) if d == c]
    if len(ok) < k:
        skipped["roundtrip_mismatch"] += k - len(ok)
        atoms, bonds, canon = atoms[ok], bonds[ok], [canon[i] for i in ok]
    return _Chunk(atoms.copy(), pack_bonds(bonds), canon, table.labels[1:], skipped)


class _LabelTable:
    """The part of Vocab that ``mol_to_graph`` reads, with an atom table that can grow."""

    def __init__(self, max_atoms: int, fixed_labels: Sequence[str] | None,
                 aromatic: bool) -> None:
        self.max_atoms = max_atoms
        self.aromatic = aromatic
        self.labels: list[str] = ["*", *(fixed_labels or ())]
        index = {lab: i for i, lab in enumerate(self.labels)}
        self.atom_index = index if fixed_labels is not None else _GrowingIndex(index,
                                                                                self.labels)


class _GrowingIndex(dict[str, int]):
    """Label -> index map that appends unseen labels (up to the uint8 limit of 256)."""

    def __init__(self, index: dict[str, int], labels: list[str]) -> None:
        super().__init__(index)
        self._labels = labels

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            if len(self._labels) >= 256:
                return default
            self[key] = len(self._labels)
            self._labels.append(key)
        return self[key]


def _pool_context() -> BaseContext:
    # fork (as torch's DataLoader does on Linux): workers start instantly and, unlike spawn,
    # do not re-run an unguarded __main__ script. Elsewhere only spawn is safe.
    methods = get_all_start_methods()
    return get_context("fork" if "fork" in methods else "spawn")


def _featurize(smiles: list[str], max_atoms: int, vocab: Vocab | None, aromatic: bool,
               workers: int, progress: bool
               ) -> tuple[np.ndarray, np.ndarray, list[str], Vocab | None, Counter[str]]:
    """Featurize all SMILES; returns atoms (M, N), bond pairs (M, P), canonical SMILES, vocab,
    skip counts.

    The vocab is None only when no molecule was kept (and none was given).
    """
    fixed = list(vocab.atoms[1:]) if vocab is not None else None
    chunks_in = [smiles[i:i + _CHUNK] for i in range(0, len(smiles), _CHUNK)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(smiles), unit="mol", desc="featurize")
    results: list[_Chunk] = []
    if workers > 1 and len(smiles) >= _PARALLEL_MIN:
        # A Pool, not a ProcessPoolExecutor: leaving its block terminates the workers, so that an
        # interrupted run (Ctrl-C, or SIGTERM as the command line handles it) leaves none behind.
        featurize_chunk = functools.partial(_featurize_chunk, max_atoms=max_atoms, fixed_labels=fixed,
                                            aromatic=aromatic)
        with _pool_context().Pool(workers) as pool:
            for result, c in zip(pool.imap(featurize_chunk, chunks_in), chunks_in, strict=True):
                results.append(result)
                if bar is not None:
                    bar.update(len(c))
    else:
        for c in chunks_in:
            results.append(_featurize_chunk(c, max_atoms, fixed, aromatic))
            if bar is not None:
                bar.update(len(c))
    if bar is not None:
        bar.close()

    skipped: Counter[str] = Counter()
    for r in results:
        skipped.update(r.skipped)
    # Chunk-local atom ids -> one provisional id space (labels in order of first appearance).
    provisional: dict[str, int] = {"*": 0}
    atoms_parts, pairs_parts, smiles_out = [], [], []
    for r in results:
        lut = np.zeros(256, dtype=np.uint8)
        for j, lab in enumerate(r.labels, start=1):
            lut[j] = provisional.setdefault(lab, len(provisional))
        atoms_parts.append(lut[r.atoms])
        pairs_parts.append(r.pairs)
        smiles_out.extend(r.smiles)
    # The chunks go as soon as they are joined: on MOSES each copy of the bonds is ~0.5 GB.
    results.clear()
    atoms = np.concatenate(atoms_parts) if atoms_parts else np.zeros((0, max_atoms), np.uint8)
    pairs = (np.concatenate(pairs_parts) if pairs_parts
             else np.zeros((0, num_pairs(max_atoms)), np.uint8))
    del atoms_parts, pairs_parts
    # Dedupe by canonical SMILES, keeping the first occurrence in file order.
    first: dict[str, int] = {}
    for i, smi in enumerate(smiles_out):
        first.setdefault(smi, i)
    if len(first) < len(smiles_out):
        skipped["duplicate"] += len(smiles_out) - len(first)
        idx = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        atoms, pairs = atoms[idx], pairs[idx]
        smiles_out = list(first)
    if not smiles_out:
        return atoms, pairs, [], vocab, skipped
    if vocab is None:
        freq = np.bincount(atoms.ravel(), minlength=len(provisional))
        vocab = vocab_from_counts(
            {lab: int(freq[k]) for lab, k in provisional.items() if k and freq[k]}, max_atoms,
            aromatic)
    final = np.zeros(256, dtype=np.uint8)
    for lab, k in provisional.items():
        final[k] = vocab.atom_index.get(lab, 0)
    atoms = final[atoms]
    return atoms, pairs, smiles_out, vocab, skipped


# --------------------------------------------------------------------------- dataset


@dataclass
class MolDataset:
    """Featurized molecules: atoms (M, N) uint8, bond pairs (M, P) uint8, aligned SMILES.

    ``pairs`` holds each graph's upper triangle (see :func:`pack_bonds`); :meth:`graphs` gives
    the full bond matrices of a batch of rows.
    """

    atoms: torch.Tensor
    pairs: torch.Tensor
    smiles: list[str]
    vocab: Vocab
    report: SkipReport
    source: str
    cache_hit: bool = False

    def __len__(self) -> int:
        return len(self.smiles)

    def graphs(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer graphs of the rows ``index`` (B,): atoms (B, N) and bonds (B, N, N), uint8,
        on the dataset's device. Only these B bond matrices are built."""
        index = index.to(self.atoms.device)
        return self.atoms[index], unpack_bonds(self.pairs[index], self.vocab.max_atoms)

    def subset(self, index: torch.Tensor) -> MolDataset:
        """The rows ``index`` (K,), in that order, as a dataset of their own (same vocab)."""
        return replace(self, atoms=self.atoms[index], pairs=self.pairs[index],
                       smiles=[self.smiles[i] for i in index.tolist()])

    def to(self, device: torch.device | str) -> MolDataset:
        """The same dataset with its tensors on ``device``."""
        return replace(self, atoms=self.atoms.to(device), pairs=self.pairs.to(device))

    def split(self, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Disjoint (train, valid, test) index tensors covering every row; same seed, same split."""
        if len(fractions) != 3 or any(f < 0 for f in fractions):
            raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
        total = float(sum(fractions))
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {fractions} (sum {total})")
        m = len(self)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(m, generator=gen)
        n_train = round(m * fractions[0])
        n_valid = min(round(m * fractions[1]), m - n_train)
        return (perm[:n_train], perm[n_train:n_train + n_valid], perm[n_train + n_valid:])


def qm9_path() -> Path:
    """The bundled QM9 SMILES file (shipped as package data)."""
    return Path(__file__).resolve().parent / "assets" / QM9_FILENAME


def default_cache_dir() -> Path:
    env = os.environ.get("MOLGAN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "molgan"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(path: Path, max_atoms: int, vocab: Vocab | None,
              smiles_column: str | None, limit: int | None = None, aromatic: bool = False) -> str:
    settings: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "max_atoms": max_atoms,
        "vocab": vocab.to_dict() if vocab is not None else None,
        "smiles_column": smiles_column,
        "limit": limit,
    }
    if aromatic:
        # Only when set, so that the caches of kekulized data keep their keys.
        settings["aromatic"] = True
    h = hashlib.sha256()
    h.update(_file_sha256(path).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _save_cache(file: Path, ds: MolDataset) -> None:
    from safetensors.torch import save_file

    blob = "\n".join(ds.smiles).encode("utf-8")
    tensors = {
        "atoms": ds.atoms.contiguous(),
        "pairs": ds.pairs.contiguous(),
        "smiles": torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob
        else torch.zeros(0, dtype=torch.uint8),
    }
    meta = {
        "format": str(FORMAT_VERSION),
        "vocab": json.dumps(ds.vocab.to_dict()),
        "report": json.dumps(ds.report.to_dict()),
        "source": ds.source,
        "count": str(len(ds)),
    }
    atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _load_cache(file: Path) -> MolDataset:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != str(FORMAT_VERSION):
            raise ValueError(f"cache format {meta.get('format')!r} != {FORMAT_VERSION}")
        atoms = f.get_tensor("atoms")
        pairs = f.get_tensor("pairs")
        blob = f.get_tensor("smiles").numpy().tobytes().decode("utf-8")
    smiles = blob.split("\n") if blob else []
    vocab = Vocab.from_dict(json.loads(meta["vocab"]))
    report = SkipReport.from_dict(json.loads(meta["report"]))
    m, n = len(smiles), vocab.max_atoms
    if (atoms.dtype != torch.uint8 or pairs.dtype != torch.uint8 or tuple(atoms.shape) != (m, n)
            or tuple(pairs.shape) != (m, num_pairs(n)) or int(meta.get("count", -1)) != m):
        raise ValueError("cache tensors do not match their metadata")
    return MolDataset(atoms, pairs, smiles, vocab, report, meta.get("source", file.name),
                      cache_hit=True)


def load_dataset(
    path: str | Path | None = None,
    *,
    max_atoms: int = 9,
    vocab: Vocab | None = None,
    cache_dir: Path | None = None,
    smiles_column: str | None = None,
    progress: bool = False,
    use_cache: bool = True,
    workers: int = 0,
    limit: int | None = None,
    aromatic: bool = False,
) -> MolDataset:
    """Featurize a molecule file (default: bundled QM9) into a :class:`MolDataset`.

    ``path`` is a file or a dataset name of :func:`dataset_file` (``"qm9"``, ``"moses"``);
    ``limit`` keeps only the file's first ``limit`` records (a quick subset; ``None``: all).
    ``aromatic`` keeps aromatic bonds as a bond type of their own instead of kekulizing them
    (see :mod:`molgan.chem`); a given ``vocab`` must have the same kind of bonds.

    Molecules are skipped, never fatal, and counted by reason: every ``EncodeError`` reason
    of :mod:`molgan.chem` (``unparseable``, ``too_many_atoms``, ``multi_fragment``,
    ``unsupported_atom`` -- only possible with a given ``vocab`` --, ...), plus
    ``roundtrip_mismatch`` (the graph does not decode back to the molecule, e.g. an unusual
    hydrogen count) and ``duplicate`` (same canonical SMILES as an earlier row; the first is
    kept). Rows keep file order; ``smiles`` holds canonical non-isomeric SMILES.

    The result is cached under ``cache_dir`` (default ``$MOLGAN_CACHE_DIR`` or
    ``~/.cache/molgan``), keyed by the file's bytes and the settings; ``use_cache=False``
    neither reads nor writes it, ``cache_hit`` on the result says whether it was read.
    ``workers`` = 0 picks up to two processes for large files. Raises FileNotFoundError for
    a missing file and ValueError for an unsupported one or when no molecule is usable.
    """
    src, source = dataset_file(path)
    src, _, _ = _check_path(src)
    if vocab is not None and vocab.max_atoms != max_atoms:
        raise ValueError(f"vocab.max_atoms={vocab.max_atoms} but max_atoms={max_atoms}")
    if vocab is not None and vocab.aromatic != aromatic:
        raise ValueError(f"vocab.aromatic={vocab.aromatic} but aromatic={aromatic}")
    if not 1 <= max_atoms <= 255:
        raise ValueError(f"max_atoms must be in 1..255, got {max_atoms}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    cache_file = None
    if use_cache:
        key = cache_key(src, max_atoms, vocab, smiles_column, limit, aromatic)
        cache_file = (cache_dir or default_cache_dir()) / f"{key}.safetensors"
        if cache_file.is_file():
            try:
                ds = _load_cache(cache_file)
                ds.source = source
                log.info("%s: %s (cached)", source, ds.report.summary())
                return ds
            except Exception as exc:  # corrupt/partial/old cache: rebuild it
                log.warning("ignoring unreadable cache %s (%s); rebuilding", cache_file, exc)

    raw = read_smiles(src, smiles_column=smiles_column, limit=limit)
    if workers <= 0:
        workers = min(2, os.cpu_count() or 1)
    atoms, pairs, smiles, vocab_out, skipped = _featurize(raw, max_atoms, vocab, aromatic,
                                                          workers, progress)
    report = SkipReport(read=len(raw), kept=len(smiles), skipped=dict(skipped))
    del raw  # ~0.2 GB of strings for MOSES; writing the cache needs memory of its own
    if not smiles or vocab_out is None:
        raise DatasetError(f"no usable molecule in {src}: {report.summary()}")
    ds = MolDataset(torch.from_numpy(atoms), torch.from_numpy(pairs), smiles, vocab_out,
                    report, source)
    log.info("%s: %s", source, report.summary())
    if cache_file is not None:
        try:
            _save_cache(cache_file, ds)
        except OSError as exc:  # a read-only cache dir must not break loading
            log.warning("could not write cache %s: %s", cache_file, exc)
    return ds


def vocab_for(config: DataConfig) -> Vocab | None:
    """The fixed vocabulary ``config.atoms`` asks for (the padding label first, the bond types
    of ``config.aromatic``), or ``None``."""
    if config.atoms is None:
        return None
    atoms = (PAD_LABEL, *(a for a in config.atoms if a != PAD_LABEL))
    return Vocab(atoms=atoms, max_atoms=config.max_atoms, bonds=bond_types(config.aromatic))


def dataset_from_config(config: DataConfig) -> MolDataset:
    """The dataset a config's ``data`` section describes (featurized once, then read from the cache)."""
    return load_dataset(
        config.path, max_atoms=config.max_atoms, vocab=vocab_for(config),
        smiles_column=config.smiles_column, limit=config.limit, aromatic=config.aromatic,
    )


# --------------------------------------------------------------------------- QM9 asset


def _qm9pack_data_dir() -> Path:
    import importlib.util

    # Locate the package without importing it: its __init__ needs pkg_resources and pandas.
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "building the QM9 file needs the optional package qm9pack: "
            "pip install 'molgan[qm9]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


def _write_gzip(path: Path, payload: bytes) -> None:
    # mtime=0 and no file name in the header: identical input gives identical bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                compresslevel=9, mtime=0) as gz:
        gz.write(payload)


def build_qm9_file(out: Path) -> SkipReport:
    """Write the QM9 SMILES (in QM9 index order, one per line) to a deterministic gzip file.

    Source: the ``SMILES`` column of qm9pack's CSV tables (relaxed-geometry SMILES of the
    130,831 QM9 molecules). Rows without SMILES are counted as skipped.
    """
    data_dir = _qm9pack_data_dir()
    csv.field_size_limit(1 << 30)
    rows: list[tuple[int, str]] = []
    skipped: Counter[str] = Counter()
    read = 0
    for part in QM9PACK_PARTS:
        with open(data_dir / part, encoding="utf-8", newline="") as f:
            for rec in csv.DictReader(f):
                read += 1
                s = (rec.get("SMILES") or "").strip()
                if not s:
                    skipped["missing_smiles"] += 1
                    continue
                rows.append((int(rec["Index"]), s))
    rows.sort()
    payload = "".join(f"{s}\n" for _, s in rows).encode("utf-8")
    atomic_write(Path(out), lambda tmp: _write_gzip(tmp, payload))
    report = SkipReport(read=read, kept=len(rows), skipped=dict(skipped))
    log.info("QM9 -> %s: %s", out, report.summary())
    return report
