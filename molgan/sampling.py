"""Sampling molecules from a trained generator: noise -> graphs -> SMILES.

``MoleculeSampler`` is what the CLI, the evaluation and the HTTP service share. It is built once
from a checkpoint and is cheap to call; every call takes its own seed, so the same seed and
settings give the same molecules.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rdkit import Chem

from molgan.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_state,
    resolve_checkpoint,
)
from molgan.chem import Vocab, decode_and_validate, sanitized_mol
from molgan.conditions import ConditionSet, no_targets
from molgan.config import Config, ConfigError, SamplingConfig, config_from_dict
from molgan.device import graphs_to_host, resolve_device
from molgan.models import Generator, build_generator
from molgan.sampling_settings import SamplingMode, SamplingSettings


@dataclass(frozen=True)
class Sample:
    """One generated graph: canonical SMILES (``None`` if RDKit cannot sanitize it) and strict
    validity (sanitizes and is one connected fragment)."""

    smiles: str | None
    valid: bool
    properties: dict[str, float] | None = field(default=None, compare=False)
    """QED, logP, SA and molecular weight when asked for (``molgan.Model.generate``)."""

    @functools.cached_property
    def mol(self) -> Chem.Mol | None:
        """The RDKit molecule, parsed on first use; None when the graph did not sanitize."""
        return sanitized_mol(self.smiles)


def generator_from_checkpoint(
    ckpt: Checkpoint, device: torch.device | None = None
) -> tuple[Generator, Config, Vocab]:
    """Rebuild the generator from a checkpoint's own metadata, on ``device`` (``None``: the CPU),
    and load its weights."""
    try:
        config = config_from_dict(ckpt.meta["config"])
        vocab = Vocab.from_dict(ckpt.meta["vocab"])
    except (KeyError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{ckpt.path}: metadata lacks a usable config or vocabulary: {exc}") from None
    generator = build_generator(config.model, vocab.max_atoms, vocab.num_atom_types, vocab.num_bond_types)
    generator.to(device if device is not None else "cpu")
    load_state(generator, ckpt.state_dict("generator"), f"generator weights in {ckpt.path}")
    generator.eval()
    return generator, config, vocab


Targets = Mapping[str, float]
"""What a caller asks a conditional model for: a value per property (``{"logp": 1.5}``); the
properties not named are left to the model."""


class MoleculeSampler:
    """A generator with its vocabulary, default sampling settings and, for a conditional model,
    its conditions (``conditions``: the properties a call may give targets for, with their
    ranges; ``None`` for an unconditional model)."""

    def __init__(self, generator: Generator, vocab: Vocab, config: Config, meta: dict[str, Any]) -> None:
        self.generator = generator.eval()
        self.vocab = vocab
        self.config = config
        self.meta = meta
        self.conditions: ConditionSet | None = None
        if config.model.conditions:
            try:
                self.conditions = ConditionSet.from_list(meta["conditions"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"a conditional model without usable condition statistics: {exc}") from None
            if self.conditions.names != tuple(config.model.conditions):
                raise CheckpointError("the condition statistics do not match model.conditions")

    def check_targets(self, targets: Targets | None) -> dict[str, float]:
        """``targets`` checked against this model's conditions (TargetError, a ValueError, naming
        the first bad one: an unknown property, a value out of range, or any target at all for
        an unconditional model)."""
        if self.conditions is None:
            no_targets(targets)
            return {}
        return self.conditions.check(targets or {})

    @property
    def device(self) -> torch.device:
        """Where the generator runs and its noise is drawn."""
        return self.generator.device

    @classmethod
    def load(cls, model: str | Path | None = None, *, device: str = "cpu") -> MoleculeSampler:
        """From a bundled model's name (``"qm9"``) or a checkpoint file; ``None`` is the default
        bundled model (see ``molgan.checkpoint.resolve_checkpoint``). The generator runs on
        ``device`` (a name of ``molgan.device``; DeviceError if this machine lacks it).

        On the CPU a seed gives the same molecules on every machine; another device draws other
        random numbers, hence other molecules.
        """
        where = resolve_device(device)
        ckpt = load_checkpoint(resolve_checkpoint(model), map_location=where)
        generator, config, vocab = generator_from_checkpoint(ckpt, where)
        return cls(generator, vocab, config, ckpt.meta)

    @property
    def default_mode(self) -> SamplingMode:
        return self.config.sampling.mode

    @property
    def default_temperature(self) -> float:
        return self.config.sampling.temperature

    @property
    def default_min_p(self) -> float:
        return self.config.sampling.min_p

    def settings(
        self, mode: str | None = None, temperature: float | None = None, min_p: float | None = None
    ) -> SamplingSettings:
        """The settings of a call that gives these (``None``: not given) over the checkpoint's
        defaults; see ``SamplingSettings.resolve``. Raises SamplingError for a bad value."""
        return SamplingSettings.resolve(self.config.sampling, mode, temperature, min_p)

    def with_defaults(
        self, mode: str | None = None, temperature: float | None = None, min_p: float | None = None
    ) -> MoleculeSampler:
        """The same generator with other default sampling settings (a server's own defaults).

        The settings are resolved as a call's would be; what is not given keeps the checkpoint's
        value, so a later call that asks for Gumbel-Max still finds a temperature and a min-p.
        Raises SamplingError for a bad value.
        """
        use = self.settings(mode, temperature, min_p)
        old = self.config.sampling
        sampling = SamplingConfig(
            mode=use.mode,
            temperature=old.temperature if use.temperature is None else use.temperature,
            min_p=old.min_p if use.min_p is None else use.min_p,
        )
        config = self.config.model_copy(update={"sampling": sampling})
        return MoleculeSampler(self.generator, self.vocab, config, self.meta)  # same conditions

    @torch.inference_mode()
    def graphs(
        self,
        n: int,
        *,
        seed: int | None = None,
        settings: SamplingSettings | None = None,
        targets: Targets | None = None,
        batch_size: int = 2048,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n integer graphs: atoms (n, N) and bonds (n, N, N), uint8 on the CPU, sampled with
        ``settings`` (``None``: the checkpoint's defaults), for ``targets`` (a conditional model;
        see ``check_targets``)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        wanted = self.check_targets(targets)
        use = settings if settings is not None else self.settings()
        rng = torch.Generator(self.device).manual_seed(secrets.randbits(63) if seed is None else seed)
        # Every graph asks for the same targets: one row of conditions, encoded once.
        asked = None if self.conditions is None else self.conditions.encode(wanted, 1, self.device)
        n_atoms = self.vocab.max_atoms
        atoms = torch.empty(n, n_atoms, dtype=torch.uint8)
        bonds = torch.empty(n, n_atoms, n_atoms, dtype=torch.uint8)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            noise = self.generator.noise(stop - start, rng)
            logits = self.generator(noise, None if asked is None else asked.expand(stop - start, -1))
            atoms[start:stop], bonds[start:stop] = graphs_to_host(*logits.sample(use, rng))
        return atoms, bonds

    def sample(
        self, n: int, *, seed: int | None = None, settings: SamplingSettings | None = None,
        targets: Targets | None = None,
    ) -> list[Sample]:
        """n raw samples in order, decoded to canonical SMILES (``settings`` and ``targets`` as in
        ``graphs``)."""
        atoms, bonds = self.graphs(n, seed=seed, settings=settings, targets=targets)
        smiles, valid = decode_and_validate(atoms, bonds, self.vocab)
        return [Sample(s, v) for s, v in zip(smiles, valid, strict=True)]

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary: name, step, vocabulary, default sampling, evaluation metrics."""
        return {
            "name": self.config.name,
            "step": self.meta.get("step"),
            "vocab": self.vocab.to_dict(),
            "sampling": self.config.sampling.model_dump(),
            "z_dim": self.config.model.z_dim,
            "conditions": self.conditions.to_list() if self.conditions is not None else [],
            "metrics": self.meta.get("evaluation") or self.meta.get("metrics") or {},
            "versions": self.meta.get("versions", {}),
        }


@dataclass(frozen=True)
class FilteredSamples:
    """Result of ``MoleculeSampler.sample_filtered``."""

    samples: list[Sample]
    sampled: int
    """Raw samples drawn to find them."""
    requested: int

    @property
    def fell_short(self) -> bool:
        return len(self.samples) < self.requested


def sample_filtered(
    sampler: MoleculeSampler,
    n: int,
    *,
    seed: int | None = None,
    settings: SamplingSettings | None = None,
    valid_only: bool = False,
    unique: bool = False,
    max_attempts: int | None = None,
    targets: Targets | None = None,
) -> FilteredSamples:
    """Draw until ``n`` samples pass the filters or ``max_attempts`` raw samples were drawn.

    ``valid_only`` keeps strictly valid molecules; ``unique`` drops repeated SMILES (and, with it,
    invalid samples, which have none). Rounds are seeded from ``seed``, so the result is
    reproducible. Default cap: 20 n raw samples. ``settings`` and ``targets``: as in
    ``MoleculeSampler.graphs``.
    """
    sampler.check_targets(targets)  # before the first round, also when n is 0
    max_attempts = max(n, 20 * n) if max_attempts is None else max_attempts
    seed = secrets.randbits(62) if seed is None else seed
    # The first round uses `seed` itself, so without filters the result is `sampler.sample(n, seed)`;
    # later rounds draw their seeds from a generator seeded by `seed`, so that neighbouring seeds
    # share no rounds.
    round_seeds = torch.Generator().manual_seed(seed)
    round_seed = seed
    kept: list[Sample] = []
    seen: set[str] = set()
    drawn = 0
    while len(kept) < n and drawn < max_attempts:
        # Ask for what is missing plus headroom for the expected rejects, within the cap.
        want = n - len(kept)
        batch = min(max_attempts - drawn, want if not (valid_only or unique) else 2 * want + 16)
        for s in sampler.sample(batch, seed=round_seed, settings=settings, targets=targets):
            fresh = s.smiles is not None and s.smiles not in seen
            if (not valid_only or s.valid) and (not unique or fresh) and len(kept) < n:
                kept.append(s)
                if s.smiles is not None:
                    seen.add(s.smiles)
        drawn += batch
        round_seed = int(torch.randint(2**62, (1,), generator=round_seeds))
    return FilteredSamples(kept, drawn, n)
