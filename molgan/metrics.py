"""Sample-quality metrics computed from SMILES strings.

Samples are SMILES strings, or ``None`` for a graph that did not sanitize. Generated SMILES are
canonical non-isomeric RDKit SMILES; reference sets must be canonicalised the same way
(:func:`molgan.chem.canonical_smiles`) so that string equality means "same molecule".

Validity is :mod:`molgan.chem`'s: a molecule is *valid* (strict) when RDKit sanitizes it without
clean-up repairs, it has at least one atom AND it is one connected fragment. It is *loosely
valid* when it sanitizes with at least one atom, fragments allowed (the definition of the
original MolGAN paper).

Definitions, for ``n`` samples:

- validity = strictly valid / n
- validity_loose = sanitizing / n
- uniqueness = unique valid / valid
- novelty = unique valid not in training set / unique valid
- vun = (unique valid novel molecules, counted once each) / n
- qed_mean, sa_mean, logp_mean: means over the unique valid molecules
- internal_diversity: mean (1 - Tanimoto similarity) over pairs of distinct unique valid
  molecules, Morgan fingerprints of radius 2 and 2048 bits (a fixed-seed sample of 100,000
  pairs when there are more)
- fcd: Frechet ChemNet Distance between the valid samples (repeats included) and the reference
  SMILES (QM9 test split), computed with the optional ``fcd`` package

"Unique" compares canonical SMILES. A ratio whose denominator is empty is 0.0; a mean over no
molecules is 0.0; internal diversity of fewer than two molecules is 0.0. ``fcd`` is ``None`` when
it was not requested or when there are fewer than two valid samples.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import importlib.util
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator

from molgan.chem import canonical_smiles, is_valid_mol, mol_to_smiles, sanitized_mol, to_mol

__all__ = [
    "SampleMetrics",
    "chemnet_statistics",
    "evaluate_smiles",
    "frechet_chemnet_distance",
    "frechet_distance",
    "internal_diversity",
    "mol_properties",
    "properties",
    "sa_score",
]

FINGERPRINT_RADIUS = 2
FINGERPRINT_BITS = 2048
_FCD_INSTALL_HINT = "FCD needs the optional 'fcd' package: pip install 'molgan[fcd]'"


@functools.cache
def _sascorer() -> ModuleType:
    # The SA scorer ships with the RDKit wheel under Contrib, which is not an importable package.
    # Its fragment table (fpscores.pkl.gz) is a pickle from that same installed wheel: trusted.
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    spec = importlib.util.spec_from_file_location("molgan_rdkit_sascorer", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ImportError(f"RDKit's SA_Score scorer was not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sa_score(mol: Chem.Mol) -> float:
    """Synthetic accessibility (Ertl & Schuffenhauer 2009): 1 = easy ... 10 = hard."""
    if mol is None or mol.GetNumAtoms() == 0:
        raise ValueError("SA score needs a molecule with at least one atom")
    return float(_sascorer().calculateScore(mol))


PROPERTY_FUNCTIONS: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": lambda mol: float(QED.qed(mol)),
    "logp": lambda mol: float(Crippen.MolLogP(mol)),
    "sa": sa_score,
    "mol_weight": lambda mol: float(Descriptors.MolWt(mol)),
}
"""The properties molgan reports and conditions on, by name, of a sanitized molecule."""


def mol_properties(mol: Chem.Mol) -> dict[str, float]:
    """QED, Crippen logP, SA score and molecular weight of a sanitized molecule."""
    return {name: f(mol) for name, f in PROPERTY_FUNCTIONS.items()}


def properties(smiles: str) -> dict[str, float]:
    """QED, Crippen logP, SA score and molecular weight of one molecule.

    Raises ValueError when ``smiles`` does not parse and sanitize.
    """
    mol = to_mol(smiles)
    if mol is None:
        raise ValueError(f"SMILES does not parse/sanitize: {smiles!r}")
    return mol_properties(mol)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


@functools.cache
def _fingerprinter() -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(
        radius=FINGERPRINT_RADIUS, fpSize=FINGERPRINT_BITS
    )


def _packed_fingerprints(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """(M, FINGERPRINT_BITS / 8) uint8 packed Morgan bits."""
    gen = _fingerprinter()
    bits = np.stack([gen.GetFingerprintAsNumPy(m) for m in mols]).astype(bool)
    return np.packbits(bits, axis=1)


def _diversity_of_mols(
    mols: Sequence[Chem.Mol], *, max_pairs: int, seed: int, chunk: int = 8192
) -> float:
    m = len(mols)
    if m < 2:
        return 0.0
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    fps = _packed_fingerprints(mols)
    counts = _POPCOUNT[fps].sum(axis=1, dtype=np.int64)
    if m * (m - 1) // 2 <= max_pairs:
        left, right = np.triu_indices(m, k=1)
    else:
        # Uniform over ordered pairs i != j, hence over unordered pairs; sampled with replacement.
        rng = np.random.default_rng(seed)
        left = rng.integers(0, m, size=max_pairs)
        right = rng.integers(0, m - 1, size=max_pairs)
        right += right >= left
    total = 0.0
    for start in range(0, len(left), chunk):
        i, j = left[start : start + chunk], right[start : start + chunk]
        both = _POPCOUNT[fps[i] & fps[j]].sum(axis=1, dtype=np.int64)
        either = counts[i] + counts[j] - both
        # Two empty fingerprints are identical sets: similarity 1.
        sim = np.where(either > 0, both / np.maximum(either, 1), 1.0)
        total += float((1.0 - sim).sum())
    return total / len(left)


def internal_diversity(
    smiles: Sequence[str], *, max_pairs: int = 100_000, seed: int = 0
) -> float:
    """Mean (1 - Tanimoto) over pairs of the given molecules (Morgan r=2, 2048 bits).

    All ``m * (m - 1) / 2`` pairs are used when there are at most ``max_pairs`` of them;
    otherwise ``max_pairs`` pairs of distinct positions are drawn with ``seed`` (same inputs, same
    result). Repeats in ``smiles`` are kept: pass unique molecules for the usual metric.
    Fewer than two molecules give 0.0. Raises ValueError on a SMILES that does not sanitize.
    """
    mols = []
    for s in smiles:
        mol = to_mol(s)
        if mol is None:
            raise ValueError(f"SMILES does not parse/sanitize: {s!r}")
        mols.append(mol)
    return _diversity_of_mols(mols, max_pairs=max_pairs, seed=seed)


@dataclasses.dataclass(frozen=True)
class SampleMetrics:
    """Quality of a set of samples; see the module docstring for the definitions."""

    n: int
    validity: float
    validity_loose: float
    uniqueness: float
    novelty: float
    vun: float
    qed_mean: float
    sa_mean: float
    logp_mean: float
    internal_diversity: float
    fcd: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _load_fcd() -> ModuleType:
    try:
        import fcd
    except ImportError as exc:
        raise ImportError(_FCD_INSTALL_HINT) from exc
    return fcd


@functools.cache
def _chemnet() -> Any:
    """ChemNet from the weights shipped inside the ``fcd`` wheel (works offline).

    Loaded here with ``weights_only=True`` (plain tensors and containers, nothing executed) and
    without ``fcd.load_ref_model``'s temporary copy of the file.
    """
    import torch

    fcd = _load_fcd()
    from fcd.utils import load_imported_model

    weights = importlib.resources.files(fcd).joinpath("ChemNet_v0.13_pretrained.pt")
    with importlib.resources.as_file(weights) as path:
        config = torch.load(path, map_location="cpu", weights_only=True)
    model = load_imported_model(config)
    model.eval()
    return model


def _chemnet_activations(smiles: list[str], batch_size: int = 128) -> np.ndarray:
    """(M, 512) ChemNet activations of ``smiles``, on the CPU, in this process.

    Our loop rather than ``fcd.get_predictions``: that one spawns a DataLoader worker per call and
    stacks with ``np.row_stack``, which NumPy 2 deprecates.
    """
    import torch

    _load_fcd()
    from fcd.utils import SmilesDataset

    model = _chemnet()
    dataset = SmilesDataset(smiles)  # one-hot SMILES tokens padded to ChemNet's 350
    chunks = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            one_hot = np.stack([dataset[k] for k in range(start, stop)])
            batch = torch.from_numpy(one_hot).float().transpose(1, 2)  # (B, vocab, length)
            chunks.append(model(batch).numpy().astype(np.float64))
    return np.vstack(chunks)


def chemnet_statistics(smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (512,) and covariance (512, 512) of ChemNet activations of the sanitizing SMILES
    (canonicalised first; ValueError for fewer than two). Needs the optional ``fcd`` package."""
    canon = [c for c in map(canonical_smiles, smiles) if c is not None]
    if len(canon) < 2:
        raise ValueError("FCD needs at least two sanitizing SMILES on each side")
    acts = _chemnet_activations(canon)
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


@functools.lru_cache(maxsize=2)
def _reference_stats(reference: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    # Evaluations during training reuse one reference set: run ChemNet over it once.
    return chemnet_statistics(reference)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``. The last trace is
    the sum of the square roots of the eigenvalues of ``s1 sigma2 s1`` with ``s1 = sigma1^(1/2)``
    (similar to ``sigma1 sigma2`` and symmetric PSD), so it stays real for singular covariances.
    """
    evals, evecs = np.linalg.eigh(sigma1)
    s1 = (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T
    inner = np.linalg.eigvalsh(s1 @ sigma2 @ s1)
    tr_covmean = float(np.sqrt(np.clip(inner, 0.0, None)).sum())
    diff = np.asarray(mu1) - np.asarray(mu2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_chemnet_distance(samples: Sequence[str], reference: Sequence[str]) -> float:
    """Frechet ChemNet Distance between two SMILES sets; needs the optional ``fcd`` package.

    Both sides are canonicalised and SMILES that do not sanitize are dropped; each side needs at
    least two molecules left (ValueError otherwise). Repeats count. The reference side's ChemNet
    statistics are cached for the last two reference sets.
    """
    _load_fcd()
    mu1, sigma1 = chemnet_statistics(samples)
    mu2, sigma2 = _reference_stats(tuple(reference))
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def evaluate_smiles(
    samples: Sequence[str | None],
    training_smiles: Collection[str],
    *,
    reference_smiles: Sequence[str] | None = None,
    compute_fcd: bool = False,
) -> SampleMetrics:
    """Score generated samples; definitions in the module docstring.

    ``training_smiles`` must hold canonical non-isomeric SMILES (a set makes look-ups O(1)).
    ``reference_smiles`` (required with ``compute_fcd``) is canonicalised here; its ChemNet
    statistics are cached, so repeated evaluations against one reference set pay for it once.
    Raises ImportError when ``compute_fcd`` is set and the ``fcd`` extra is not installed.
    """
    if compute_fcd:
        _load_fcd()  # fail before the expensive part when the extra is missing
        if reference_smiles is None:
            raise ValueError("compute_fcd=True needs reference_smiles")
    n = len(samples)
    # Each distinct input string is parsed once; generated samples repeat a lot.
    parsed: dict[str, tuple[Chem.Mol | None, str | None, bool]] = {}
    n_valid = n_loose = 0
    valid_canonical: list[str] = []
    for s in samples:
        if s is None:
            continue
        entry = parsed.get(s)
        if entry is None:
            mol = sanitized_mol(s)
            if mol is None:
                entry = (None, None, False)
            elif is_valid_mol(mol):
                entry = (mol, mol_to_smiles(mol), True)
            else:
                entry = (mol, None, False)  # fragments only count towards validity_loose
            parsed[s] = entry
        mol, canon, connected = entry
        if mol is None:
            continue
        n_loose += 1
        if connected:
            n_valid += 1
            valid_canonical.append(canon)

    unique_mols: dict[str, Chem.Mol] = {}
    for mol, canon, connected in parsed.values():
        if connected and canon not in unique_mols:
            unique_mols[canon] = mol
    n_unique = len(unique_mols)
    n_novel = sum(1 for canon in unique_mols if canon not in training_smiles)

    props = [mol_properties(mol) for mol in unique_mols.values()]
    diversity = _diversity_of_mols(list(unique_mols.values()), max_pairs=100_000, seed=0)

    fcd_value: float | None = None
    if compute_fcd and reference_smiles is not None and len(valid_canonical) >= 2:
        fcd_value = frechet_chemnet_distance(valid_canonical, reference_smiles)

    return SampleMetrics(
        n=n,
        validity=_ratio(n_valid, n),
        validity_loose=_ratio(n_loose, n),
        uniqueness=_ratio(n_unique, n_valid),
        novelty=_ratio(n_novel, n_unique),
        vun=_ratio(n_novel, n),
        qed_mean=_mean([p["qed"] for p in props]),
        sa_mean=_mean([p["sa"] for p in props]),
        logp_mean=_mean([p["logp"] for p in props]),
        internal_diversity=diversity,
        fcd=fcd_value,
    )
