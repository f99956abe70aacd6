"""Gumbel-Max sampling, the Gumbel-Softmax relaxation and straight-through estimators.

Background (Maddison et al. 2017; Jang et al. 2017; Bengio et al. 2013):

* Gumbel-Max: ``argmax_i(logits_i + g_i)`` with ``g_i ~ Gumbel(0, 1)`` is an *exact* sample of
  ``Categorical(softmax(logits))``. It is not differentiable.
* Gumbel-Softmax: ``softmax((logits + g) / tau)`` is a differentiable relaxation of that sample.
  As ``tau -> 0`` it approaches the one-hot sample, as ``tau -> inf`` the uniform vector.
* Straight-through (ST): use a discrete one-hot in the forward pass and pretend its Jacobian is
  that of a soft surrogate in the backward pass. ST Gumbel-Softmax uses the Gumbel-Softmax sample as
  the surrogate, plain ST the noiseless softmax.

Masked classes carry a logit of ``-inf``; no estimator here ever selects them (the Gumbel noise
is finite, so ``-inf + g`` stays ``-inf``). At least one class per row must be unmasked.

Temperatures and min-p values are checked by the rules of ``molgan.sampling_settings``, the same
that test-time sampling settings follow.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from molgan.sampling_settings import check_min_p, check_temperature

Estimator = Literal["softmax", "gumbel", "st_gumbel", "st"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)

Schedule = Literal["constant", "exponential", "linear", "cosine"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


def sample_gumbel(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise of the given shape, always finite.

    ``-log(-log(u))`` is infinite at ``u = 0`` and ``u = 1``; ``torch.rand`` can return 0, and
    in low precision ``1 - eps`` rounds to 1. Clamping ``u`` into ``[tiny, 1 - eps]`` bounds the
    noise to about ``[-4.5, 16]`` in float32 and changes the distribution by less than ``eps``.
    """
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    info = torch.finfo(dtype)
    u = u.clamp_(min=info.tiny, max=1.0 - info.eps)
    return -torch.log(-torch.log(u))


def gumbel_max(
    logits: torch.Tensor,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    dim: int = -1,
) -> torch.Tensor:
    """Exact categorical sample ``argmax(logits / tau + g)`` along ``dim``.

    With ``tau = 1`` the sample follows ``softmax(logits)``; ``tau`` sharpens (< 1) or flattens
    (> 1) that distribution to ``softmax(logits / tau)``. Returns integer class indices with ``dim``
    removed. Not differentiable.
    """
    check_temperature(tau)
    g = sample_gumbel(logits.shape, generator, device=logits.device, dtype=_float_dtype(logits))
    return (logits / tau + g).argmax(dim=dim)


def truncate_min_p(logits: torch.Tensor, min_p: float, dim: int = -1) -> torch.Tensor:
    """Mask (to ``-inf``) every class less likely than ``min_p`` times the most likely one.

    Min-p truncation (as in language-model sampling): a confident choice loses its long tail of
    unlikely classes, an uncertain one keeps all its plausible classes. ``min_p = 0`` returns the
    logits unchanged; the most likely class always survives. The result is unnormalised.
    """
    check_min_p(min_p)
    if min_p == 0.0:
        return logits
    floor = logits.max(dim=dim, keepdim=True).values + math.log(min_p)
    return logits.masked_fill(logits < floor, float("-inf"))


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float,
    hard: bool = False,
    generator: torch.Generator | None = None,
    dim: int = -1,
) -> torch.Tensor:
    """Gumbel-Softmax sample ``softmax((logits + g) / tau)`` along ``dim``.

    With ``hard=True`` the straight-through variant: the forward value is exactly the one-hot of the
    soft sample's argmax, the gradient is the gradient of the soft sample.
    """
    check_temperature(tau)
    g = sample_gumbel(logits.shape, generator, device=logits.device, dtype=_float_dtype(logits))
    soft = F.softmax((logits + g) / tau, dim=dim)
    return _straight_through(soft, dim) if hard else soft


def relax(
    logits: torch.Tensor,
    estimator: Estimator,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    dim: int = -1,
) -> torch.Tensor:
    """Turn logits into a (relaxed or discrete) one-hot tensor of the same shape.

    * ``softmax``: ``softmax(logits / tau)``, no noise, soft.
    * ``gumbel``: Gumbel-Softmax, soft.
    * ``st_gumbel``: ST Gumbel-Softmax, one-hot forward, Gumbel-Softmax backward (the default).
    * ``st``: one-hot of ``argmax(logits)`` forward, ``softmax(logits / tau)`` backward, no noise.
    """
    if estimator == "softmax":
        check_temperature(tau)
        return F.softmax(logits / tau, dim=dim)
    if estimator == "gumbel":
        return gumbel_softmax(logits, tau, hard=False, generator=generator, dim=dim)
    if estimator == "st_gumbel":
        return gumbel_softmax(logits, tau, hard=True, generator=generator, dim=dim)
    if estimator == "st":
        check_temperature(tau)
        return _straight_through(F.softmax(logits / tau, dim=dim), dim)
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def _straight_through(soft: torch.Tensor, dim: int) -> torch.Tensor:
    # `soft - soft.detach()` is exactly 0.0 in the forward pass, so the value is exactly one-hot
    # (the common `hard - soft.detach() + soft` is off by rounding), while its gradient is soft's.
    index = soft.argmax(dim=dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return hard + (soft - soft.detach())


def _float_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


def temperature(
    step: int,
    total_steps: int,
    schedule: Schedule = "exponential",
    tau_start: float = 1.0,
    tau_min: float = 0.1,
) -> float:
    """Temperature at ``step`` of an annealing schedule from ``tau_start`` to ``tau_min``.

    The schedule reaches ``tau_min`` at ``total_steps`` and stays there; it is never below
    ``tau_min``, which must be > 0, so the temperature never reaches 0.
    """
    check_temperature(tau_min)
    check_temperature(tau_start)
    if tau_start < tau_min:
        raise ValueError(f"tau_start ({tau_start}) must be >= tau_min ({tau_min})")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    p = 1.0 if total_steps <= 0 else min(max(step / total_steps, 0.0), 1.0)
    if schedule == "constant":
        tau = tau_start
    elif schedule == "linear":
        tau = tau_start + (tau_min - tau_start) * p
    elif schedule == "exponential":
        tau = tau_start * (tau_min / tau_start) ** p
    else:  # cosine
        tau = tau_min + 0.5 * (tau_start - tau_min) * (1.0 + math.cos(math.pi * p))
    return max(tau, tau_min)
