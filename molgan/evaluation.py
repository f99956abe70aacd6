"""Evaluate a generator as `molgan evaluate` reports it: sample, decode, score against its data."""

from __future__ import annotations

import time
from typing import Any

from molgan.config import DataConfig
from molgan.data import dataset_from_config
from molgan.metrics import evaluate_smiles
from molgan.objectives import OBJECTIVES, HitRule, objective_metrics
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings


class DatasetUnavailable(ValueError):
    """The dataset a checkpoint's config names cannot be rebuilt (for novelty and FCD)."""


def dataset_splits(data: DataConfig) -> tuple[list[str], list[str], list[str]]:
    """The canonical SMILES of a dataset's (training, validation, test) splits, rebuilt from its
    config."""
    dataset = dataset_from_config(data)
    train, valid, test = (
        [dataset.smiles[i] for i in idx.tolist()]
        for idx in dataset.split(data.split_seed, data.fractions)
    )
    return train, valid, test


def dataset_references(data: DataConfig) -> tuple[set[str], list[str]]:
    """The canonical SMILES of a dataset's training split (for novelty) and of its test split
    (the FCD reference), rebuilt from its config."""
    train, _, test = dataset_splits(data)
    return set(train), test


def evaluate_sampler(
    sampler: MoleculeSampler,
    n: int = 10_000,
    *,
    seed: int = 0,
    settings: SamplingSettings | None = None,
    fcd: bool = False,
    objectives: bool = False,
    hits: dict[str, HitRule] | None = None,
) -> dict[str, Any]:
    """Metrics of ``n`` raw samples (no valency correction, no filtering), drawn with ``settings``
    (``None``: the checkpoint's defaults). With ``objectives``, also the MolGAN paper's normalized
    QED, logP and SA scores and the hits per 10,000 samples (:mod:`molgan.objectives`; ``hits``
    replaces some of the default hit rules).

    Novelty is measured against the training split of the checkpoint's own dataset and FCD
    against its test split, both rebuilt from the config stored in the checkpoint.
    """
    used = settings if settings is not None else sampler.settings()
    try:
        train_smiles, reference = dataset_references(sampler.config.data)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetUnavailable(f"cannot load the checkpoint's dataset: {exc}") from exc

    started = time.perf_counter()
    samples = sampler.sample(n, seed=seed, settings=used)
    sampling_s = time.perf_counter() - started
    smiles = [s.smiles for s in samples]
    metrics = evaluate_smiles(
        smiles, train_smiles, reference_smiles=reference, compute_fcd=fcd
    ).to_dict()
    if objectives:
        metrics |= objective_metrics(smiles, OBJECTIVES, hits)
    metrics |= {
        "seed": seed,
        "mode": used.mode,
        "temperature": used.temperature,
        "min_p": used.min_p,
        "sampling_seconds": round(sampling_s, 3),
        "step": sampler.meta.get("step"),
    }
    return metrics
