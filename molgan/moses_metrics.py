"""The MOSES benchmark's metrics (Polykovskiy et al., 2020), computed from SMILES strings.

Definitions follow the paper and the reference code of ``molsets`` 0.3.1, for ``n`` samples:

- **valid**: fraction of samples that RDKit reads with its default sanitization (clean-up
  repairs allowed, fragments allowed). Every metric below is taken over the *valid list*: the
  canonical (isomeric) SMILES of the valid samples, repeats included, in sample order.
- **unique@k**: distinct molecules among the first ``k`` of the valid list / their number (all of
  them when there are fewer than ``k``).
- **FCD/Test, FCD/TestSF**: Frechet ChemNet Distance between the valid list and MOSES's published
  ChemNet statistics of its test and scaffold-test sets.
- **SNN**: mean over the valid list of the largest Tanimoto similarity to a reference molecule
  (Morgan fingerprints, radius 2, 1024 bits; two empty fingerprints have similarity 1).
- **Frag, Scaf**: cosine similarity between the counts of BRICS fragments (resp. Bemis-Murcko
  scaffolds with at least two rings) in the valid list and in the reference set.
- **IntDiv, IntDiv2**: ``1 - mean_i (mean_j T(i, j)^p)^(1/p)`` over all ordered pairs of the
  valid list, each molecule with itself included, for ``p = 1`` and ``p = 2``.
- **Filters**: fraction of the valid list that passes MOSES's filters: the MCF and PAINS alert
  lists, no formal charge, only C, N, S, O, F, Cl, Br, H atoms, no ring of 8 or more atoms.
- **Novelty**: distinct molecules of the valid list whose SMILES is not among the training
  SMILES / distinct molecules (string comparison, as MOSES does).

molgan adds **valid_strict** (:func:`molgan.chem.is_valid`: sanitizes without repairs and is one
fragment, no correction) and, over the valid list, the mean number of rings
(**rings_mean**), of aromatic rings (**aromatic_rings_mean**) and the mean QED (**qed_mean**).
A metric whose input is empty (no valid molecule, no fragment, ...) is ``None``.

The reference statistics of the test sets (fingerprints, fragment and scaffold counts) take a few
minutes to compute; they are cached on disk (safetensors and JSON, in ``$MOLGAN_CACHE_DIR`` or
``~/.cache/molgan``) under the sha256 of the file they come from.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import json
import logging
import pickletools
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import QED, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.Scaffolds import MurckoScaffold
from safetensors.numpy import load_file, save_file

from molgan.chem import is_valid, to_mol
from molgan.files import atomic_write
from molgan.filters import passes_filters
from molgan.metrics import chemnet_statistics, frechet_distance
from molgan.moses_files import moses_file

if TYPE_CHECKING:
    from molgan.sampling import MoleculeSampler
    from molgan.sampling_settings import SamplingSettings

__all__ = [
    "DEFAULT_SAMPLES",
    "REFERENCE_SETS",
    "MosesReference",
    "evaluate_sampler_on_moses",
    "fingerprints",
    "internal_diversity",
    "load_reference",
    "moses_metrics",
    "nearest_neighbour_similarity",
]

logger = logging.getLogger(__name__)

DEFAULT_SAMPLES = 30_000  # the sample size MOSES's authors recommend and report
UNIQUE_AT = (1_000, 10_000)
FINGERPRINT_RADIUS = 2
FINGERPRINT_BITS = 1024
MIN_SCAFFOLD_RINGS = 2
# Reference set -> (SMILES file, ChemNet statistics file, suffix of its metric names).
REFERENCE_SETS: dict[str, tuple[str, str, str]] = {
    "test": ("test", "test_stats", "Test"),
    "test_scaffolds": ("test_scaffolds", "test_scaffolds_stats", "TestSF"),
}
_CACHE_VERSION = 1
_CHEMNET_DIM = 512


# --------------------------------------------------------------------------- molecules


def moses_canonical(mol: Chem.Mol) -> str:
    """MOSES's canonical SMILES: RDKit's default, stereochemistry kept."""
    return Chem.MolToSmiles(mol)


def _bits(mol: Chem.Mol) -> np.ndarray:
    return _fingerprinter().GetFingerprintAsNumPy(mol).astype(bool)


@functools.cache
def _fingerprinter() -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(radius=FINGERPRINT_RADIUS,
                                                     fpSize=FINGERPRINT_BITS)


def fingerprints(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """(M, 128) uint8: the packed 1024-bit Morgan fingerprints (radius 2) of ``mols``."""
    if not mols:
        return np.zeros((0, FINGERPRINT_BITS // 8), dtype=np.uint8)
    return np.packbits(np.stack([_bits(m) for m in mols]), axis=1)


def brics_fragments(mol: Chem.Mol) -> list[str]:
    """The SMILES of the pieces left when every BRICS bond of ``mol`` is cut (with their
    attachment labels, ``[1*]C(C)=O``)."""
    return moses_canonical(Chem.FragmentOnBRICSBonds(mol)).split(".")


def scaffold(mol: Chem.Mol) -> str | None:
    """The Bemis-Murcko scaffold's SMILES, or None when it has fewer than two rings."""
    try:
        core = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = moses_canonical(core)
    if not smiles or core.GetRingInfo().NumRings() < MIN_SCAFFOLD_RINGS:
        return None
    return smiles


# --------------------------------------------------------------------------- Tanimoto


def _unpack(packed: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed, axis=1)).to(dtype)


def _matmul_dtype(*packed: np.ndarray) -> torch.dtype:
    # bfloat16 products are exact while every count stays <= 256 (8 significant bits), and
    # about 4x faster than float32 on the CPU; fingerprints of drug-sized molecules have < 100
    # bits set. Larger counts fall back to float32, which is exact to 2^24.
    most = max((int(np.unpackbits(p, axis=1).sum(axis=1).max()) for p in packed if len(p)),
               default=0)
    return torch.bfloat16 if most <= 256 else torch.float32


def _tanimoto_blocks(
    rows: np.ndarray, columns: np.ndarray, *, block: int = 8192
) -> Iterable[tuple[slice, slice, torch.Tensor]]:
    """Tanimoto similarities of packed fingerprints ``rows (R, 128)`` x ``columns (C, 128)``,
    yielded as float32 blocks ``(r, c)`` with their row and column slices."""
    dtype = _matmul_dtype(rows, columns)
    row_bits = _unpack(rows, dtype)
    row_counts = row_bits.float().sum(dim=1, keepdim=True)
    for c0 in range(0, len(columns), block):
        col_bits = _unpack(columns[c0:c0 + block], dtype)
        col_counts = col_bits.float().sum(dim=1)
        for r0 in range(0, len(rows), block // 2):
            both = (row_bits[r0:r0 + block // 2] @ col_bits.T).float()
            either = row_counts[r0:r0 + block // 2] + col_counts - both
            # Two empty fingerprints are the same set: similarity 1 (MOSES: NaN -> 1).
            sim = torch.where(either > 0, both / either.clamp(min=1), 1.0)
            yield slice(r0, r0 + block // 2), slice(c0, c0 + block), sim


def _distinct(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``packed`` and how often each occurs."""
    if len(packed) == 0:
        return packed, np.zeros(0, dtype=np.int64)
    rows, counts = np.unique(packed, axis=0, return_counts=True)
    return rows, counts


def nearest_neighbour_similarity(generated: np.ndarray, reference: np.ndarray) -> float | None:
    """SNN: mean over ``generated (G, 128)`` of the largest Tanimoto similarity to a row of
    ``reference (R, 128)`` (packed fingerprints; repeats in ``generated`` count)."""
    if len(generated) == 0 or len(reference) == 0:
        return None
    rows, counts = _distinct(generated)
    best = torch.zeros(len(rows))
    for r, _, sim in _tanimoto_blocks(rows, reference):
        best[r] = torch.maximum(best[r], sim.max(dim=1).values)
    return float((best.double().numpy() * counts).sum() / counts.sum())


def internal_diversity(packed: np.ndarray, p: int = 1) -> float | None:
    """IntDiv_p of packed fingerprints ``(G, 128)``: ``1 - mean_i (mean_j T(i, j)^p)^(1/p)``
    over all ordered pairs, self-pairs and repeats included (MOSES's definition)."""
    if len(packed) == 0:
        return None
    rows, counts = _distinct(packed)
    weights = torch.from_numpy(counts).float()
    totals = torch.zeros(len(rows), dtype=torch.float64)
    for r, c, sim in _tanimoto_blocks(rows, rows):
        totals[r] += ((sim ** p) @ weights[c]).double()
    per_row = (totals / counts.sum()) ** (1.0 / p)
    return float(1.0 - (per_row * weights.double()).sum() / counts.sum())


def _cosine_similarity(reference: Counter[str], generated: Counter[str]) -> float | None:
    """Cosine similarity of two count vectors indexed by name (absent names count 0)."""
    if not reference or not generated:
        return None
    dot = sum(count * reference.get(name, 0) for name, count in generated.items())
    norms = np.sqrt(sum(v * v for v in reference.values())) * np.sqrt(
        sum(v * v for v in generated.values()))
    return float(dot / norms)


# --------------------------------------------------------------------------- reference sets


@dataclass(frozen=True)
class MosesReference:
    """What the metrics need of one MOSES reference set.

    ``fingerprints (R, 128)`` packed Morgan bits; ``fragments`` and ``scaffolds`` the counts over
    the set; ``fcd_mu (512,)`` and ``fcd_sigma (512, 512)`` MOSES's published ChemNet
    statistics of the whole set; ``size`` the number of molecules used.
    """

    name: str
    size: int
    fingerprints: np.ndarray
    fragments: Counter[str]
    scaffolds: Counter[str]
    fcd_mu: np.ndarray
    fcd_sigma: np.ndarray


def _read_smiles_column(path: Path) -> list[str]:
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        column = header.index("SMILES")
        return [row[column] for row in reader]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chemnet_statistics_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """MOSES's published ChemNet mean ``(512,)`` and covariance ``(512, 512)``, read without
    unpickling.

    The ``.npz`` holds one pickled dict, so ``np.load`` would need ``allow_pickle=True``: it would
    run whatever the pickle names. Instead the pickle's opcodes are only listed
    (:func:`pickletools.genops` decodes, it executes nothing): the raw buffers of the arrays stored
    under ``"mu"`` and ``"sigma"`` follow those names, each after its dtype code (``f4``/``f8``),
    as latin-1 text of exactly 512 (resp. 512 x 512) items.
    """
    with zipfile.ZipFile(path) as archive:
        raw = archive.read("stats.npy")
    header_end = raw.index(b"\n") + 1  # the .npy header line; the pickle follows
    wanted = {"mu": (_CHEMNET_DIM,), "sigma": (_CHEMNET_DIM, _CHEMNET_DIM)}
    found: dict[str, np.ndarray] = {}
    current: str | None = None
    dtype: str | None = None
    for _, arg, _ in pickletools.genops(raw[header_end:]):
        if not isinstance(arg, str):
            continue
        if arg in wanted and current is None and arg not in found:
            current, dtype = arg, None
        elif current is not None and arg in ("f4", "f8"):
            dtype = arg
        elif current is not None and dtype is not None:
            shape = wanted[current]
            size = int(np.prod(shape)) * int(dtype[1])
            if len(arg) == size:
                found[current] = np.frombuffer(arg.encode("latin-1"), dtype="<" + dtype).reshape(
                    shape).astype(np.float64)
                current = None
        if len(found) == len(wanted):
            return found["mu"], found["sigma"]
    raise ValueError(f"{path.name}: no ChemNet statistics (mu, sigma) found")


def _computed_statistics(smiles: list[str]) -> tuple[np.ndarray, Counter[str], Counter[str]]:
    mols = []
    with rdBase.BlockLogs():
        for s in smiles:
            mol = to_mol(s)
            if mol is not None:
                mols.append(mol)
    fragments: Counter[str] = Counter()
    scaffolds: Counter[str] = Counter()
    for mol in mols:
        fragments.update(brics_fragments(mol))
        core = scaffold(mol)
        if core is not None:
            scaffolds[core] += 1
    return fingerprints(mols), fragments, scaffolds


def load_reference(
    name: str, *, limit: int | None = None, cache_dir: Path | None = None
) -> MosesReference:
    """A MOSES reference set (``test`` or ``test_scaffolds``), computed once and then read from
    the cache.

    ``limit`` uses only the set's first ``limit`` molecules for SNN, Frag and Scaf (quick
    checks; the figures are then not MOSES's). FCD always uses the published statistics of the
    whole set.
    """
    if name not in REFERENCE_SETS:
        raise KeyError(f"unknown MOSES reference set {name!r}; known: {', '.join(REFERENCE_SETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"reference limit must be >= 1, got {limit}")
    from molgan.data import default_cache_dir

    smiles_name, stats_name, _ = REFERENCE_SETS[name]
    path = moses_file(smiles_name)
    mu, sigma = _chemnet_statistics_file(moses_file(stats_name))
    key = hashlib.sha256(json.dumps({
        "file": _sha256(path), "limit": limit, "version": _CACHE_VERSION,
        "rdkit": rdBase.rdkitVersion,  # fragment and scaffold SMILES follow RDKit's canonical form
    }, sort_keys=True).encode()).hexdigest()[:32]
    folder = (cache_dir or default_cache_dir()) / "moses"
    tensors, counts = folder / f"{name}-{key}.safetensors", folder / f"{name}-{key}.json"
    if tensors.is_file() and counts.is_file():
        fps = load_file(tensors)["fingerprints"]
        stored = json.loads(counts.read_text())
        fragments, scaffolds, size = Counter(stored["fragments"]), Counter(stored["scaffolds"]), \
            stored["size"]
    else:
        smiles = _read_smiles_column(path)[:limit]
        logger.info("computing the statistics of MOSES %s (%d molecules; cached afterwards)",
                    name, len(smiles))
        fps, fragments, scaffolds = _computed_statistics(smiles)
        size = len(fps)
        # The JSON last: a reader takes the pair only when both are there.
        atomic_write(tensors, lambda tmp: save_file({"fingerprints": fps}, str(tmp)))
        atomic_write(counts, lambda tmp: tmp.write_text(json.dumps(
            {"size": size, "fragments": fragments, "scaffolds": scaffolds})))
    return MosesReference(name=name, size=size, fingerprints=fps, fragments=fragments,
                          scaffolds=scaffolds, fcd_mu=mu, fcd_sigma=sigma)


@functools.cache
def _training_smiles() -> frozenset[str]:
    return frozenset(_read_smiles_column(moses_file("train")))


# --------------------------------------------------------------------------- all metrics


def moses_metrics(
    smiles: Sequence[str | None],
    *,
    fcd: bool = True,
    reference_limit: int | None = None,
    training: Iterable[str] | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The MOSES metrics of any list of SMILES (``None`` counts as invalid); see the module
    docstring for the definitions.

    ``fcd=False`` skips FCD (it needs the optional ``fcd`` package); ``reference_limit`` uses
    only the first molecules of each reference set for SNN, Frag and Scaf (see
    :func:`load_reference`); ``training`` replaces MOSES's training SMILES for Novelty.
    """
    n = len(smiles)
    if n == 0:
        raise ValueError("no SMILES to score")
    valid_mols: list[Chem.Mol] = []
    valid: list[str] = []
    n_strict = 0
    with rdBase.BlockLogs():
        for s in smiles:
            if s is None:
                continue
            n_strict += is_valid(s)
            mol = to_mol(s) if s else None
            if mol is not None:
                valid_mols.append(mol)
                valid.append(moses_canonical(mol))

    # Each distinct molecule is described once; the metrics count its repeats.
    first_of: dict[str, int] = {}
    for i, canon in enumerate(valid):
        first_of.setdefault(canon, i)
    distinct = [valid_mols[i] for i in first_of.values()]
    repeats = Counter(valid)
    weights = np.array([repeats[c] for c in first_of], dtype=np.float64)

    metrics: dict[str, Any] = {"n": n, "valid": len(valid) / n, "valid_strict": n_strict / n}
    for k in UNIQUE_AT:
        head = valid[:k]
        metrics[f"unique@{k}"] = len(set(head)) / len(head) if head else None

    generated_fps = np.repeat(fingerprints(distinct), weights.astype(np.int64), axis=0)
    fragments: Counter[str] = Counter()
    scaffolds: Counter[str] = Counter()
    for mol, count in zip(distinct, weights.astype(np.int64), strict=True):
        for piece in brics_fragments(mol):
            fragments[piece] += int(count)
        core = scaffold(mol)
        if core is not None:
            scaffolds[core] += int(count)

    if fcd and len(valid) >= 2:
        mu, sigma = chemnet_statistics(valid)
    for name, (_, _, suffix) in REFERENCE_SETS.items():
        reference = load_reference(name, limit=reference_limit, cache_dir=cache_dir)
        if fcd:
            metrics[f"FCD/{suffix}"] = (frechet_distance(mu, sigma, reference.fcd_mu,
                                                         reference.fcd_sigma)
                                        if len(valid) >= 2 else None)
        metrics[f"SNN/{suffix}"] = nearest_neighbour_similarity(generated_fps,
                                                                reference.fingerprints)
        metrics[f"Frag/{suffix}"] = _cosine_similarity(reference.fragments, fragments)
        metrics[f"Scaf/{suffix}"] = _cosine_similarity(reference.scaffolds, scaffolds)

    metrics["IntDiv"] = internal_diversity(generated_fps, p=1)
    metrics["IntDiv2"] = internal_diversity(generated_fps, p=2)
    passes = np.array([passes_filters(m) for m in distinct], dtype=np.float64)
    metrics["Filters"] = float((passes * weights).sum() / weights.sum()) if len(valid) else None
    train = _training_smiles() if training is None else frozenset(training)
    metrics["Novelty"] = (sum(1 for c in first_of if c not in train) / len(first_of)
                          if first_of else None)

    def weighted_mean(values: list[float]) -> float | None:
        return float(np.dot(values, weights) / weights.sum()) if len(valid) else None

    metrics["rings_mean"] = weighted_mean([rdMolDescriptors.CalcNumRings(m) for m in distinct])
    metrics["aromatic_rings_mean"] = weighted_mean(
        [rdMolDescriptors.CalcNumAromaticRings(m) for m in distinct])
    metrics["qed_mean"] = weighted_mean([QED.qed(m) for m in distinct])
    return metrics


def evaluate_sampler_on_moses(
    sampler: MoleculeSampler,
    n: int = DEFAULT_SAMPLES,
    *,
    seed: int = 0,
    settings: SamplingSettings | None = None,
    reference_limit: int | None = None,
) -> dict[str, Any]:
    """The MOSES metrics of ``n`` raw samples of a generator (what ``molgan evaluate
    --benchmark moses`` prints), with the sampling settings and timings."""
    import time

    used = settings if settings is not None else sampler.settings()
    started = time.perf_counter()
    samples = sampler.sample(n, seed=seed, settings=used)
    sampled = time.perf_counter()
    metrics = moses_metrics([s.smiles for s in samples], reference_limit=reference_limit)
    return metrics | {
        "seed": seed, "mode": used.mode, "temperature": used.temperature, "min_p": used.min_p,
        "reference_limit": reference_limit, "step": sampler.meta.get("step"),
        "sampling_seconds": round(sampled - started, 3),
        "scoring_seconds": round(time.perf_counter() - sampled, 3),
    }
