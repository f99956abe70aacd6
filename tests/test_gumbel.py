"""The estimators of molgan.gumbel against the properties the theory promises."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from molgan.gumbel import (
    ESTIMATORS,
    SCHEDULES,
    gumbel_max,
    gumbel_softmax,
    relax,
    sample_gumbel,
    temperature,
    truncate_min_p,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gumbel_noise_has_the_gumbel_moments() -> None:
    g = sample_gumbel((400_000,), gen(1))
    euler_gamma = 0.5772156649
    assert g.mean().item() == pytest.approx(euler_gamma, abs=0.01)
    assert g.var().item() == pytest.approx(math.pi**2 / 6, abs=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gumbel_noise_is_finite_at_the_uniform_endpoints(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force the uniform draw to its extremes, 0 and 1, where -log(-log(u)) is infinite.
    def extremes(shape, generator=None, device=None, dtype=torch.float32):
        return torch.tensor([0.0, 1.0, 0.5], dtype=dtype).expand(*shape[:-1], 3).clone()

    monkeypatch.setattr(torch, "rand", extremes)
    g = sample_gumbel((4, 3), dtype=dtype)
    assert torch.isfinite(g).all()
    assert g[0, 0] < g[0, 2] < g[0, 1]


def test_gumbel_max_frequencies_match_softmax() -> None:
    logits = torch.tensor([1.5, 0.2, -1.0, 0.0, 2.2, -3.0])
    n = 200_000
    draws = gumbel_max(logits.expand(n, -1), generator=gen(2))
    counts = torch.bincount(draws, minlength=logits.numel()).double()
    expected = F.softmax(logits.double(), dim=0) * n
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    # 5 degrees of freedom: the 99.9% quantile of chi-square is 20.5.
    assert chi2 < 20.5
    assert (counts / n - expected / n).abs().max().item() < 0.005


def test_gumbel_max_temperature_samples_the_tempered_distribution() -> None:
    logits = torch.tensor([1.0, 0.0, -0.5])
    n = 150_000
    draws = gumbel_max(logits.expand(n, -1), tau=2.0, generator=gen(3))
    freq = torch.bincount(draws, minlength=3).double() / n
    assert torch.allclose(freq, F.softmax(logits.double() / 2.0, dim=0), atol=0.006)


def test_soft_samples_approach_one_hot_as_tau_goes_to_zero() -> None:
    logits = torch.randn(2_000, 5, generator=gen(4))
    peak = {}
    for tau in (10.0, 1.0, 0.1, 0.01):
        y = gumbel_softmax(logits, tau, generator=gen(5))
        assert torch.allclose(y.sum(-1), torch.ones(2_000), atol=1e-5)
        peak[tau] = y.max(-1).values.mean().item()
    assert peak[10.0] < peak[1.0] < peak[0.1] < peak[0.01]
    assert peak[0.01] > 0.99
    # Same noise: the argmax of the soft sample is the Gumbel-Max sample at every temperature.
    hard_index = gumbel_max(logits, generator=gen(5))
    assert torch.equal(gumbel_softmax(logits, 0.01, generator=gen(5)).argmax(-1), hard_index)


def test_soft_samples_approach_uniform_as_tau_grows() -> None:
    logits = torch.randn(1_000, 4, generator=gen(6)) * 3
    y = gumbel_softmax(logits, 1e4, generator=gen(7))
    assert torch.allclose(y, torch.full_like(y, 0.25), atol=1e-3)


def test_straight_through_forward_is_exactly_one_hot() -> None:
    logits = torch.randn(512, 7, generator=gen(8), requires_grad=True)
    y = gumbel_softmax(logits, 0.7, hard=True, generator=gen(9))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y.detach().sum(-1), torch.ones(512))


def test_straight_through_gradient_is_the_soft_gradient() -> None:
    torch.manual_seed(0)  # only for the weights below; the estimator uses its own generator
    weights = torch.randn(6, 5)
    logits_a = torch.randn(6, 5, generator=gen(10), requires_grad=True)
    logits_b = logits_a.detach().clone().requires_grad_(True)

    hard = gumbel_softmax(logits_a, 0.5, hard=True, generator=gen(11))
    (hard * weights).sum().backward()
    soft = gumbel_softmax(logits_b, 0.5, hard=False, generator=gen(11))
    (soft * weights).sum().backward()

    assert logits_a.grad is not None and logits_b.grad is not None
    assert logits_a.grad.abs().sum() > 0
    assert torch.allclose(logits_a.grad, logits_b.grad, atol=1e-6)
    # ... and differs from what a loss on the plain soft *value* would give (the forward is hard).
    assert not torch.allclose(hard.detach(), soft.detach())


def test_plain_straight_through_is_argmax_forward_softmax_backward() -> None:
    logits = torch.randn(8, 4, generator=gen(12), requires_grad=True)
    y = relax(logits, "st", tau=1.0)
    assert torch.equal(y.detach(), F.one_hot(logits.argmax(-1), 4).float())
    weights = torch.randn(8, 4, generator=gen(13))
    (y * weights).sum().backward()
    expected = torch.autograd.grad((F.softmax(logits, -1) * weights).sum(), logits)[0]
    assert torch.allclose(logits.grad, expected, atol=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_masked_logits_are_never_sampled(estimator: str) -> None:
    logits = torch.randn(20_000, 5, generator=gen(14)) * 4
    logits[:, 1] = float("-inf")
    logits[:, 3] = float("-inf")
    y = relax(logits, estimator, tau=0.5, generator=gen(15))
    assert torch.isfinite(y).all()
    assert y[:, [1, 3]].abs().max().item() == 0.0
    draws = gumbel_max(logits, generator=gen(16))
    assert not torch.isin(draws, torch.tensor([1, 3])).any()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_extreme_float32_logits_stay_finite(estimator: str) -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])
    logits.requires_grad_(True)
    for tau in (1e-3, 1.0, 1e3):
        y = relax(logits, estimator, tau=tau, generator=gen(17))
        (y * torch.arange(3.0)).sum().backward()
        assert torch.isfinite(y).all()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


def test_estimators_reject_a_zero_or_negative_temperature() -> None:
    logits = torch.zeros(2, 3)
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            gumbel_softmax(logits, tau)
        with pytest.raises(ValueError, match="temperature"):
            gumbel_max(logits, tau)
    with pytest.raises(ValueError, match="unknown estimator"):
        relax(logits, "argmax")  # type: ignore[arg-type]


def test_same_generator_seed_gives_the_same_sample() -> None:
    logits = torch.randn(64, 9, 5, generator=gen(18))
    a = relax(logits, "st_gumbel", 1.0, generator=gen(19))
    b = relax(logits, "st_gumbel", 1.0, generator=gen(19))
    c = relax(logits, "st_gumbel", 1.0, generator=gen(20))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_run_from_start_to_min_and_never_below(schedule: str) -> None:
    taus = [temperature(s, 1000, schedule, 2.0, 0.2) for s in range(0, 3001, 50)]
    assert taus[0] == pytest.approx(2.0)
    assert min(taus) >= 0.2
    if schedule != "constant":
        assert taus[-1] == pytest.approx(0.2)
        assert temperature(1000, 1000, schedule, 2.0, 0.2) == pytest.approx(0.2)
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(taus))  # monotone
        assert 0.2 < temperature(500, 1000, schedule, 2.0, 0.2) < 2.0


def test_schedule_shapes_at_midpoint() -> None:
    assert temperature(500, 1000, "linear", 2.0, 0.2) == pytest.approx(1.1)
    assert temperature(500, 1000, "exponential", 2.0, 0.2) == pytest.approx(math.sqrt(0.4))
    assert temperature(500, 1000, "cosine", 2.0, 0.2) == pytest.approx(1.1)
    assert temperature(250, 1000, "cosine", 2.0, 0.2) > temperature(250, 1000, "linear", 2.0, 0.2)


def test_schedule_rejects_a_zero_floor() -> None:
    with pytest.raises(ValueError):
        temperature(10, 100, "linear", 1.0, 0.0)
    with pytest.raises(ValueError):
        temperature(10, 100, "linear", 0.1, 1.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        temperature(10, 100, "step", 1.0, 0.1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ min-p truncation


def test_min_p_keeps_exactly_the_classes_above_the_threshold() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.12, 0.08], [0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]])
    truncated = truncate_min_p(probs.log(), 0.2)
    # Thresholds: 0.2 * 0.5 = 0.1, 0.2 * 0.97 = 0.194, 0.2 * 0.25 = 0.05.
    kept = torch.isfinite(truncated)
    assert kept.tolist() == [[True, True, True, False], [True, False, False, False], [True] * 4]
    torch.testing.assert_close(truncated[kept], probs.log()[kept])
    torch.testing.assert_close(truncate_min_p(probs.log(), 0.0), probs.log())


def test_min_p_sampling_draws_the_renormalised_truncated_distribution() -> None:
    probs = torch.tensor([0.5, 0.3, 0.12, 0.08])
    logits = truncate_min_p(probs.log().expand(200_000, 4), 0.2)
    counts = torch.bincount(gumbel_max(logits, 1.0, gen(3)), minlength=4).double()
    expected = torch.tensor([0.5, 0.3, 0.12, 0.0]) / 0.92
    assert counts[3] == 0
    torch.testing.assert_close(counts / counts.sum(), expected.double(), atol=4e-3, rtol=0)


def test_min_p_out_of_range_is_an_error() -> None:
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="min_p"):
            truncate_min_p(torch.zeros(3), bad)
