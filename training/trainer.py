"""MolGAN training: WGAN-GP critic, generator with an RL term, periodic evaluation, checkpoints.

One generator step (``Trainer.train_step``):

1. ``n_critic`` critic updates on real graphs and ST-relaxed generated graphs, with the
   gradient penalty on interpolates of the two.
2. One generator update on ``lam * WGAN + (1 - lam) * RL`` once the RL term is switched on.
   The RL term (``molgan.training.rl``) is either the reward network's prediction on the ST
   graphs (the paper) or REINFORCE on the exact reward of Gumbel-Max samples, with the batch
   mean or a leave-one-out mean as baseline.
3. (``reward_net`` only) one reward-network update: MSE to the exact RDKit reward of real
   graphs and of the generated graphs of step 2.

All randomness comes from one ``torch.Generator`` seeded by ``train.seed`` (its state is
checkpointed), so a run and its resumption are reproducible on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from molgan.checkpoint import Checkpoint, CheckpointError, CheckpointWriter, load_checkpoint, load_state
from molgan.chem import Vocab, decode_batch
from molgan.config import Config, ConfigError, config_from_dict
from molgan.data import MolDataset, dataset_from_config
from molgan.gumbel import temperature
from molgan.metrics import evaluate_smiles
from molgan.models import GraphLogits, Graphs, build_discriminator, build_generator, build_reward_network
from molgan.rewards import RewardFunction
from molgan.sampling_settings import SamplingSettings
from molgan.training.progress import Progress
from molgan.training.rl import RL_ESTIMATORS, RLTerm
from molgan.training.run_dir import RunDir
from molgan.training.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


def gradient_penalty(
    critic: torch.nn.Module, real: Graphs, fake: Graphs, generator: torch.Generator
) -> torch.Tensor:
    """WGAN-GP: ``mean((||grad_x D(x)|| - 1)^2)`` at random interpolates of real and fake graphs.

    The norm is taken over a graph's atoms and bonds together (per pack with PacGAN). A small
    epsilon inside the square root keeps its gradient finite where the critic's gradient is 0.
    """
    b = real.atoms.shape[0]
    eps = torch.rand(b, 1, 1, generator=generator, device=real.atoms.device)
    atoms = (eps * real.atoms + (1 - eps) * fake.atoms).requires_grad_(True)
    bonds = (eps.unsqueeze(-1) * real.bonds + (1 - eps.unsqueeze(-1)) * fake.bonds).requires_grad_(True)
    score = critic(atoms, bonds)
    # A critic that ignores its input has gradient 0 there, not an error.
    grad_atoms, grad_bonds = torch.autograd.grad(
        score.sum(), (atoms, bonds), create_graph=True, allow_unused=True, materialize_grads=True
    )
    groups = score.shape[0]
    squared = grad_atoms.reshape(groups, -1).pow(2).sum(1) + grad_bonds.reshape(groups, -1).pow(2).sum(1)
    norm = torch.sqrt(squared + 1e-12)
    return (norm - 1).pow(2).mean()


def mode_seeking_ratio(z: torch.Tensor, logits: GraphLogits) -> torch.Tensor:
    """Mean of ``d(p(z1), p(z2)) / d(z1, z2)`` (mean absolute differences) over the two halves of a
    batch, where ``p`` are the per-choice probabilities: large when nearby noise vectors give
    different graphs."""
    half = z.shape[0] // 2
    probs = torch.cat([F.softmax(logits.atoms, -1).flatten(1), F.softmax(logits.pairs, -1).flatten(1)], 1)
    d_out = (probs[:half] - probs[half : 2 * half]).abs().mean(1)
    d_z = (z[:half] - z[half : 2 * half]).abs().mean(1)
    return (d_out / (d_z + 1e-8)).mean()


@dataclass
class GeneratorUpdate:
    """What one generator update leaves for the rest of the step."""

    stats: dict[str, float]
    relaxed: Graphs
    """The ST-relaxed generated graphs (B, ...) the critic scored, detached."""
    rl: RLTerm
    """The RL term's rewards and SMILES (its loss already applied)."""


@dataclass
class TrainState:
    step: int = 0
    best_score: float = -1.0
    best_step: int = -1
    elapsed_s: float = 0.0


class Trainer:
    """Builds data, models and optimisers from a ``Config`` and trains into ``run_dir``."""

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        dataset: MolDataset | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.run = RunDir(run_dir)
        self.progress = progress
        cfg = config.train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # only dropout draws from the global generator
        self.rng = torch.Generator().manual_seed(cfg.seed)

        data = dataset if dataset is not None else dataset_from_config(config.data)
        self.vocab: Vocab = data.vocab
        train_idx, _, _ = data.split(config.data.split_seed, config.data.fractions)
        self.train_atoms = data.atoms[train_idx].long()
        self.train_bonds = data.bonds[train_idx].long()
        # Canonical SMILES of the training rows (row i of train_atoms is train_smiles_by_row[i]).
        self.train_smiles_by_row = [data.smiles[i] for i in train_idx.tolist()]
        self.train_smiles = frozenset(self.train_smiles_by_row)

        a, e, n = self.vocab.num_atom_types, self.vocab.num_bond_types, self.vocab.max_atoms
        self.generator = build_generator(config.model, n, a, e)
        self.discriminator = build_discriminator(config.model, a, e)
        uses_reward_net = cfg.rl_estimator == "reward_net" and cfg.lam < 1.0
        self.reward_net = build_reward_network(config.model, a, e) if uses_reward_net else None
        self.reward_fn = RewardFunction(config.reward.weights, memory_size=config.reward.memory_size)
        # Real molecules must not enter the generated-sample memory of the uniqueness reward.
        self.real_reward_fn = RewardFunction(config.reward.weights)

        betas = cfg.betas
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_discriminator, betas=betas)
        self.opt_r = (
            torch.optim.Adam(self.reward_net.parameters(), lr=cfg.lr_reward, betas=betas)
            if self.reward_net is not None
            else None
        )
        self.state = TrainState()
        self._stop_reason: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.run.path

    # ----------------------------------------------------------------------------------- data
    def real_batch(self) -> tuple[Graphs, torch.Tensor]:
        """A random batch of training graphs and their row indices (B,)."""
        cfg = self.config.train
        idx = torch.randint(len(self.train_atoms), (cfg.batch_size,), generator=self.rng)
        graphs = Graphs.one_hot(
            self.train_atoms[idx], self.train_bonds[idx], self.vocab.num_atom_types, self.vocab.num_bond_types
        )
        return graphs, idx

    def tau(self) -> float:
        t = self.config.temperature
        return temperature(self.state.step, t.anneal_steps, t.schedule, t.tau_start, t.tau_min)

    # ---------------------------------------------------------------------------------- steps
    def critic_step(self, tau: float) -> dict[str, float]:
        cfg = self.config.train
        real, _ = self.real_batch()
        with torch.no_grad():
            logits = self.generator(self.generator.noise(cfg.batch_size, self.rng))
            fake = logits.relax(self.config.model.estimator, tau, self.rng)
        d_real = self.discriminator(real.atoms, real.bonds).mean()
        d_fake = self.discriminator(fake.atoms, fake.bonds).mean()
        gp = gradient_penalty(self.discriminator, real, fake, self.rng)
        loss = d_fake - d_real + cfg.gp_weight * gp
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"d_loss": loss.item(), "w_distance": (d_real - d_fake).item(), "gp": gp.item()}

    def reward_step(self, fake: Graphs, fake_reward: torch.Tensor) -> dict[str, float]:
        """Fit the reward network to the exact reward of real and generated graphs."""
        assert self.reward_net is not None and self.opt_r is not None
        real, idx = self.real_batch()
        # The dataset already holds each row's canonical SMILES: no need to decode real graphs.
        real_reward = self.real_reward_fn([self.train_smiles_by_row[i] for i in idx.tolist()])
        atoms = torch.cat([real.atoms, fake.atoms.detach()])
        bonds = torch.cat([real.bonds, fake.bonds.detach()])
        target = torch.cat([real_reward, fake_reward])
        loss = F.mse_loss(self.reward_net(atoms, bonds), target)
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_r.step()
        return {"r_loss": loss.item()}

    def generator_step(self, tau: float) -> GeneratorUpdate:
        """One generator update on the WGAN loss plus, once it is on, the RL term."""
        cfg = self.config.train
        # Only REINFORCE compares several samples of one noise vector (see train.rl_samples_per_z).
        k = cfg.rl_samples_per_z if cfg.rl_estimator == "reinforce" else 1
        z = self.generator.noise(cfg.batch_size // k, self.rng).repeat_interleave(k, dim=0)
        logits = self.generator(z)
        fake = logits.relax(self.config.model.estimator, tau, self.rng)
        stats: dict[str, float] = {}
        wgan = -self.discriminator(fake.atoms, fake.bonds).mean()
        stats["g_wgan"] = wgan.item()
        rl_on = cfg.lam < 1.0 and self.state.step >= cfg.rl_start_step
        # The RL estimator scores the batch even while its term is off: the reward is logged.
        rl = RL_ESTIMATORS[cfg.rl_estimator](self, logits, fake, rl_on)

        loss = cfg.lam * wgan + (1.0 - cfg.lam) * rl.loss if rl.loss is not None else wgan
        if cfg.mode_seeking_weight > 0:
            ms = mode_seeking_ratio(z, logits)
            stats["mode_seeking"] = ms.item()
            loss = loss - cfg.mode_seeking_weight * ms
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()

        stats["g_loss"] = loss.item()
        stats["reward"] = rl.reward.mean().item()
        stats["batch_valid"] = sum(rl.valid) / len(rl.valid)
        relaxed = Graphs(fake.atoms.detach(), fake.bonds.detach())
        return GeneratorUpdate(stats, relaxed, rl)

    def train_step(self, tau: float) -> dict[str, float]:
        """One step of the loop: ``n_critic`` critic updates, one generator update, then (with a
        reward network) one reward-network update. Returns the statistics of the last of each."""
        stats: dict[str, float] = {}
        for _ in range(self.config.train.n_critic):
            stats = self.critic_step(tau)
        update = self.generator_step(tau)
        stats |= update.stats
        if self.reward_net is not None:
            # Only the reward_net estimator builds one; its rewards are those of the relaxed graphs.
            stats |= self.reward_step(update.relaxed, update.rl.reward)
        return stats

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Sample with the configured test-time mode from a fixed seed and score the SMILES."""
        cfg, sampling = self.config.train, self.config.sampling
        self.generator.eval()
        rng = torch.Generator().manual_seed(cfg.eval_seed)
        results: dict[str, Any] = {}
        logits = self.generator(self.generator.noise(cfg.eval_samples, rng))
        for mode in ("argmax", "gumbel"):
            atoms, bonds = logits.sample(SamplingSettings.resolve(sampling, mode), rng)
            m = evaluate_smiles(decode_batch(atoms, bonds, self.vocab), self.train_smiles).to_dict()
            for key in ("validity", "validity_loose", "uniqueness", "novelty", "vun", "qed_mean"):
                results[f"{mode}_{key}"] = m[key]
        self.generator.train()
        mode = sampling.mode
        results["validity"] = results[f"{mode}_validity"]
        results["uniqueness"] = results[f"{mode}_uniqueness"]
        results["novelty"] = results[f"{mode}_novelty"]
        results["score"] = results["validity"] * results["uniqueness"]
        return results

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_meta(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "vocab": self.vocab.to_dict(),
            "step": self.state.step,
            "train_state": self.state.__dict__ | {"reward_memory": self.reward_fn.memory_state()},
            "metrics": metrics or {},
        }

    def save(self, path: Path, metrics: dict[str, Any] | None = None, *, full: bool = True) -> Path:
        """Write a checkpoint: with ``full``, everything needed to resume; else the generator only."""
        writer = CheckpointWriter(self.checkpoint_meta(metrics))
        writer.add_module("generator", self.generator)
        if full:
            writer.add_module("discriminator", self.discriminator)
            writer.add_optimizer("generator", self.opt_g)
            writer.add_optimizer("discriminator", self.opt_d)
            if self.reward_net is not None and self.opt_r is not None:
                writer.add_module("reward", self.reward_net)
                writer.add_optimizer("reward", self.opt_r)
            writer.add_rng("train", self.rng)
            writer.tensors["rng.global"] = torch.get_rng_state()
        return writer.write(path)

    def restore(self, ckpt: Checkpoint) -> None:
        try:
            saved = config_from_dict(ckpt.meta.get("config"))
            vocab = Vocab.from_dict(ckpt.meta.get("vocab"))
            state = dict(ckpt.meta["train_state"])
            memory = state.pop("reward_memory", [])
            train_state = TrainState(**state)
        except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise CheckpointError(
                f"{ckpt.path}: metadata lacks a usable config, vocabulary or training state: {exc}"
            ) from None
        if saved.model != self.config.model:
            raise CheckpointError(f"{ckpt.path}: model settings differ from the config of this run")
        if vocab != self.vocab:
            raise CheckpointError(f"{ckpt.path}: vocabulary differs from this run's dataset")
        load_state(self.generator, ckpt.state_dict("generator"), "generator")
        load_state(self.discriminator, ckpt.state_dict("discriminator"), "discriminator")
        self.opt_g.load_state_dict(ckpt.optimizer_state("generator"))
        self.opt_d.load_state_dict(ckpt.optimizer_state("discriminator"))
        if self.reward_net is not None and self.opt_r is not None:
            load_state(self.reward_net, ckpt.state_dict("reward"), "reward network")
            self.opt_r.load_state_dict(ckpt.optimizer_state("reward"))
        self.rng.set_state(ckpt.rng_state("train"))
        torch.set_rng_state(ckpt.rng_state("global"))
        self.reward_fn.load_memory_state(memory)
        self.state = train_state

    # ------------------------------------------------------------------------------------ loop
    @contextmanager
    def _graceful_stop(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM finish the current step, then the loop saves and returns."""

        def handler(signum: int, _frame: Any) -> None:
            self._stop_reason = signal.Signals(signum).name

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError):  # not the main thread: no signal handling there
                previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def train(self) -> dict[str, Any]:
        cfg = self.config.train
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.run.config.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
        started = time.monotonic() - self.state.elapsed_s
        deadline = started + budget_s if budget_s else math.inf
        last_eval: dict[str, Any] = {}
        progress = Progress(
            cfg.steps, budget_s, step=self.state.step, elapsed_s=self.state.elapsed_s, enabled=self.progress
        )
        board = TensorBoardLog(self.run.path, enabled=cfg.tensorboard, purge_from=self.state.step + 1)
        with self._graceful_stop(), self.run.metrics.open("a") as metrics_file, board:
            while self.state.step < cfg.steps:
                tau = self.tau()
                stats = self.train_step(tau)
                self.state.step += 1
                self.state.elapsed_s = time.monotonic() - started
                step = self.state.step
                progress.advance(step, self.state.elapsed_s)
                if step % cfg.log_every == 0:
                    record = {"step": step, "tau": tau, "elapsed_s": round(self.state.elapsed_s, 2)}
                    metrics_file.write(json.dumps(record | stats) + "\n")
                    board.scalars("train", step, record | stats)
                    progress.show(stats, last_eval)
                out_of_time = time.monotonic() >= deadline
                if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time or self._stop_reason:
                    last_eval = self.evaluate()
                    metrics_file.write(json.dumps({"step": step, "eval": last_eval}) + "\n")
                    board.scalars("eval", step, last_eval)
                    metrics_file.flush()
                    if cfg.keep_snapshots:
                        self.save(self.run.snapshot(step), last_eval, full=False)
                    if last_eval["score"] > self.state.best_score:
                        self.state.best_score, self.state.best_step = last_eval["score"], step
                        self.save(self.run.best, last_eval, full=False)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time or self._stop_reason:
                    self.save(self.run.last, last_eval)
                if self._stop_reason or out_of_time:
                    log.info("stopping at step %d (%s)", step, self._stop_reason or "time limit")
                    break
        progress.close()
        return {"step": self.state.step, "stopped_by": self._stop_reason, "last_eval": last_eval}


def resume_trainer(run_dir: str | Path, overrides: list[str] | None = None, **kwargs: Any) -> Trainer:
    """A trainer for ``run_dir`` restored from its last checkpoint (same config; ``overrides``
    may change run-length settings such as ``train.steps`` or ``train.max_minutes``)."""
    ckpt = load_checkpoint(RunDir(run_dir).last)
    try:
        config_from_dict(ckpt.meta.get("config"))
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt.path} holds no usable config: {exc}") from None
    config = config_from_dict(ckpt.meta["config"], overrides)
    trainer = Trainer(config, run_dir, **kwargs)
    trainer.restore(ckpt)
    return trainer
