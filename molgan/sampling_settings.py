"""How graphs are taken from the generator: sampling mode, temperature and min-p, and their rules.

The rules live here alone; the checkpoint's config, the command line, the HTTP API and the Gumbel
functions all check through them, so a value is accepted or refused the same way everywhere:

* ``mode`` is ``argmax`` or ``gumbel``;
* ``temperature`` is a finite number > 0;
* ``min_p`` is in [0, 1);
* ``argmax`` has neither a temperature nor a min-p, ``gumbel`` has both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

SamplingMode = Literal["argmax", "gumbel"]
SAMPLING_MODES: tuple[str, ...] = get_args(SamplingMode)


class SamplingDefaults(Protocol):
    """Default settings to resolve a call's over: a checkpoint's ``sampling`` config section
    (``molgan.config.SamplingConfig``) or the server's settings."""

    @property
    def mode(self) -> str: ...
    @property
    def temperature(self) -> float: ...
    @property
    def min_p(self) -> float: ...


class SamplingError(ValueError):
    """A sampling setting that breaks a rule.

    ``field`` names the setting (``mode``, ``temperature`` or ``min_p``) and ``problem`` says what
    is wrong with it, so that each interface can name the setting its own way (``--min-p``,
    ``"min_p"``).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem

    @property
    def option(self) -> str:
        """The message as a command line names the setting: ``--min-p must be in [0, 1), ...``."""
        return f"--{self.field.replace('_', '-')} {self.problem}"


def check_mode(mode: str) -> SamplingMode:
    """``mode`` itself, or SamplingError unless it is ``argmax`` or ``gumbel``."""
    if mode not in SAMPLING_MODES:
        raise SamplingError("mode", f"must be argmax or gumbel, got {mode!r}")
    return mode  # type: ignore[return-value]


def check_temperature(temperature: float) -> float:
    """``temperature`` itself, or SamplingError unless it is a finite number > 0."""
    # Written so that NaN fails too: every comparison with NaN is false.
    if not (temperature > 0 and math.isfinite(temperature)):
        raise SamplingError("temperature", f"must be a finite number > 0, got {temperature!r}")
    return temperature


def check_min_p(min_p: float) -> float:
    """``min_p`` itself, or SamplingError unless it is in [0, 1)."""
    if not 0.0 <= min_p < 1.0:
        raise SamplingError("min_p", f"must be in [0, 1), got {min_p!r}")
    return min_p


@dataclass(frozen=True)
class SamplingSettings:
    """What one sampling call uses; checked on construction, so a value that exists is valid.

    ``temperature`` and ``min_p`` are ``None`` for argmax and numbers for gumbel.
    """

    mode: SamplingMode
    temperature: float | None = None
    min_p: float | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.mode == "argmax":
            for field in ("temperature", "min_p"):
                if getattr(self, field) is not None:
                    raise SamplingError(field, "applies to mode 'gumbel' only")
            return
        for field, check in (("temperature", check_temperature), ("min_p", check_min_p)):
            value = getattr(self, field)
            if value is None:
                raise SamplingError(field, "is required by mode 'gumbel'")
            check(value)

    @classmethod
    def resolve(
        cls,
        defaults: SamplingDefaults,
        mode: str | None = None,
        temperature: float | None = None,
        min_p: float | None = None,
    ) -> SamplingSettings:
        """The settings of a call that gives ``mode``, ``temperature`` and ``min_p`` (``None``:
        not given) over a checkpoint's ``defaults``.

        A given temperature or min-p implies gumbel unless ``mode`` says otherwise; what is not
        given comes from ``defaults``. A given temperature or min-p with mode argmax is an error
        rather than ignored, since the caller evidently expected it to matter.
        """
        if mode is None:
            mode = "gumbel" if temperature is not None or min_p is not None else defaults.mode
        if mode != "gumbel":  # argmax, or a mode that construction refuses
            return cls(mode, temperature, min_p)  # type: ignore[arg-type]
        return cls(
            "gumbel",
            defaults.temperature if temperature is None else temperature,
            defaults.min_p if min_p is None else min_p,
        )
