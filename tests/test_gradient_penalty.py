"""The cheaper gradient penalties: on a share of the batch, and lazily every k-th critic update.
Both must be the full penalty in expectation; the defaults must be the full penalty itself."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from molgan.config import Config, ModelConfig
from molgan.models import Graphs, build_discriminator
from molgan.training.trainer import Penalty, Trainer, critic_loss, gradient_penalty

N, A, E = 5, 4, 4


def draw(b: int, g: torch.Generator) -> tuple[Graphs, Graphs, torch.Tensor]:
    """B real one-hot graphs, B relaxed fake ones and B interpolation weights, independent rows."""
    real = Graphs.one_hot(torch.randint(A, (b, N), generator=g), torch.randint(E, (b, N, N), generator=g),
                          A, E)
    fake = Graphs(torch.randn(b, N, A, generator=g).softmax(-1),
                  torch.randn(b, N, N, E, generator=g).softmax(-1))
    return real, fake, torch.rand(b, generator=g)


@pytest.fixture(scope="module")
def critic() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(gcn_dims=(8, 6), aggregation_dim=7, head_dims=(9,))
    return build_discriminator(cfg, A, E)


def test_the_penalty_on_a_share_of_the_batch_is_the_full_one_in_expectation(critic: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    differences = []
    for _ in range(300):
        real, fake, eps = draw(32, g)
        full = gradient_penalty(critic, real, fake, eps).item()
        share = gradient_penalty(critic, real[:8], fake[:8], eps[:8]).item()
        differences.append(share - full)
    mean, spread = statistics.fmean(differences), statistics.stdev(differences)
    # Unbiased: the mean difference is within 4 standard errors of 0; and the share is a noisy
    # estimate, not the same number (which would make the check empty).
    assert abs(mean) < 4 * spread / len(differences) ** 0.5
    assert spread > 1e-3


def test_the_loss_takes_the_share_and_the_weight_it_is_given(critic: torch.nn.Module) -> None:
    real, fake, eps = draw(12, torch.Generator().manual_seed(5))
    plain, w, none = critic_loss(critic, real, fake, eps, Penalty(0.0))
    assert none is None
    torch.testing.assert_close(plain, -w)
    loss, _, gp = critic_loss(critic, real, fake, eps, Penalty(7.0, 4))
    assert gp is not None
    torch.testing.assert_close(gp, gradient_penalty(critic, real[:4], fake[:4], eps[:4]))
    torch.testing.assert_close(loss, plain + 7.0 * gp)
    joint, _, _ = critic_loss(critic, real, fake, eps, Penalty(7.0, 4), joint=True)
    torch.testing.assert_close(joint, loss)


def trainer(debug_config: Callable[..., Config], tmp_path: Path, *overrides: str) -> Trainer:
    return Trainer(debug_config(*overrides), tmp_path / "run", progress=False)


def test_a_lazy_penalty_keeps_its_average_weight(debug_config: Callable[..., Config], tmp_path: Path) -> None:
    lazy = trainer(debug_config, tmp_path, "train.gp_every=3", "train.gp_weight=10")
    weights = [lazy.penalty(update).weight for update in range(12)]
    assert weights == [0.0, 0.0, 30.0] * 4
    assert statistics.fmean(weights) == 10.0
    every = trainer(debug_config, tmp_path, "train.gp_weight=10")
    assert [every.penalty(u) for u in range(3)] == [Penalty(10.0)] * 3  # the default: all of it


def test_a_share_counts_whole_packs(debug_config: Callable[..., Config], tmp_path: Path) -> None:
    # Batch 12: a quarter is 3 graphs; in packs of 2, a quarter of 6 packs rounds up to 2 packs.
    assert trainer(debug_config, tmp_path, "train.gp_fraction=0.25").penalty(0).size == 3
    assert trainer(debug_config, tmp_path, "train.gp_fraction=0.25", "model.pack=2").penalty(0).size == 4
    assert trainer(debug_config, tmp_path, "train.gp_fraction=0.01").penalty(0).size == 1


def test_a_lazy_run_logs_the_last_penalty_and_trains(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    run = trainer(debug_config, tmp_path, "train.gp_every=2", "train.gp_fraction=0.5",
                  "train.critic_joint_forward=true", "train.n_critic=3")
    first = run.train_step(run.tau())  # updates 0, 1 (penalised), 2
    assert "gp" in first
    run.state.step += 1
    second = run.train_step(run.tau())  # updates 3 (penalised), 4, 5 (penalised)
    assert "gp" in second and second["gp"] != first["gp"]


def test_a_bfloat16_critic_keeps_float32_weights_and_matches_float32_closely(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    runs = {dtype: trainer(debug_config, tmp_path / dtype, f"train.critic_dtype={dtype}")
            for dtype in ("float32", "bfloat16")}
    stats = {dtype: run.critic_step(run.tau(), 0) for dtype, run in runs.items()}
    assert all(p.dtype == torch.float32 for p in runs["bfloat16"].discriminator.parameters())
    # Same seed, same batch: the losses agree to bfloat16's precision, and are not identical.
    assert stats["bfloat16"]["d_loss"] == pytest.approx(stats["float32"]["d_loss"], rel=0.05, abs=0.05)
    assert stats["bfloat16"]["d_loss"] != stats["float32"]["d_loss"]
    weights = {dtype: list(run.discriminator.parameters()) for dtype, run in runs.items()}
    for a, b in zip(weights["float32"], weights["bfloat16"], strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=2e-3)


def test_auto_critic_dtype_is_bfloat16_exactly_where_the_device_computes_it_natively(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    from molgan.device import fast_bfloat16

    auto = trainer(debug_config, tmp_path / "auto", "train.critic_dtype=auto")
    assert auto.critic_bfloat16 == fast_bfloat16(torch.device("cpu"))
    chosen = "bfloat16" if auto.critic_bfloat16 else "float32"
    explicit = trainer(debug_config, tmp_path / chosen, f"train.critic_dtype={chosen}")
    assert auto.critic_step(auto.tau(), 0) == explicit.critic_step(explicit.tau(), 0)
    assert not trainer(debug_config, tmp_path / "f32", "train.critic_dtype=float32").critic_bfloat16
