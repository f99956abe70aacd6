"""The library's Python interface: load a model, generate molecules, score SMILES.

    import molgan

    model = molgan.load("qm9")               # a bundled model by name, or a checkpoint's path
    for m in model.generate(5, seed=1, properties=True):
        print(m.smiles, m.valid, m.mol.GetNumAtoms(), m.properties["qed"])
    model.score(["CCO", "c1ccccc1O"])        # metrics against the model's own dataset

The command line and the HTTP service are built from the same pieces (``MoleculeSampler``,
``SamplingSettings``, ``molgan.metrics``); this module only gives them keyword arguments and
records that read well in a notebook.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from molgan.chem import canonical_smiles
from molgan.evaluation import dataset_references, evaluate_sampler
from molgan.metrics import evaluate_smiles, properties
from molgan.sampling import MoleculeSampler, Sample, sample_filtered
from molgan.sampling_settings import SamplingMode, SamplingSettings


class Model:
    """A trained generator with its vocabulary and default sampling settings."""

    def __init__(self, sampler: MoleculeSampler) -> None:
        self.sampler = sampler

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, step={self.sampler.meta.get('step')}, sampling={self.defaults})"

    @property
    def name(self) -> str:
        return self.sampler.config.name

    @property
    def defaults(self) -> SamplingSettings:
        """How ``generate`` samples when no setting is given (the checkpoint's own)."""
        return self.sampler.settings()

    @property
    def conditions(self) -> list[dict[str, Any]]:
        """The properties ``generate`` takes targets for, each with its range (``low``, ``high``),
        the training data's mean, spread and percentiles; empty for an unconditional model."""
        return self.sampler.conditions.to_list() if self.sampler.conditions is not None else []

    def info(self) -> dict[str, Any]:
        """Name, training step, vocabulary, default sampling and the checkpoint's evaluation."""
        return self.sampler.describe()

    def settings(
        self, mode: SamplingMode | None = None, temperature: float | None = None, min_p: float | None = None
    ) -> SamplingSettings:
        """The checkpoint's defaults overridden by what is given; a given temperature or min_p
        implies Gumbel-Max. Raises ``SamplingError`` (a ValueError) naming a bad setting."""
        return self.sampler.settings(mode, temperature, min_p)

    def generate(
        self,
        n: int,
        *,
        seed: int | None = None,
        mode: SamplingMode | None = None,
        temperature: float | None = None,
        min_p: float | None = None,
        valid_only: bool = False,
        unique: bool = False,
        properties: bool = False,
        targets: Mapping[str, float] | None = None,
    ) -> list[Sample]:
        """``n`` molecules: each with ``.smiles``, ``.valid``, ``.mol`` (RDKit) and, with
        ``properties``, ``.properties`` (QED, logP, SA, molecular weight) of valid ones.

        The same seed and settings give the same molecules (as ``molgan sample`` and the HTTP
        API do). ``valid_only`` and ``unique`` keep sampling, up to 20 n raw samples, so fewer
        than ``n`` may come back. ``targets`` asks a conditional model (``conditions``) for
        property values, e.g. ``{"logp": 1.5, "qed": 0.5}``; ``TargetError`` (a ValueError)
        names one it cannot take.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        used = self.settings(mode, temperature, min_p)
        found = sample_filtered(
            self.sampler, n, seed=seed, settings=used, valid_only=valid_only, unique=unique,
            targets=targets,
        ).samples
        if not properties:
            return found
        # Generated molecules repeat; each distinct one is described once.
        described: dict[str, dict[str, float]] = {}
        return [
            dataclasses.replace(s, properties=_properties_of(s, described)) if s.valid else s for s in found
        ]

    def evaluate(
        self,
        n: int = 10_000,
        *,
        seed: int = 0,
        mode: SamplingMode | None = None,
        temperature: float | None = None,
        min_p: float | None = None,
        fcd: bool = False,
        objectives: bool = False,
    ) -> dict[str, Any]:
        """The metrics ``molgan evaluate`` prints, for ``n`` raw samples of this model; with
        ``objectives``, also the MolGAN paper's property scores and hits (``molgan.objectives``)."""
        return evaluate_sampler(self.sampler, n, seed=seed, settings=self.settings(mode, temperature, min_p),
                                fcd=fcd, objectives=objectives)

    def score(self, smiles: Sequence[str | None], *, fcd: bool = False) -> dict[str, Any]:
        """Metrics of any SMILES against this model's dataset: novelty against its training
        split, FCD (``fcd=True``, needs the ``fcd`` extra) against its test split."""
        training, test = dataset_references(self.sampler.config.data)
        # The dataset's SMILES are canonical already.
        return evaluate_smiles(list(smiles), training, reference_smiles=test, compute_fcd=fcd).to_dict()


def _properties_of(sample: Sample, described: dict[str, dict[str, float]]) -> dict[str, float]:
    assert sample.smiles is not None  # a valid sample has a SMILES
    if sample.smiles not in described:
        described[sample.smiles] = properties(sample.smiles)
    return dict(described[sample.smiles])  # a record of its own per sample


def load(model: str | Path = "qm9", *, device: str = "cpu") -> Model:
    """A bundled model by name (``molgan.bundled_models()``) or any checkpoint file by path, its
    generator on ``device`` (``cpu``, ``auto``, ``cuda``, ``cuda:K`` or ``mps``).

    Raises ``CheckpointError`` (a ValueError) for an unknown name or an unusable file, and
    ``DeviceError`` (a ValueError) for a device this machine lacks.
    """
    return Model(MoleculeSampler.load(model, device=device))


def evaluate(
    smiles: Sequence[str | None],
    *,
    training: Collection[str] = (),
    reference: Sequence[str] | None = None,
    fcd: bool = False,
) -> dict[str, Any]:
    """Validity, uniqueness, novelty (against ``training``), V.U.N., mean QED/SA/logP, internal
    diversity and, with ``fcd``, the FCD to ``reference``; definitions in ``molgan.metrics``.

    ``smiles`` are judged as written (``None`` counts as an invalid sample); ``training`` may be
    written any way, it is canonicalised here.
    """
    known = {c for c in map(canonical_smiles, training) if c is not None}
    return evaluate_smiles(list(smiles), known, reference_smiles=reference, compute_fcd=fcd).to_dict()
