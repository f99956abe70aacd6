"""MoleculeSampler and sample_filtered: seeds, modes, temperature, filters, the attempt cap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from molgan.chem import is_valid, to_mol
from molgan.sampling import MoleculeSampler, Sample, sample_filtered
from molgan.sampling_settings import SamplingError, SamplingSettings
from molgan.training.run_dir import LAST


@pytest.fixture(scope="module")
def toy(toy_checkpoint: Path) -> MoleculeSampler:
    return MoleculeSampler.load(toy_checkpoint)


def smiles(samples: list[Sample]) -> list[str | None]:
    return [s.smiles for s in samples]


def test_samples_are_decoded_and_validity_is_strict(toy: MoleculeSampler) -> None:
    samples = toy.sample(200, seed=0, settings=toy.settings("gumbel"))
    assert len(samples) == 200
    kinds = {"valid": 0, "fragments": 0, "unsanitizable": 0}
    for s in samples:
        if s.smiles is None:
            assert not s.valid
            kinds["unsanitizable"] += 1
        else:
            assert to_mol(s.smiles) is not None
            assert s.valid == is_valid(s.smiles) == ("." not in s.smiles)
            kinds["valid" if s.valid else "fragments"] += 1
    # The toy generator is built to produce all three.
    assert all(count > 0 for count in kinds.values()), kinds


@pytest.mark.parametrize("mode", ["argmax", "gumbel"])
def test_same_seed_same_molecules_different_seed_different(toy: MoleculeSampler, mode: str) -> None:
    first = smiles(toy.sample(60, seed=3, settings=toy.settings(mode)))
    assert smiles(toy.sample(60, seed=3, settings=toy.settings(mode))) == first
    assert smiles(toy.sample(60, seed=4, settings=toy.settings(mode))) != first
    atoms, bonds = toy.graphs(60, seed=3, settings=toy.settings(mode))
    again = toy.graphs(60, seed=3, settings=toy.settings(mode))
    assert torch.equal(atoms, again[0]) and torch.equal(bonds, again[1])


def test_no_seed_draws_fresh_molecules(toy: MoleculeSampler) -> None:
    settings = toy.settings("gumbel")
    assert smiles(toy.sample(60, settings=settings)) != smiles(toy.sample(60, settings=settings))


def test_graphs_are_uint8_symmetric(toy: MoleculeSampler) -> None:
    atoms, bonds = toy.graphs(50, seed=0, settings=toy.settings("gumbel"))
    n = toy.vocab.max_atoms
    assert atoms.shape == (50, n) and bonds.shape == (50, n, n)
    assert atoms.dtype == bonds.dtype == torch.uint8
    assert torch.equal(bonds, bonds.transpose(1, 2))
    assert (bonds.diagonal(dim1=1, dim2=2) == 0).all()


def test_batched_sampling_returns_n_graphs(toy: MoleculeSampler) -> None:
    atoms, bonds = toy.graphs(25, seed=1, batch_size=4)
    assert atoms.shape[0] == bonds.shape[0] == 25


def gumbel(temperature: float, min_p: float = 0.0) -> SamplingSettings:
    return SamplingSettings("gumbel", temperature, min_p)


def test_default_settings_are_the_checkpoints(toy: MoleculeSampler) -> None:
    assert toy.default_mode == "argmax"
    default = toy.graphs(80, seed=5)
    argmax = toy.graphs(80, seed=5, settings=SamplingSettings("argmax"))
    assert torch.equal(default[0], argmax[0]) and torch.equal(default[1], argmax[1])
    sampled = toy.graphs(80, seed=5, settings=gumbel(1.0))
    assert not torch.equal(sampled[1], argmax[1])


def test_lower_temperature_gives_fewer_distinct_graphs(toy: MoleculeSampler) -> None:
    def distinct(t: float) -> int:
        atoms, bonds = toy.graphs(300, seed=0, settings=gumbel(t))
        return len(torch.cat([atoms, bonds.flatten(1)], dim=1).unique(dim=0))

    assert distinct(0.3) < distinct(1.0) < distinct(3.0)


def test_settings_resolve_what_a_call_leaves_out(toy: MoleculeSampler) -> None:
    assert toy.default_mode == "argmax"
    assert toy.settings() == SamplingSettings("argmax", None, None)
    # A given temperature or min_p implies gumbel; the rest comes from the checkpoint.
    assert toy.settings(temperature=0.5) == SamplingSettings("gumbel", 0.5, toy.default_min_p)
    assert toy.settings(min_p=0.3) == SamplingSettings("gumbel", toy.default_temperature, 0.3)
    assert toy.settings("gumbel") == SamplingSettings("gumbel", toy.default_temperature, toy.default_min_p)
    # An explicit argmax with a temperature or min_p is refused rather than silently ignored.
    with pytest.raises(SamplingError, match="temperature applies to mode 'gumbel' only"):
        toy.settings("argmax", temperature=0.5)
    with pytest.raises(SamplingError, match="min_p applies to mode 'gumbel' only"):
        toy.settings("argmax", min_p=0.3)


def test_min_p_trims_the_choices(toy: MoleculeSampler) -> None:
    plain = toy.graphs(400, seed=3, settings=gumbel(2.0))
    # A high min_p keeps only the choices close to the most likely one: fewer distinct graphs.
    def distinct(graphs: tuple[torch.Tensor, torch.Tensor]) -> int:
        return len(torch.cat([graphs[0], graphs[1].flatten(1)], dim=1).unique(dim=0))

    trimmed = toy.graphs(400, seed=3, settings=gumbel(2.0, 0.9))
    assert distinct(trimmed) < distinct(plain)


def test_bad_arguments(toy: MoleculeSampler) -> None:
    with pytest.raises(ValueError, match="n must be"):
        toy.sample(-1, seed=0)
    for bad in ({"temperature": 0.0}, {"min_p": 1.0}, {"mode": "bogus"}):
        with pytest.raises(SamplingError, match=next(iter(bad))):
            toy.settings(**bad)  # type: ignore[arg-type]
    assert toy.sample(0, seed=0) == []


def test_describe(toy: MoleculeSampler, debug_run: Path) -> None:
    info = MoleculeSampler.load(debug_run / LAST).describe()
    assert info["name"] == "debug" and info["step"] == 30 and info["z_dim"] == 7
    assert info["vocab"]["atoms"][0] == "*"
    assert info["sampling"] == {"mode": "argmax", "temperature": 1.0, "min_p": 0.0}
    assert "validity" in info["metrics"]
    assert "torch" in info["versions"]


# ------------------------------------------------------------------------------ filtered


def test_unfiltered_is_the_raw_samples(toy: MoleculeSampler) -> None:
    result = sample_filtered(toy, 40, seed=2, settings=toy.settings("gumbel"))
    assert result.samples == toy.sample(40, seed=2, settings=toy.settings("gumbel"))
    assert result.sampled == 40 and result.requested == 40 and not result.fell_short


def test_valid_only(toy: MoleculeSampler) -> None:
    raw = toy.sample(60, seed=2, settings=toy.settings("gumbel"))
    assert not all(s.valid for s in raw)
    result = sample_filtered(toy, 60, seed=2, settings=toy.settings("gumbel"), valid_only=True)
    assert len(result.samples) == 60 and not result.fell_short
    assert all(s.valid for s in result.samples)
    assert result.sampled > 60
    # Repeats are kept: only validity is filtered.
    assert len(set(smiles(result.samples))) < 60
    # Valid samples are kept in the order drawn; the first round draws 2 n + 16.
    first_round = [s for s in toy.sample(2 * 60 + 16, seed=2, settings=toy.settings("gumbel")) if s.valid]
    assert result.samples[: len(first_round)] == first_round[:60]


def test_unique(toy: MoleculeSampler) -> None:
    result = sample_filtered(toy, 30, seed=2, settings=toy.settings("gumbel"), unique=True)
    kept = smiles(result.samples)
    assert len(kept) == 30 and None not in kept
    assert len(set(kept)) == 30
    # Without valid_only, disconnected molecules may stay.
    assert any(not s.valid for s in result.samples)


def test_valid_only_and_unique(toy: MoleculeSampler) -> None:
    result = sample_filtered(toy, 25, seed=2, settings=toy.settings("gumbel"), valid_only=True, unique=True)
    assert len({s.smiles for s in result.samples}) == 25
    assert all(s.valid for s in result.samples)


def test_filtered_is_reproducible(toy: MoleculeSampler) -> None:
    a = sample_filtered(toy, 20, seed=9, settings=toy.settings("gumbel"), valid_only=True, unique=True)
    b = sample_filtered(toy, 20, seed=9, settings=toy.settings("gumbel"), valid_only=True, unique=True)
    c = sample_filtered(toy, 20, seed=10, settings=toy.settings("gumbel"), valid_only=True, unique=True)
    assert a == b
    assert smiles(a.samples) != smiles(c.samples)


def test_attempt_cap_reports_falling_short(toy: MoleculeSampler) -> None:
    # argmax sampling repeats a handful of molecules: 200 unique ones cannot be found.
    result = sample_filtered(toy, 200, seed=0, unique=True, max_attempts=500)
    assert result.fell_short
    assert result.sampled == 500
    assert 0 < len(result.samples) < 200
    assert len({s.smiles for s in result.samples}) == len(result.samples)


def test_default_cap_is_twenty_per_requested(debug_run: Path) -> None:
    # The briefly trained debug generator rarely draws a valid molecule.
    sampler = MoleculeSampler.load(debug_run / LAST)
    result = sample_filtered(sampler, 3, seed=0, valid_only=True)
    assert result.fell_short and len(result.samples) < 3
    assert all(s.valid for s in result.samples)
    assert result.sampled == 60


def test_cap_below_request(toy: MoleculeSampler) -> None:
    result = sample_filtered(toy, 50, seed=0, settings=toy.settings("gumbel"), max_attempts=10)
    assert result.sampled == 10 and len(result.samples) == 10 and result.fell_short
