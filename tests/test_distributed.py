"""Training with several processes: DDP gradients against one process's, the reward shared across
processes, and torchrun runs of the debug config end to end (real processes, gloo on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from molgan.checkpoint import load_checkpoint
from molgan.cli import app
from molgan.config import ModelConfig
from molgan.models import Graphs, build_discriminator, build_generator, build_reward_network
from molgan.rewards import RewardFunction
from molgan.training.distributed import Processes, parameter_digest, start
from molgan.training.rl import critic_reward, reinforce_loss
from molgan.training.run_dir import LAST
from molgan.training.trainer import Penalty, critic_loss, mode_seeking_ratio, resume_trainer
from tests.conftest import DEBUG_CONFIG, REPO_ROOT
from tests.test_training import eval_steps, training_records, wait_for

WORLD = 2
B, N, A, E, Z = 16, 5, 4, 4, 6
"""Whole batch, atoms, atom types, bond types, noise dimensions of the gradient comparison."""

REWARD_BATCHES = [
    ["CCO", "CCO", "CCN", None, "C1CC1", "CC", "C.C", "CCO"],
    ["CCN", "CC", "CCC", "CCO", "CCN", "N", "CCO", "OCC(N)C"],
]
"""Two steps' SMILES; repeats within and across the two processes' halves, an invalid graph and
a disconnected one."""
REWARD_WEIGHTS = {"validity": 1.0, "uniqueness": 1.0}
MEMORY = 5


def reward_contexts(batch: list[str | None]) -> list[tuple[str, ...]]:
    """Labels for the uniqueness counts of each sample of a batch: two labels each, which
    overlap between samples, so that some repeats count under one label and not another."""
    return [(f"a{i % 2}", f"b{i % 3}") for i in range(len(batch))]


def shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The rows of a batch (B, ...) that process ``rank`` of ``world`` holds: the rank-th slice of
    each half, so that the halves a process pairs for the mode-seeking term are pairs of the
    whole batch too. With ``world`` = 1, the batch itself."""
    half, h = x.shape[0] // 2, x.shape[0] // (2 * world)
    return torch.cat([x[rank * h : (rank + 1) * h], x[half + rank * h : half + (rank + 1) * h]])


def batch_gradients(processes: Processes) -> dict[str, torch.Tensor]:
    """Gradients of the critic loss, of the generator loss (WGAN + REINFORCE with the batch-mean
    and with the leave-one-out baseline + entropy + mode seeking), of REINFORCE with the critic's
    reward, of a conditional critic and generator, of the transformer generator with the critic
    that reads structural features and of the reward network's loss, from this
    process's share of a fixed batch, through the trainer's loss functions and the models as
    ``processes`` wraps them."""
    rank, world = processes.rank, processes.world_size
    cfg = ModelConfig(z_dim=Z, generator_dims=(11, 13), gcn_dims=(5, 3), aggregation_dim=6, head_dims=(10,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator, critic = build_generator(cfg, N, A, E), build_discriminator(cfg, A, E)
        reward_net = build_reward_network(cfg, A, E)
    g = torch.Generator().manual_seed(1)
    atoms, bonds = torch.randint(A, (B, N), generator=g), torch.randint(E, (B, N, N), generator=g)
    real = Graphs.one_hot(atoms, bonds, A, E)
    fake = Graphs(torch.randn(B, N, A, generator=g).softmax(-1),
                  torch.randn(B, N, N, E, generator=g).softmax(-1))
    eps = torch.rand(B, generator=g)
    atoms, bonds = torch.randint(A, (B, N), generator=g), torch.randint(E, (B, N, N), generator=g)
    reward, target = torch.rand(B, generator=g), torch.rand(B, generator=g)
    # k = 2: two consecutive rows per noise vector, as with train.rl_samples_per_z = 2.
    noise = {1: torch.randn(B, Z, generator=g),
             2: torch.randn(B // 2, Z, generator=g).repeat_interleave(2, 0)}
    valid = torch.rand(B, generator=g) < 0.6
    # Conditions of a conditional model, some unset (NaN).
    conditions = torch.randn(B, 2, generator=g).masked_fill(torch.rand(B, 2, generator=g) < 0.3, float("nan"))
    conditional = cfg.model_copy(update={"conditions": ("logp", "qed")})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        c_generator, c_critic = build_generator(conditional, N, A, E), build_discriminator(conditional, A, E)

    def mine(x: torch.Tensor) -> torch.Tensor:
        return shard(x, rank, world)

    ddp_generator, ddp_critic = processes.wrap(generator), processes.wrap(critic)
    ddp_reward = processes.wrap(reward_net)
    grads: dict[str, torch.Tensor] = {}
    # The full penalty; and the penalty on half the batch (each process's first half of its share:
    # together the whole batch's first half, see ``shard``) with one forward for both sides.
    share = mine(eps).shape[0]
    for name, penalty, joint in (("full", Penalty(10.0), False), ("half", Penalty(10.0, share // 2), True)):
        critic.zero_grad(set_to_none=True)
        loss, _, _ = critic_loss(
            ddp_critic, Graphs(mine(real.atoms), mine(real.bonds)),
            Graphs(mine(fake.atoms), mine(fake.bonds)), mine(eps), penalty, joint=joint,
        )
        loss.backward()
        grads |= {f"critic.{name}.{p_name}": p.grad.clone() for p_name, p in critic.named_parameters()}
    for k, z in noise.items():
        generator.zero_grad(set_to_none=True)
        logits = ddp_generator(mine(z))
        relaxed = logits.relax("softmax", 1.0)
        wgan = -critic(relaxed.atoms, relaxed.bonds).mean()
        rl = reinforce_loss(
            logits, mine(atoms), mine(bonds), mine(reward), temperature=1.3, samples_per_z=k,
            entropy_weight=0.1, batch_mean=processes.mean,
        )
        loss = 0.4 * wgan + 0.6 * rl - 0.5 * mode_seeking_ratio(mine(z), logits)
        loss.backward()
        grads |= {f"generator.k{k}.{name}": p.grad.clone() for name, p in generator.named_parameters()}
    # Standardised advantages divide by the spread of the whole batch's rewards.
    generator.zero_grad(set_to_none=True)
    reinforce_loss(ddp_generator(mine(noise[1])), mine(atoms), mine(bonds), mine(reward),
                   temperature=1.3, standardise=True, batch_mean=processes.mean).backward()
    grads |= {f"generator.standardised.{name}": p.grad.clone() for name, p in generator.named_parameters()}
    # The leave-one-out baseline exchanges nothing: what is global here is the standardisation of
    # the critic's scores over the valid graphs of the whole batch.
    for penalty_only in (False, True):
        generator.zero_grad(set_to_none=True)
        term, _ = critic_reward(critic, Graphs.one_hot(mine(atoms), mine(bonds), A, E), mine(valid), 0.5,
                                processes.total, penalty_only=penalty_only)
        reinforce_loss(ddp_generator(mine(noise[2])), mine(atoms), mine(bonds), mine(reward) + term,
                       temperature=1.3, samples_per_z=2).backward()
        grads |= {f"generator.critic.{penalty_only}.{name}": p.grad.clone()
                  for name, p in generator.named_parameters()}
    # The conditional generator and critic, each graph with its conditions.
    ddp_c_generator, ddp_c_critic = processes.wrap(c_generator), processes.wrap(c_critic)
    loss, _, _ = critic_loss(
        ddp_c_critic, Graphs(mine(real.atoms), mine(real.bonds), mine(conditions)),
        Graphs(mine(fake.atoms), mine(fake.bonds), mine(conditions)), mine(eps), Penalty(10.0, share // 2),
        joint=True,
    )
    loss.backward()
    grads |= {f"critic.conditional.{name}": p.grad.clone() for name, p in c_critic.named_parameters()}
    logits = ddp_c_generator(mine(noise[1]), mine(conditions))
    relaxed = logits.relax("softmax", 1.0)
    wgan = -c_critic(relaxed.atoms, relaxed.bonds, mine(conditions)).mean()
    rl = reinforce_loss(logits, mine(atoms), mine(bonds), mine(reward), temperature=1.3, standardise=True,
                        batch_mean=processes.mean)
    (0.4 * wgan + 0.6 * rl).backward()
    grads |= {f"generator.conditional.{name}": p.grad.clone() for name, p in c_generator.named_parameters()}
    # The transformer generator and the critic with structural features.
    featured = cfg.model_copy(update={"generator": "transformer",
                                      "critic_features": ("cycles", "bond_pairs", "degrees")})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        t_generator, f_critic = build_generator(featured, N, A, E), build_discriminator(featured, A, E)
    ddp_t_generator, ddp_f_critic = processes.wrap(t_generator), processes.wrap(f_critic)
    loss, _, _ = critic_loss(
        ddp_f_critic, Graphs(mine(real.atoms), mine(real.bonds)), Graphs(mine(fake.atoms), mine(fake.bonds)),
        mine(eps), Penalty(10.0, share // 2), joint=True,
    )
    loss.backward()
    grads |= {f"critic.features.{name}": p.grad.clone() for name, p in f_critic.named_parameters()}
    logits = ddp_t_generator(mine(noise[1]))
    relaxed = logits.relax("softmax", 1.0)
    wgan = -f_critic(relaxed.atoms, relaxed.bonds).mean()
    rl = reinforce_loss(logits, mine(atoms), mine(bonds), mine(reward), temperature=1.3, standardise=True,
                        batch_mean=processes.mean)
    (0.4 * wgan + 0.6 * rl).backward()
    grads |= {f"generator.transformer.{name}": p.grad.clone() for name, p in t_generator.named_parameters()}
    F.mse_loss(ddp_reward(mine(real.atoms), mine(real.bonds)), mine(target)).backward()
    grads |= {f"reward.{name}": p.grad.clone() for name, p in reward_net.named_parameters()}
    return grads


def shared_rewards(processes: Processes, labelled: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """Rewards of this process's half of each of ``REWARD_BATCHES`` and the memory afterwards;
    ``labelled``: with the ``reward_contexts`` of each batch."""
    rank, world = processes.rank, processes.world_size
    reward_fn = RewardFunction(REWARD_WEIGHTS, memory_size=MEMORY)
    rewards = []
    for batch in REWARD_BATCHES:
        size = len(batch) // world
        mine = slice(rank * size, (rank + 1) * size)
        contexts = reward_contexts(batch)[mine] if labelled else None
        rewards.append(reward_fn(batch[mine], gather=processes.gather_strings, contexts=contexts))
    return rewards, reward_fn.memory_state()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One of ``world`` processes: joins the group as torchrun's workers do, through the
    environment and ``start``, and writes what it computed to ``out``/rank<r>.safetensors."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with start("cpu") as processes:
        tensors = batch_gradients(processes)
        rewards, memory = shared_rewards(processes)
        tensors |= {f"shared_reward.{i}": r for i, r in enumerate(rewards)}
        labelled, labelled_memory = shared_rewards(processes, labelled=True)
        tensors |= {f"labelled_reward.{i}": r for i, r in enumerate(labelled)}
        collectives = {
            "signal_on_rank_1": processes.agree_to_stop(15 if rank == 1 else 0, rank == 1),
            "time_up_on_rank_0": processes.agree_to_stop(0, rank == 0),
            "stats": processes.mean_stats({"a": float(rank), "b": 2.0 + rank}),
            "strings": processes.gather_strings([f"r{rank}a", f"r{rank}b"][: rank + 1]),
        }
        states = processes.gather_tensors(torch.full((3,), rank, dtype=torch.uint8))
        processes.barrier()
    meta = {"shared_memory": json.dumps(memory), "labelled_memory": json.dumps(labelled_memory),
            "collectives": json.dumps(collectives),
            "states": json.dumps([s.tolist() for s in states])}
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/rank{rank}.safetensors", metadata=meta)


Result = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""What one process computed: tensors by name and metadata."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[Result]:
    """What each of two real processes in a gloo group computed: (tensors, metadata) by rank."""
    out = tmp_path_factory.mktemp("two-processes")
    mp.start_processes(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    results = []
    for rank in range(WORLD):
        with safe_open(str(out / f"rank{rank}.safetensors"), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
            meta = {key: json.loads(value) for key, value in (f.metadata() or {}).items()}
        results.append((tensors, meta))
    return results


def test_ddp_gradients_of_the_shares_are_one_process_gradients_of_the_whole_batch(
    two_processes: list[Result],
) -> None:
    whole = batch_gradients(Processes(torch.device("cpu")))
    # Each process alone on its share gets other gradients: the comparison below can fail.
    alone = batch_gradients(_ShareOf(rank=0, world=WORLD))
    for key in ("critic.full.out.weight", "critic.half.out.weight", "generator.k1.atom_head.weight",
                "critic.conditional.out.weight", "generator.conditional.body.0.weight",
                "generator.critic.False.atom_head.weight", "generator.critic.True.atom_head.weight",
                "critic.features.out.weight", "generator.transformer.bond_out.weight"):
        assert not torch.allclose(alone[key], whole[key]), key
    for rank, (grads, _) in enumerate(two_processes):
        rewards = {k for k in grads if k.startswith(("shared_reward", "labelled_reward"))}
        assert sorted(grads.keys() - rewards) == sorted(whole)
        for key, expected in whole.items():
            # Equal up to the order of float summation.
            torch.testing.assert_close(grads[key], expected, rtol=1e-5, atol=1e-7, msg=f"rank {rank}: {key}")


class _ShareOf(Processes):
    """Rank ``rank`` of ``world`` without any exchange: what a process would compute on its own."""

    def __init__(self, rank: int, world: int) -> None:
        super().__init__(torch.device("cpu"))
        self.rank, self.world_size = rank, world


def test_the_uniqueness_reward_and_its_memory_see_the_whole_batch(
    two_processes: list[Result],
) -> None:
    # Counted over all samples, or per label: the processes' rewards are their shares of one
    # process's, and their memories are one process's, the same keys in the same order.
    wholes = {}
    for name, contexts in (("shared", lambda batch: None), ("labelled", reward_contexts)):
        one = RewardFunction(REWARD_WEIGHTS, memory_size=MEMORY)
        whole = wholes[name] = [one(batch, contexts=contexts(batch)) for batch in REWARD_BATCHES]
        for rank, (tensors, meta) in enumerate(two_processes):
            for i, expected in enumerate(whole):
                half = len(expected) // WORLD
                mine = expected[rank * half : (rank + 1) * half]
                torch.testing.assert_close(tensors[f"{name}_reward.{i}"], mine)
            assert meta[f"{name}_memory"] == one.memory_state()
    # CCO is three of the first batch, two of them in rank 0's half: alone, rank 0 would count 2.
    assert wholes["shared"][0][0].item() == pytest.approx(1 / 3 / 2 + 1 / 2)


def test_processes_agree_on_stopping_and_exchange_small_values(
    two_processes: list[Result],
) -> None:
    for _, meta in two_processes:
        collectives = meta["collectives"]
        # A signal to any process stops all; only rank 0's clock counts.
        assert collectives["signal_on_rank_1"] == [15, False]
        assert collectives["time_up_on_rank_0"] == [0, True]
        assert collectives["stats"] == {"a": 0.5, "b": 2.5}
        assert collectives["strings"] == ["r0a", "r1a", "r1b"]
        assert meta["states"] == [[0, 0, 0], [1, 1, 1]]


# --------------------------------------------------------------------------------- torchrun


def torchrun(*args: str | Path) -> list[str]:
    """``torchrun --standalone --nproc_per_node=2 -m molgan train ARGS`` with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
            "-m", "molgan", "train", *(str(a) for a in args)]


def torchrun_env() -> dict[str, str]:
    # The code under test, wherever the package is installed from.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def debug_options(run_dir: Path, small_smiles_path: Path, *extra: str) -> list[str]:
    sets = [f"data.path={small_smiles_path}", "train.log_every=1", "train.eval_every=4",
            "train.checkpoint_every=4", *extra]
    return ["--config", str(DEBUG_CONFIG), "--run-dir", str(run_dir), "--no-progress",
            *(arg for s in sets for arg in ("--set", s))]


def metric_steps(run_dir: Path) -> list[int]:
    """The step of every training record of metrics.jsonl, in file order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "eval" not in json.loads(line)]


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory: pytest.TempPathFactory, small_smiles_path: Path) -> tuple[Path, str]:
    """An 8-step debug run of two processes under torchrun: its directory and its stdout."""
    run_dir = tmp_path_factory.mktemp("torchrun") / "run"
    done = subprocess.run(
        torchrun(*debug_options(run_dir, small_smiles_path, "train.steps=8")),
        capture_output=True, text=True, timeout=240, env=torchrun_env(),
    )
    assert done.returncode == 0, done.stderr
    return run_dir, done.stdout


@pytest.mark.slow
def test_torchrun_trains_two_processes_that_end_alike_and_one_process_resumes(
    torchrun_run: tuple[Path, str], tmp_path: Path
) -> None:
    source, stdout = torchrun_run
    assert stdout.count("run: ") == 1 and f"run: {source} step 8" in stdout  # rank 0 speaks
    assert metric_steps(source) == list(range(1, 9))
    assert eval_steps(source) == [4, 8]
    ckpt = load_checkpoint(source / LAST)
    processes = ckpt.meta["processes"]
    assert processes["world_size"] == WORLD and processes["rng_device"] == "cpu"
    assert {"rng.train", "rng.train.1", "rng.global", "rng.global.1"} <= ckpt.tensors.keys()
    # Both processes ended with the same parameters, and those are the saved ones.
    digests = processes["parameters_sha256"]
    assert len(digests) == WORLD and len(set(digests)) == 1
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    restored = resume_trainer(run_dir, progress=False)
    assert parameter_digest(restored.modules) == digests[0]

    # One plain process takes over the run of two.
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--no-progress",
                                      "--set", "train.steps=11"])
    assert result.exit_code == 0, result.output
    assert f"run: {run_dir} step 11" in result.stdout
    assert metric_steps(run_dir) == list(range(1, 12))
    resumed = load_checkpoint(run_dir / LAST)
    assert resumed.meta["step"] == 11 and resumed.meta["processes"]["world_size"] == 1
    assert "rng.train.1" not in resumed.tensors


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_process_after_the_same_step(
    torchrun_run: tuple[Path, str], tmp_path: Path, small_smiles_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        torchrun(*debug_options(run_dir, small_smiles_path, "train.steps=1000000", "train.eval_every=1000")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=torchrun_env(),
    )
    try:
        metrics = run_dir / "metrics.jsonl"
        wait_for(lambda: (metrics.is_file() and metrics.read_text().count("\n") >= 10)
                 or proc.poll() is not None, 120, "ten steps")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its processes
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.count("stopped by SIGTERM") == 1, (out, err)
    stopped_at = load_checkpoint(run_dir / LAST).meta["step"]
    assert f"run: {run_dir} step {stopped_at} (stopped by SIGTERM)" in out
    assert metric_steps(run_dir) == list(range(1, stopped_at + 1))
    assert eval_steps(run_dir) == [stopped_at]
    digests = load_checkpoint(run_dir / LAST).meta["processes"]["parameters_sha256"]
    assert len(set(digests)) == 1
    # The same seed and number of processes give the same metrics.
    first = training_records(torchrun_run[0])
    assert {step: training_records(run_dir)[step] for step in first} == first


@pytest.mark.slow
def test_train_processes_starts_the_processes_itself(
    torchrun_run: tuple[Path, str], tmp_path: Path, small_smiles_path: Path
) -> None:
    # A plain `molgan train` whose config asks for two processes runs as torchrun would.
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "molgan", "train",
               *debug_options(run_dir, small_smiles_path, "train.steps=8", f"train.processes={WORLD}")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=torchrun_env())
    assert done.returncode == 0, done.stderr
    assert f"starting {WORLD} training processes" in done.stderr
    assert done.stdout.count("run: ") == 1 and f"run: {run_dir} step 8" in done.stdout
    assert load_checkpoint(run_dir / LAST).meta["processes"]["world_size"] == WORLD
    # The same seed and number of processes as the torchrun run: the same metrics.
    assert training_records(run_dir) == training_records(torchrun_run[0])
