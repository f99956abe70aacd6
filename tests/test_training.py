"""Training: the gradient penalty, a debug run end to end, reproducibility, resumption, stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from molgan.checkpoint import load_checkpoint
from molgan.cli import app
from molgan.config import Config, load_config
from molgan.models import Graphs
from molgan.sampling import MoleculeSampler
from molgan.training.run_dir import BEST, LAST
from molgan.training.trainer import Trainer, gradient_penalty, resume_trainer
from tests.conftest import DEBUG_CONFIG, REPO_ROOT

N, A, E, B = 4, 3, 2, 6


def graphs(seed: int, batch: int = B) -> Graphs:
    rng = torch.Generator().manual_seed(seed)
    return Graphs(torch.rand(batch, N, A, generator=rng), torch.rand(batch, N, N, E, generator=rng))


class LinearCritic(nn.Module):
    """D(atoms, bonds) = <w_a, atoms> + <w_b, bonds>, summed over the graphs of a pack."""

    def __init__(self, seed: int, pack: int = 1) -> None:
        super().__init__()
        rng = torch.Generator().manual_seed(seed)
        self.w_a = nn.Parameter(0.3 * torch.randn(N, A, generator=rng))
        self.w_b = nn.Parameter(0.3 * torch.randn(N, N, E, generator=rng))
        self.pack = pack

    def forward(self, atoms: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
        score = (atoms * self.w_a).sum((1, 2)) + (bonds * self.w_b).sum((1, 2, 3))
        return score.view(-1, self.pack).sum(1)


class DeadReluCritic(nn.Module):
    """Depends on its input, but with gradient exactly 0 there (inputs are >= 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.b = nn.Parameter(torch.tensor(0.5))

    def forward(self, atoms: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
        x = -atoms.sum((1, 2)) - bonds.sum((1, 2, 3)) - 1.0
        return self.w * torch.relu(x) + self.b


class ConstantCritic(nn.Module):
    """Ignores its input altogether."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.5))

    def forward(self, atoms: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
        return self.b.expand(atoms.shape[0])


class ZeroLinearCritic(LinearCritic):
    """The linear critic at w = 0: its input gradient is w itself, so the penalty's gradient with
    respect to w passes through the norm at 0."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        with torch.no_grad():
            self.w_a.zero_()
            self.w_b.zero_()


def uniform(seed: int, batch: int = B) -> torch.Tensor:
    """Interpolation weights (B,) for the gradient penalty."""
    return torch.rand(batch, generator=torch.Generator().manual_seed(seed))


def weight_norm(critic: LinearCritic) -> torch.Tensor:
    return torch.cat([critic.w_a.flatten(), critic.w_b.flatten()]).norm()


# --------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_of_linear_critic_matches_hand_computation() -> None:
    critic = LinearCritic(seed=0)
    gp = gradient_penalty(critic, graphs(1), graphs(2), uniform(3))
    norm = weight_norm(critic).detach()
    assert norm.item() != pytest.approx(1.0, abs=0.1)
    torch.testing.assert_close(gp, (norm - 1) ** 2)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: the penalty trains the critic's weights.
    gp.backward()
    factor = 2 * (norm - 1) / norm
    torch.testing.assert_close(critic.w_a.grad, factor * critic.w_a.detach())
    torch.testing.assert_close(critic.w_b.grad, factor * critic.w_b.detach())


def test_gradient_penalty_norm_is_per_pack() -> None:
    critic = LinearCritic(seed=4, pack=2)
    gp = gradient_penalty(critic, graphs(1), graphs(2), uniform(3))
    # Each pack's score has gradient w for each of its 2 graphs: norm sqrt(2) ||w||.
    expected = (2**0.5 * weight_norm(critic).detach() - 1) ** 2
    torch.testing.assert_close(gp, expected)


@pytest.mark.parametrize("critic_cls", [ZeroLinearCritic, DeadReluCritic, ConstantCritic])
def test_gradient_penalty_is_safe_where_the_critic_gradient_is_zero(critic_cls: type[nn.Module]) -> None:
    critic = critic_cls()
    real, fake = graphs(1), graphs(2)
    gp = gradient_penalty(critic, real, fake, uniform(0))
    torch.testing.assert_close(gp, torch.tensor(1.0))
    # The critic loss as the trainer forms it: every gradient finite.
    loss = critic(fake.atoms, fake.bonds).mean() - critic(real.atoms, real.bonds).mean() + 10.0 * gp
    loss.backward()
    for name, p in critic.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_gradient_penalty_depends_on_the_interpolation_weights() -> None:
    # A critic that is not linear: the penalty depends on where between real and fake it looks.
    class Quadratic(nn.Module):
        def forward(self, atoms: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
            return atoms.pow(2).sum((1, 2)) + bonds.pow(2).sum((1, 2, 3))

    real, fake = graphs(1), graphs(2)
    values = [gradient_penalty(Quadratic(), real, fake, uniform(s)) for s in (0, 0, 1)]
    assert values[0] == values[1]
    assert values[0] != values[2]


# ---------------------------------------------------------------------------- a debug run


def training_records(run_dir: Path) -> dict[int, dict[str, float]]:
    """Training records of metrics.jsonl by step, without the wall-clock field."""
    records = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval" not in record:
            record.pop("elapsed_s")
            records[record["step"]] = record
    return records


def eval_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "eval" in json.loads(line)]


def generator_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict("generator")


def test_debug_run_writes_checkpoints_that_load_and_sample(debug_run: Path, debug_config: Callable) -> None:
    config: Config = debug_config()
    assert load_config(debug_run / "config.yaml") == config
    records = training_records(debug_run)
    assert sorted(records) == list(range(5, 31, 5))
    for record in records.values():
        for key in ("d_loss", "g_loss", "w_distance", "gp", "reward", "batch_valid", "tau", "r_loss"):
            assert isinstance(record[key], float) and record[key] == record[key], key
    assert eval_steps(debug_run) == [15, 30]

    sampler = MoleculeSampler.load(debug_run / LAST)
    assert sampler.meta["step"] == 30
    assert sampler.config == config
    samples = sampler.sample(8, seed=0)
    assert len(samples) == 8
    atoms, bonds = sampler.graphs(8, seed=0)
    assert atoms.shape == (8, 9) and bonds.shape == (8, 9, 9)
    best = MoleculeSampler.load(debug_run / BEST)
    assert best.meta["step"] in (15, 30)
    assert len(best.sample(3, seed=0)) == 3


def test_time_limit_stops_and_saves(tmp_path: Path, debug_config: Callable) -> None:
    config = debug_config("train.steps=100000", "train.max_minutes=0.0002")
    trainer = Trainer(config, tmp_path, progress=False)
    result = trainer.train()
    assert result["stopped_by"] is None
    assert 1 <= result["step"] < 100
    assert load_checkpoint(tmp_path / LAST).meta["step"] == result["step"]
    assert eval_steps(tmp_path)[-1] == result["step"]


def test_same_seed_same_metrics_different_seed_different(tmp_path: Path, debug_config: Callable) -> None:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = debug_config(
            "train.steps=6", "train.log_every=1", "train.rl_start_step=2", f"train.seed={seed}"
        )
        Trainer(config, tmp_path / name, progress=False).train()
        runs[name] = training_records(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert all(runs["a"][s]["d_loss"] != runs["c"][s]["d_loss"] for s in runs["a"])
    weights = {name: generator_weights(tmp_path / name / LAST) for name in runs}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


@pytest.mark.parametrize("rl_estimator", ["reward_net", "reinforce"])
def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, debug_config: Callable, rl_estimator: str
) -> None:
    k = 6
    # Up to 4 atoms: most random graphs are molecules, so the uniqueness memory really fills.
    settings = [
        "data.max_atoms=4",
        "train.lam=0.5",
        f"train.rl_estimator={rl_estimator}",
        "train.rl_start_step=2",
        "train.entropy_weight=0.01",
        "reward.memory_size=64",
        "train.log_every=1",
        "train.eval_every=4",
        "train.checkpoint_every=4",
    ]
    straight = Trainer(debug_config(*settings, f"train.steps={2 * k}"), tmp_path / "straight", progress=False)
    straight.train()

    first = Trainer(debug_config(*settings, f"train.steps={k}"), tmp_path / "split", progress=False)
    first.train()
    memory = first.reward_fn.memory_state()
    assert len(memory) > 10
    resumed = resume_trainer(tmp_path / "split", [f"train.steps={2 * k}"], progress=False)
    assert resumed.state.step == k
    assert resumed.reward_fn.memory_state() == memory
    result = resumed.train()
    assert result["step"] == 2 * k
    assert load_checkpoint(tmp_path / "split" / LAST).meta["step"] == 2 * k

    straight_records = training_records(tmp_path / "straight")
    split_records = training_records(tmp_path / "split")
    assert sorted(split_records) == list(range(1, 2 * k + 1))
    for step in range(k + 1, 2 * k + 1):
        assert split_records[step] == straight_records[step], step
    final_straight = generator_weights(tmp_path / "straight" / LAST)
    final_split = generator_weights(tmp_path / "split" / LAST)
    assert all(torch.equal(final_straight[key], final_split[key]) for key in final_straight)


def test_signal_finishes_the_step_saves_and_restores_handler(tmp_path: Path, debug_config: Callable) -> None:
    trainer = Trainer(debug_config("train.steps=100000", "train.eval_every=100000"), tmp_path, progress=False)
    previous = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = trainer.train()
    finally:
        timer.cancel()
    assert result["stopped_by"] == "SIGINT"
    assert 0 < result["step"] < 100000
    assert load_checkpoint(tmp_path / LAST).meta["step"] == result["step"]
    assert signal.getsignal(signal.SIGINT) is previous


def molgan_command() -> list[str]:
    script = Path(sys.executable).with_name("molgan")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from molgan.cli import app; app()"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_stops_a_real_training_process_and_resume_continues(
    tmp_path: Path, small_smiles_path: Path
) -> None:
    run_dir = tmp_path / "run"
    common = ["--no-progress", "--set", "train.log_every=1"]
    proc = subprocess.Popen(
        [*molgan_command(), "train", "-c", str(DEBUG_CONFIG), "--run-dir", str(run_dir), *common,
         "--set", f"data.path={small_smiles_path}", "--set", "train.steps=1000000",
         "--set", "train.eval_every=5"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # The code under test, wherever the package is installed from.
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    metrics = run_dir / "metrics.jsonl"
    try:
        wait_for(lambda: (metrics.is_file() and metrics.stat().st_size > 0) or proc.poll() is not None,
                 90, "the first metrics")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    stopped_at = load_checkpoint(run_dir / LAST).meta["step"]
    assert 0 < stopped_at < 1000000
    assert f"step {stopped_at} " in out
    assert max(training_records(run_dir)) == stopped_at
    assert (run_dir / "curves.png").is_file()

    # The resumption runs in this process: one interpreter start-up is enough for the test.
    done = CliRunner().invoke(
        app, ["train", "--resume", str(run_dir), *common, "--set", f"train.steps={stopped_at + 3}"]
    )
    assert done.exit_code == 0, done.output
    assert f"step {stopped_at + 3}" in done.stdout
    assert load_checkpoint(run_dir / LAST).meta["step"] == stopped_at + 3
    records = training_records(run_dir)
    assert [s for s in records if s > stopped_at] == [stopped_at + 1, stopped_at + 2, stopped_at + 3]


# --------------------------------------------------------------------------- the generator step


def parameters(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, a) for b, a in zip(before, module.parameters(), strict=True))


def test_reward_network_learns_in_the_loop_step_not_in_the_generator_step(
    tmp_path: Path, debug_config: Callable
) -> None:
    trainer = Trainer(debug_config("train.rl_start_step=0"), tmp_path, progress=False)
    assert trainer.reward_net is not None
    before = parameters(trainer.reward_net)
    update = trainer.generator_step(trainer.tau())
    assert not changed(before, trainer.reward_net)
    assert "r_loss" not in update.stats
    assert update.rl.loss is not None and len(update.rl.smiles) == len(update.rl.reward) == 12

    stats = trainer.train_step(trainer.tau())
    assert changed(before, trainer.reward_net)
    assert stats["r_loss"] > 0
    assert {"d_loss", "g_loss", "reward", "batch_valid"} <= set(stats)


def test_the_rl_term_is_off_before_its_start_step(tmp_path: Path, debug_config: Callable) -> None:
    trainer = Trainer(debug_config("train.rl_start_step=1"), tmp_path, progress=False)
    off = trainer.generator_step(trainer.tau())
    assert off.rl.loss is None
    # Still scored, for the log and the reward network.
    assert off.rl.reward.shape == (12,)
    assert off.stats["g_loss"] == off.stats["g_wgan"]
    trainer.state.step = 1
    on = trainer.generator_step(trainer.tau())
    assert on.rl.loss is not None
    assert on.stats["g_loss"] != on.stats["g_wgan"]


@pytest.mark.parametrize("rl_estimator", ["reward_net", "reinforce"])
def test_lambda_one_trains_the_gan_alone(tmp_path: Path, debug_config: Callable, rl_estimator: str) -> None:
    config = debug_config("train.lam=1.0", f"train.rl_estimator={rl_estimator}", "train.steps=6",
                          "train.log_every=1")
    trainer = Trainer(config, tmp_path, progress=False)
    assert trainer.reward_net is None
    assert trainer.train()["step"] == 6
    for record in training_records(tmp_path).values():
        assert record["g_loss"] == record["g_wgan"]
        assert "r_loss" not in record
        assert 0.0 <= record["batch_valid"] <= 1.0


def test_evaluation_leaves_the_training_generator_alone(tmp_path: Path, debug_config: Callable) -> None:
    trainer = Trainer(debug_config(), tmp_path, progress=False)
    state = trainer.rng.get_state()
    first = trainer.evaluate()
    assert torch.equal(trainer.rng.get_state(), state)
    assert trainer.evaluate() == first


def test_the_rl_term_raises_validity_above_the_gan_alone(tmp_path: Path, debug_config: Callable) -> None:
    """Strict validity of Gumbel-Max samples after 300 steps of the debug model, with REINFORCE
    on the validity reward (lam = 0.5) and without any RL term (lam = 1).

    Measured over seeds 0-7 (400 samples each), RL against GAN alone:
    0.870/0.000, 0.943/0.000, 0.823/0.028, 0.950/0.030, 0.885/0.505, 0.932/0.142, 0.963/0.048,
    0.887/0.065. The smallest gap is 0.38 (seed 4); the test runs seed 0 and asks for 0.3.
    """
    validity = {}
    for lam in (0.5, 1.0):
        config = debug_config(
            f"train.lam={lam}",
            "train.rl_estimator=reinforce",
            "train.rl_start_step=0",
            "reward.weights={validity: 1.0}",
            # Ten times the debug rate: the tiny generator then learns within a few hundred steps.
            "train.lr_generator=0.01",
            "train.steps=300",
            "train.eval_every=300",
            "train.eval_samples=400",
            "train.checkpoint_every=300",
            "train.log_every=300",
        )
        result = Trainer(config, tmp_path / str(lam), progress=False).train()
        validity[lam] = result["last_eval"]["gumbel_validity"]
    assert validity[0.5] > validity[1.0] + 0.3, validity
