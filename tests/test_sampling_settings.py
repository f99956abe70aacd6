"""SamplingSettings: the one set of rules for mode, temperature and min-p, and how a call's values
resolve over a checkpoint's defaults."""

from __future__ import annotations

import dataclasses
import math

import pytest

from molgan.config import ConfigError, SamplingConfig, config_from_dict
from molgan.gumbel import gumbel_max, truncate_min_p
from molgan.sampling_settings import SamplingError, SamplingSettings

BAD_TEMPERATURES = [0.0, -1.0, math.inf, -math.inf, math.nan]
BAD_MIN_PS = [1.0, -0.1, 1.5, math.inf, math.nan]
GUMBEL_DEFAULTS = SamplingConfig(mode="gumbel", temperature=1.3, min_p=0.2)
ARGMAX_DEFAULTS = SamplingConfig(mode="argmax", temperature=0.9, min_p=0.05)


def test_valid_settings_keep_their_values() -> None:
    assert SamplingSettings("argmax") == SamplingSettings("argmax", None, None)
    settings = SamplingSettings("gumbel", 0.7, 0.1)
    assert (settings.mode, settings.temperature, settings.min_p) == ("gumbel", 0.7, 0.1)
    assert SamplingSettings("gumbel", 1e-6, 0.0).min_p == 0.0
    assert SamplingSettings("gumbel", 1e6, 0.999).temperature == 1e6


def test_settings_are_frozen() -> None:
    settings = SamplingSettings("gumbel", 1.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.temperature = math.inf  # type: ignore[misc]


@pytest.mark.parametrize("bad", BAD_TEMPERATURES)
def test_temperature_must_be_finite_and_positive(bad: float) -> None:
    with pytest.raises(SamplingError, match="temperature must be a finite number > 0") as caught:
        SamplingSettings("gumbel", bad, 0.0)
    assert caught.value.field == "temperature"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("bad", BAD_MIN_PS)
def test_min_p_must_be_in_zero_one(bad: float) -> None:
    with pytest.raises(SamplingError, match=r"min_p must be in \[0, 1\)") as caught:
        SamplingSettings("gumbel", 1.0, bad)
    assert caught.value.field == "min_p"


@pytest.mark.parametrize("bad", ["bogus", "", "Argmax", "gumbel "])
def test_mode_must_be_argmax_or_gumbel(bad: str) -> None:
    with pytest.raises(SamplingError, match="mode must be argmax or gumbel") as caught:
        SamplingSettings(bad)  # type: ignore[arg-type]
    assert caught.value.field == "mode"


def test_argmax_has_no_temperature_or_min_p_and_gumbel_needs_both() -> None:
    with pytest.raises(SamplingError, match="temperature applies to mode 'gumbel' only"):
        SamplingSettings("argmax", 1.0)
    with pytest.raises(SamplingError, match="min_p applies to mode 'gumbel' only") as caught:
        SamplingSettings("argmax", None, 0.1)
    assert caught.value.field == "min_p"
    with pytest.raises(SamplingError, match="temperature is required"):
        SamplingSettings("gumbel", None, 0.1)
    with pytest.raises(SamplingError, match="min_p is required"):
        SamplingSettings("gumbel", 1.0)


def test_error_message_is_field_then_problem() -> None:
    with pytest.raises(SamplingError) as caught:
        SamplingSettings("gumbel", math.inf, 0.0)
    error = caught.value
    assert error.problem == "must be a finite number > 0, got inf"
    assert str(error) == f"{error.field} {error.problem}"


# ------------------------------------------------------------------------------ resolution


def test_nothing_given_is_the_defaults() -> None:
    assert SamplingSettings.resolve(GUMBEL_DEFAULTS) == SamplingSettings("gumbel", 1.3, 0.2)
    # An argmax checkpoint keeps a temperature and min-p for the calls that ask for gumbel.
    assert SamplingSettings.resolve(ARGMAX_DEFAULTS) == SamplingSettings("argmax")


def test_a_given_temperature_or_min_p_implies_gumbel() -> None:
    assert SamplingSettings.resolve(ARGMAX_DEFAULTS, temperature=0.5) == SamplingSettings("gumbel", 0.5, 0.05)
    assert SamplingSettings.resolve(ARGMAX_DEFAULTS, min_p=0.3) == SamplingSettings("gumbel", 0.9, 0.3)
    assert SamplingSettings.resolve(ARGMAX_DEFAULTS, "gumbel") == SamplingSettings("gumbel", 0.9, 0.05)
    assert SamplingSettings.resolve(GUMBEL_DEFAULTS, "argmax") == SamplingSettings("argmax")
    both = SamplingSettings.resolve(GUMBEL_DEFAULTS, "gumbel", 2.0, 0.0)
    assert both == SamplingSettings("gumbel", 2.0, 0.0)


def test_resolve_applies_the_rules_to_what_is_given() -> None:
    for bad in BAD_TEMPERATURES:
        with pytest.raises(SamplingError, match="temperature"):
            SamplingSettings.resolve(ARGMAX_DEFAULTS, temperature=bad)
    for bad in BAD_MIN_PS:
        with pytest.raises(SamplingError, match="min_p"):
            SamplingSettings.resolve(GUMBEL_DEFAULTS, "gumbel", min_p=bad)
    with pytest.raises(SamplingError, match="mode"):
        SamplingSettings.resolve(GUMBEL_DEFAULTS, "best", 1.0)
    with pytest.raises(SamplingError, match="temperature applies to mode 'gumbel' only"):
        SamplingSettings.resolve(GUMBEL_DEFAULTS, "argmax", temperature=1.0)


# ------------------------------------------------------------------------ the same rules elsewhere


@pytest.mark.parametrize(
    ("section", "field"),
    [({"temperature": bad}, "temperature") for bad in BAD_TEMPERATURES]
    + [({"min_p": bad}, "min_p") for bad in BAD_MIN_PS]
    + [({"mode": "bogus"}, "mode")],
)
def test_config_refuses_the_same_sampling_defaults(section: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"sampling\.{field}"):
        config_from_dict({"sampling": section})


def test_gumbel_functions_refuse_the_same_values() -> None:
    import torch

    logits = torch.zeros(2, 3)
    for bad in BAD_TEMPERATURES:
        with pytest.raises(SamplingError, match="temperature must be a finite number > 0"):
            gumbel_max(logits, bad)
    for bad in BAD_MIN_PS:
        with pytest.raises(SamplingError, match=r"min_p must be in \[0, 1\)"):
            truncate_min_p(logits, bad)
