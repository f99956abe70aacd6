"""MolGAN training: WGAN-GP critic, generator with an RL term, periodic evaluation, checkpoints.

One generator step (``Trainer.train_step``):

1. ``n_critic`` critic updates on real graphs and ST-relaxed generated graphs, with the
   gradient penalty on interpolates of the two.
2. One generator update on ``lam * WGAN + (1 - lam) * RL`` once the RL term is switched on.
   The RL term (``molgan.training.rl``) is either the reward network's prediction on the ST
   graphs (the paper) or REINFORCE on the exact reward of Gumbel-Max samples, with the batch
   mean or a leave-one-out mean as baseline, optionally plus the critic's standardised score of
   the valid samples (``train.critic_reward_weight``).
3. (``reward_net`` only) one reward-network update: MSE to the exact RDKit reward of real
   graphs and of the generated graphs of step 2.

All randomness comes from one ``torch.Generator`` seeded by ``train.seed`` (its state is
checkpointed), so a run and its resumption are reproducible on the CPU.

Under torchrun (``molgan.training.distributed``) each of K processes runs this same loop on
``batch_size / K`` graphs with its own generator; DDP averages the gradients, so that every
update is the one of the whole batch. Rank 0 alone writes files and evaluates.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.profiler import record_function

from molgan.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWriter,
    load_checkpoint,
    load_state,
    resolve_checkpoint,
)
from molgan.chem import Vocab, decode_and_validate, decode_batch
from molgan.conditions import (
    ConditionSet,
    closeness,
    dataset_properties,
    property_values,
    quantile_edges,
    target_labels,
)
from molgan.config import CRITIC_FIELDS, Config, ConfigError, config_from_dict
from molgan.data import MolDataset, dataset_from_config
from molgan.device import DeviceError, fast_bfloat16, graphs_to_host, resolve_device
from molgan.files import atomic_write
from molgan.gumbel import temperature
from molgan.metrics import evaluate_smiles
from molgan.models import (
    GraphLogits,
    Graphs,
    build_discriminator,
    build_generator,
    build_reward_network,
    critic_scores,
)
from molgan.rewards import KnownStructures, RewardFunction
from molgan.sampling import generator_from_checkpoint
from molgan.sampling_settings import SamplingSettings
from molgan.training.distributed import Processes, parameter_digest, rank_seed
from molgan.training.progress import Progress
from molgan.training.rl import RL_ESTIMATORS, RLContext, RLTerm
from molgan.training.run_dir import RunDir
from molgan.training.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


def gradient_penalty(critic: torch.nn.Module, real: Graphs, fake: Graphs, eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: ``mean((||grad_x D(x)|| - 1)^2)`` at the interpolates ``eps * real + (1 - eps) *
    fake`` of B real and fake graphs, ``eps`` (B,) uniform in [0, 1] (one weight per graph).
    A conditional model's pairs share their conditions (the real graph's), which are not
    interpolated and not differentiated.

    The norm is taken over a graph's atoms and bonds together (per pack with PacGAN). A small
    epsilon inside the square root keeps its gradient finite where the critic's gradient is 0.
    """
    b = real.atoms.shape[0]
    eps = eps.view(b, 1, 1)
    atoms = (eps * real.atoms + (1 - eps) * fake.atoms).requires_grad_(True)
    bonds = (eps.unsqueeze(-1) * real.bonds + (1 - eps.unsqueeze(-1)) * fake.bonds).requires_grad_(True)
    score = critic_scores(critic, atoms, bonds, real.conditions)
    # A critic that ignores its input has gradient 0 there, not an error.
    grad_atoms, grad_bonds = torch.autograd.grad(
        score.sum(), (atoms, bonds), create_graph=True, allow_unused=True, materialize_grads=True
    )
    groups = score.shape[0]
    squared = grad_atoms.reshape(groups, -1).pow(2).sum(1) + grad_bonds.reshape(groups, -1).pow(2).sum(1)
    norm = torch.sqrt(squared + 1e-12)
    return (norm - 1).pow(2).mean()


@dataclass(frozen=True)
class Penalty:
    """How one critic update takes the gradient penalty: ``weight`` (0: not at this update) on the
    first ``size`` graph pairs of the batch (``None``: all of them)."""

    weight: float
    size: int | None = None


def critic_loss(
    critic: torch.nn.Module,
    real: Graphs,
    fake: Graphs,
    eps: torch.Tensor,
    penalty: Penalty,
    *,
    joint: bool = False,
    mismatched: Graphs | None = None,
    mismatch_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The critic's WGAN-GP loss ``D(fake) - D(real) + weight * GP`` on B real and B fake graphs
    (``eps`` (B,): see ``gradient_penalty``), with the Wasserstein estimate and the penalty
    (``None`` where this update takes none). All are means over the batch (the penalty's over its
    share of it), so with several processes DDP's average of their gradients is the gradient of
    the whole batch's loss. ``joint`` scores real and fake graphs in one forward pass.

    ``mismatched``: real graphs paired with conditions not their own; they take the share
    ``mismatch_weight`` of the generated term, ``D(fake)`` becoming ``(1 - w) D(fake) + w
    D(mismatched)`` (``train.mismatch_weight``). The penalty stays on real and fake pairs.

    The penalty on the first ``size`` pairs is an unbiased estimate of the whole batch's: the
    pairs are independent draws, so any fixed subset is a uniform sample of them.
    """
    if joint:
        b = real.atoms.shape[0]
        both = None if real.conditions is None or fake.conditions is None else torch.cat(
            [real.conditions, fake.conditions])
        scores = critic_scores(critic, torch.cat([real.atoms, fake.atoms]),
                               torch.cat([real.bonds, fake.bonds]), both)
        d_real, d_fake = scores[:b].mean(), scores[b:].mean()
    else:
        d_real = critic_scores(critic, real.atoms, real.bonds, real.conditions).mean()
        d_fake = critic_scores(critic, fake.atoms, fake.bonds, fake.conditions).mean()
    if mismatched is not None and mismatch_weight > 0:
        d_mismatched = critic_scores(critic, mismatched.atoms, mismatched.bonds, mismatched.conditions).mean()
        d_fake = (1.0 - mismatch_weight) * d_fake + mismatch_weight * d_mismatched
    loss = d_fake - d_real
    gp = None
    if penalty.weight > 0:
        m = penalty.size
        share = (real, fake, eps) if m is None else (real[:m], fake[:m], eps[:m])
        gp = gradient_penalty(critic, *share)
        loss = loss + penalty.weight * gp
    return loss, d_real - d_fake, gp


def mode_seeking_ratio(z: torch.Tensor, logits: GraphLogits) -> torch.Tensor:
    """Mean of ``d(p(z1), p(z2)) / d(z1, z2)`` (mean absolute differences) over the two halves of a
    batch, where ``p`` are the per-choice probabilities: large when nearby noise vectors give
    different graphs.

    With several processes each pairs the halves of its own share: the average over processes is
    this ratio for the whole batch ordered as every process's first half, then every second half.
    """
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
    """Builds data, models and optimisers from a ``Config`` and trains into ``run_dir``.

    ``processes``: this process's place among the training processes (``distributed.start``);
    ``None`` is a single process on ``train.device``.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        dataset: MolDataset | None = None,
        progress: bool = True,
        processes: Processes | None = None,
    ) -> None:
        self.config = config
        self.run = RunDir(run_dir)
        cfg = config.train
        if processes is None:
            try:
                processes = Processes(resolve_device(cfg.device))
            except DeviceError as exc:
                raise ConfigError(f"train.device: {exc}") from None
        self.processes = processes
        self.device = processes.device
        self.progress = progress and processes.is_main
        try:
            self.local_batch = config.batch_share(processes.world_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # every process builds the same models; then only dropout draws
        # Each process has its own stream; a single process is seeded by train.seed itself.
        seed = cfg.seed if processes.world_size == 1 else rank_seed(cfg.seed, 0, processes.rank)
        self.rng = torch.Generator(self.device).manual_seed(seed)

        data = dataset if dataset is not None else dataset_from_config(config.data)
        self.vocab: Vocab = data.vocab
        train_idx, _, _ = data.split(config.data.split_seed, config.data.fractions)
        # Compact graphs (uint8 atoms and bond pairs): real_batch builds full matrices per batch.
        self.train_data = data.subset(train_idx).to(self.device)
        # Canonical SMILES of the training rows (row i of train_data is train_smiles_by_row[i]).
        self.train_smiles_by_row = self.train_data.smiles
        self.train_smiles = frozenset(self.train_smiles_by_row)
        # A conditional model's targets: the training molecules' own properties, standardised.
        self.conditions: ConditionSet | None = None
        self.train_conditions: torch.Tensor | None = None
        if config.model.conditions:
            names = config.model.conditions
            values = dataset_properties(self.train_smiles_by_row, names,
                                        workers=2 if processes.world_size == 1 else 1)
            self.conditions = ConditionSet.from_values(names, values)
            raw = torch.from_numpy(values).float()
            self.train_conditions = self.conditions.standardise(raw).to(self.device)
        width = config.reward.target_width
        self.target_width = (torch.tensor([width[name] for name in config.model.conditions])
                             if isinstance(width, dict) else width)
        # The bin edges of each grid of reward.uniqueness_bins (none: one count over all targets).
        self.target_edges: list[torch.Tensor] = []
        if config.reward.uniqueness_bins and self.train_conditions is not None:
            bins, grids = config.reward.uniqueness_bins, config.reward.uniqueness_grids
            values = self.train_conditions.cpu()
            self.target_edges = [quantile_edges(values, bins, g / grids) for g in range(grids)]

        a, e, n = self.vocab.num_atom_types, self.vocab.num_bond_types, self.vocab.max_atoms
        self.generator = build_generator(config.model, n, a, e).to(self.device)
        self.discriminator = build_discriminator(config.model, a, e).to(self.device)
        uses_reward_net = cfg.rl_estimator == "reward_net" and cfg.lam < 1.0
        self.reward_net = (
            build_reward_network(config.model, a, e).to(self.device) if uses_reward_net else None
        )
        if cfg.init_generator is not None:
            self._init_generator(cfg.init_generator)
        if seed != cfg.seed:
            torch.manual_seed(seed)  # dropout masks differ between processes
        # The losses that train each model go through these (DDP with several processes: their
        # gradients are averaged); other uses, without gradients or whose gradients are thrown
        # away, call the models themselves.
        self.ddp_generator = processes.wrap(self.generator)
        self.ddp_critic = processes.wrap(self.discriminator)
        self.critic_bfloat16 = cfg.critic_dtype == "bfloat16" or (
            cfg.critic_dtype == "auto" and fast_bfloat16(self.device)
        )
        if cfg.critic_dtype == "auto":
            log.info("critic updates in %s", "bfloat16" if self.critic_bfloat16 else "float32")
        self.ddp_reward = processes.wrap(self.reward_net) if self.reward_net is not None else None
        reward = config.reward
        known = None
        if reward.weights.get("plausible"):
            known = KnownStructures.of(self.train_smiles)
            log.info("plausible: %d ring systems and %d kinds of bond in the training molecules",
                     len(known.ring_systems), len(known.bonds))
        self.reward_fn = RewardFunction(
            reward.weights, memory_size=reward.memory_size, combine=reward.combine, known=known
        )
        # Real molecules must not enter the generated-sample memory of the uniqueness reward.
        self.real_reward_fn = RewardFunction(reward.weights, combine=reward.combine, known=known)

        betas = cfg.betas
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_discriminator, betas=betas)
        self.opt_r = (
            torch.optim.Adam(self.reward_net.parameters(), lr=cfg.lr_reward, betas=betas)
            if self.reward_net is not None
            else None
        )
        self.rl_context = RLContext(
            cfg, self.rng, self.score, self.discriminator, self.reward_net, self.processes
        )
        self.state = TrainState()
        self._signal = 0

    def _init_generator(self, model: str) -> None:
        """Load ``train.init_generator``'s generator weights (before DDP copies them)."""
        try:
            ckpt = load_checkpoint(resolve_checkpoint(model), map_location=self.device)
            source, config, vocab = generator_from_checkpoint(ckpt, self.device)
        except (CheckpointError, FileNotFoundError) as exc:
            raise ConfigError(f"train.init_generator: {exc}") from None
        # The generator's own fields must agree; the critic's may differ (it is trained anew), and
        # the conditions may be added (see below).
        ours = self.config.model
        theirs = config.model.model_copy(update={"conditions": ours.conditions} | {
            name: getattr(ours, name) for name in CRITIC_FIELDS
        })
        if config.model.conditions or theirs != ours:
            raise ConfigError(f"train.init_generator: {model!r} has another generator than this "
                              "config's model section")
        if vocab.to_dict() != self.vocab.to_dict():
            raise ConfigError(f"train.init_generator: {model!r} has another vocabulary than this "
                              "config's data")
        state = source.state_dict()
        if self.config.model.conditions:
            # The unconditional generator as a conditional one that ignores its conditions at
            # first: zero weights on the condition features it has never read.
            first = "body.0.weight"
            if first not in state:
                raise ConfigError("train.init_generator: a conditional generator starts from one "
                                  "with a hidden layer (model.generator_dims)")
            extra = self.generator.state_dict()[first].shape[1] - state[first].shape[1]
            state[first] = torch.cat([state[first], state[first].new_zeros(state[first].shape[0], extra)], 1)
        self.generator.load_state_dict(state)
        log.info("generator initialised from %s (step %s)", model, ckpt.meta.get("step"))

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def modules(self) -> list[torch.nn.Module]:
        """The trained models, in a fixed order."""
        return [m for m in (self.generator, self.discriminator, self.reward_net) if m is not None]

    # ----------------------------------------------------------------------------------- data
    def real_batch(self) -> tuple[Graphs, torch.Tensor]:
        """A random batch of training graphs and their row indices (B,).

        Each process draws its share with its own generator, from the whole training split: the
        rows are drawn with replacement, so shares need no partition of the data to be a sample
        of the same distribution as one process's batch.
        """
        idx = torch.randint(
            len(self.train_data), (self.local_batch,), generator=self.rng, device=self.device
        )
        graphs = Graphs.one_hot(
            *self.train_data.graphs(idx), self.vocab.num_atom_types, self.vocab.num_bond_types
        )
        return graphs.with_conditions(self.conditions_of(idx)), idx

    def conditions_of(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The conditions (B, C) of training rows (B,), each left unset (NaN) with the chance
        ``train.condition_dropout``; ``None`` for an unconditional model."""
        if self.train_conditions is None:
            return None
        conditions = self.train_conditions[rows]
        p = self.config.train.condition_dropout
        if p > 0:
            drop = torch.rand(conditions.shape, generator=self.rng, device=self.device) < p
            conditions = conditions.masked_fill(drop, math.nan)
        return conditions

    def step_targets(self, samples_per_z: int) -> torch.Tensor | None:
        """The targets (B, C) of a generator step's B graphs, ``None`` for an unconditional model:
        those of random training rows, so that they follow the data's joint distribution of the
        properties, each for ``samples_per_z * train.samples_per_target`` consecutive graphs; with
        ``train.paired_targets`` the second half repeats the first."""
        if self.train_conditions is None:
            return None
        group = samples_per_z * self.config.train.samples_per_target
        copies = self.config.train.target_copies
        rows = torch.randint(len(self.train_data), (self.local_batch // (group * copies),),
                             generator=self.rng, device=self.device)
        return self.conditions_of(rows).repeat_interleave(group, dim=0).repeat(copies, 1)

    def score(
        self, atoms: torch.Tensor, bonds: torch.Tensor, conditions: torch.Tensor | None = None
    ) -> tuple[list[str | None], list[bool], torch.Tensor]:
        """SMILES, strict validity and exact reward (B,), on the device, of integer graphs: atoms
        (B, N), bonds (B, N, N). RDKit decodes and scores them on the CPU. Graphs generated for
        targets (conditions (B, C)) have their reward multiplied by ``closeness ** w``
        (``reward.target_weight``)."""
        smiles, valid = decode_and_validate(*graphs_to_host(atoms, bonds), self.vocab)
        reward = self.reward_fn(smiles, gather=self.processes.gather_strings,
                                contexts=self.uniqueness_contexts(conditions))
        weight = self.config.reward.target_weight
        if conditions is not None and self.conditions is not None and weight > 0:
            achieved = self.achieved(smiles, valid)
            near = closeness(achieved, conditions.float().cpu(), self.target_width)
            reward = reward * near.pow(weight)
        return smiles, valid, reward.to(self.device)

    def uniqueness_contexts(self, conditions: torch.Tensor | None) -> list[tuple[str, ...]] | None:
        """The labels under which the uniqueness reward counts the repeats of each of B graphs
        generated for ``conditions`` (B, C): the bins of their targets in each grid of
        ``reward.uniqueness_bins``, else ``None`` (one count over all)."""
        if not self.target_edges or conditions is None or self.conditions is None:
            return None
        names = self.conditions.names
        grids = [target_labels(conditions.cpu(), edges, [f"{n}~{g}" if g else n for n in names])
                 for g, edges in enumerate(self.target_edges)]
        return [sum(labels, ()) for labels in zip(*grids, strict=True)]

    def achieved(self, smiles: list[str | None], valid: list[bool]) -> torch.Tensor:
        """The standardised properties (B, C) of the conditions of each valid molecule (NaN
        for the others), on the CPU."""
        assert self.conditions is not None
        kept = [s if ok else None for s, ok in zip(smiles, valid, strict=True)]
        raw = torch.from_numpy(property_values(kept, self.conditions.names)).float()
        return self.conditions.standardise(raw)

    def tau(self) -> float:
        t = self.config.temperature
        return temperature(self.state.step, t.anneal_steps, t.schedule, t.tau_start, t.tau_min)

    # ---------------------------------------------------------------------------------- steps
    def critic_step(self, tau: float, update: int) -> dict[str, float]:
        """One critic update, the ``update``-th of the run (counted from 0 over all steps)."""
        cfg = self.config.train
        real, _ = self.real_batch()
        with torch.no_grad():
            # A conditional model generates for the real graphs' conditions: the critic judges
            # molecule and property together.
            noise = self.generator.noise(self.local_batch, self.rng)
            logits = self.generator(noise, real.conditions)
            fake = logits.relax(self.config.model.estimator, tau, self.rng).with_conditions(real.conditions)
        eps = torch.rand(self.local_batch, generator=self.rng, device=self.device)
        mismatched = None
        if cfg.mismatch_weight > 0 and real.conditions is not None:
            shuffle = torch.randperm(self.local_batch, generator=self.rng, device=self.device)
            mismatched = real.with_conditions(real.conditions[shuffle])
        # bfloat16 autocast: the matrix products at half the cost; weights and Adam stay float32.
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.critic_bfloat16):
            loss, w_distance, gp = critic_loss(
                self.ddp_critic, real, fake, eps, self.penalty(update), joint=cfg.critic_joint_forward,
                mismatched=mismatched, mismatch_weight=cfg.mismatch_weight,
            )
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        stats = {"d_loss": loss.item(), "w_distance": w_distance.item()}
        return stats if gp is None else stats | {"gp": gp.item()}

    def penalty(self, update: int) -> Penalty:
        """The gradient penalty of critic update ``update``. Lazily (``train.gp_every`` = k) it is
        taken at every k-th update with k times the weight, so that its weight per update stays
        ``gp_weight`` on average (StyleGAN2's lazy regularisation); on ``train.gp_fraction`` of
        the graphs (whole PacGAN packs), at least one pack."""
        cfg = self.config.train
        if (update + 1) % cfg.gp_every:
            return Penalty(0.0)
        pack = self.config.model.pack
        packs = self.local_batch // pack
        size = None if cfg.gp_fraction >= 1.0 else max(1, math.ceil(cfg.gp_fraction * packs)) * pack
        return Penalty(cfg.gp_weight * cfg.gp_every, size)

    def reward_step(self, fake: Graphs, fake_reward: torch.Tensor) -> dict[str, float]:
        """Fit the reward network to the exact reward of real and generated graphs."""
        assert self.ddp_reward is not None and self.opt_r is not None
        real, idx = self.real_batch()
        # The dataset already holds each row's canonical SMILES: no need to decode real graphs.
        real_smiles = [self.train_smiles_by_row[i] for i in idx.tolist()]
        real_reward = self.real_reward_fn(real_smiles, gather=self.processes.gather_strings).to(self.device)
        atoms = torch.cat([real.atoms, fake.atoms.detach()])
        bonds = torch.cat([real.bonds, fake.bonds.detach()])
        target = torch.cat([real_reward, fake_reward])
        loss = F.mse_loss(self.ddp_reward(atoms, bonds), target)
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_r.step()
        return {"r_loss": loss.item()}

    def generator_step(self, tau: float) -> GeneratorUpdate:
        """One generator update on the WGAN loss plus, once it is on, the RL term."""
        cfg = self.config.train
        k = cfg.reinforce_group
        conditions = self.step_targets(k)
        z = self.generator.noise(self.local_batch // k, self.rng).repeat_interleave(k, dim=0)
        logits = self.ddp_generator(z, conditions)
        fake = logits.relax(self.config.model.estimator, tau, self.rng).with_conditions(conditions)
        stats: dict[str, float] = {}
        rl_on = cfg.lam < 1.0 and self.state.step >= cfg.rl_start_step
        # The RL estimator scores the batch even while its term is off: the reward is logged.
        rl = RL_ESTIMATORS[cfg.rl_estimator](self.rl_context, logits, fake, rl_on)
        stats |= rl.stats
        if cfg.lam > 0 or rl.loss is None:
            # The critic itself, not its DDP wrapper: its gradients here are thrown away.
            wgan = -critic_scores(self.discriminator, fake.atoms, fake.bonds, fake.conditions).mean()
            stats["g_wgan"] = wgan.item()
            loss = cfg.lam * wgan + (1.0 - cfg.lam) * rl.loss if rl.loss is not None else wgan
        else:
            loss = rl.loss
        if cfg.mode_seeking_weight > 0:
            ms = mode_seeking_ratio(z, logits)
            stats["mode_seeking"] = ms.item()
            loss = loss - cfg.mode_seeking_weight * ms
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()

        stats["g_loss"] = loss.item()
        if cfg.hindsight_weight > 0 and conditions is not None:
            stats |= self.hindsight_step(z, conditions, rl)
        stats["reward"] = rl.reward.mean().item()
        stats["batch_valid"] = sum(rl.valid) / len(rl.valid)
        relaxed = Graphs(fake.atoms.detach(), fake.bonds.detach())
        return GeneratorUpdate(stats, relaxed, rl)

    def hindsight_step(self, z: torch.Tensor, conditions: torch.Tensor, rl: RLTerm) -> dict[str, float]:
        """A generator update on ``-hindsight_weight * mean log p(graph | z, its own properties)``
        over the valid graphs of this step's REINFORCE samples (``train.hindsight_weight``): each
        graph relabelled as the answer to the targets it achieved. Conditions the graph was drawn
        without stay unset. With several processes each averages over its own valid graphs."""
        assert rl.graphs is not None, "REINFORCE keeps the graphs it sampled"
        keep = torch.tensor(rl.valid, dtype=torch.bool, device=self.device)
        achieved = self.achieved(rl.smiles, rl.valid).to(self.device)
        relabelled = torch.where(torch.isnan(conditions), conditions, achieved)
        atoms, bonds = rl.graphs
        weight = self.config.train.hindsight_weight
        if not keep.any():  # a pass of weight 0, so that the processes' DDP updates still pair up
            keep[0], weight = True, 0.0
            relabelled = relabelled.nan_to_num(0.0)
        logits = self.ddp_generator(z[keep], relabelled[keep])
        log_prob = logits.log_prob(atoms[keep], bonds[keep], self.config.train.rl_temperature)
        # The pass of weight 0 kept a graph that is not valid: it has no occurrences to look up.
        per_graph = self.hindsight_weights(rl, conditions) if weight > 0 else torch.ones_like(log_prob)
        loss = -weight * (log_prob * per_graph).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return {"hindsight_nll": -log_prob.mean().item()}

    def hindsight_weights(self, rl: RLTerm, conditions: torch.Tensor) -> torch.Tensor:
        """(K,) the weight of each of the K valid graphs of ``rl`` (generated for ``conditions``
        (B, C)) in the relabelling: 1, or with ``train.hindsight_per_molecule`` 1 / its
        occurrences in this batch and the reward's memory, the divisor of its ``uniqueness``."""
        kept = [s for s, ok in zip(rl.smiles, rl.valid, strict=True) if ok]
        if not self.config.train.hindsight_per_molecule:
            return torch.ones(len(kept), device=self.device)
        contexts = self.uniqueness_contexts(conditions)
        if contexts is not None:
            contexts = [c for c, ok in zip(contexts, rl.valid, strict=True) if ok]
        counts = torch.tensor(self.reward_fn.occurrences(kept, contexts), dtype=torch.float32,
                              device=self.device)
        return counts.reciprocal()

    def train_step(self, tau: float) -> dict[str, float]:
        """One step of the loop: ``n_critic`` critic updates, one generator update (none in the
        first ``train.critic_warmup_steps``), then (with a reward network) one reward-network
        update. Returns the statistics of the last of each, for this process's share of the
        batch."""
        n_critic = self.config.train.n_critic
        stats: dict[str, float] = {}
        # The labels name the parts in a torch.profiler table (benchmarks/bench_train.py --profile).
        for i in range(n_critic):
            with record_function("critic_update"):
                # With a lazy penalty the last update that took one reports it.
                stats |= self.critic_step(tau, self.state.step * n_critic + i)
        if self.state.step < self.config.train.critic_warmup_steps:
            return stats  # the generator is held while the critic learns the data
        with record_function("generator_update"):
            update = self.generator_step(tau)
        stats |= update.stats
        if self.reward_net is not None:
            with record_function("reward_network_update"):
                # Only the reward_net estimator builds one; its rewards are those of the relaxed graphs.
                stats |= self.reward_step(update.relaxed, update.rl.reward)
        return stats

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Sample with the configured test-time mode from a fixed seed and score the SMILES."""
        cfg, sampling = self.config.train, self.config.sampling
        self.generator.eval()
        rng = torch.Generator(self.device).manual_seed(cfg.eval_seed)
        results: dict[str, Any] = {}
        noise = self.generator.noise(cfg.eval_samples, rng)
        targets = None
        if self.train_conditions is not None:
            # A conditional model is asked for the properties of random training molecules.
            rows = torch.randint(len(self.train_data), (cfg.eval_samples,), generator=rng, device=self.device)
            targets = self.train_conditions[rows]
        logits = self.generator(noise, targets)
        for mode in ("argmax", "gumbel"):
            atoms, bonds = logits.sample(SamplingSettings.resolve(sampling, mode), rng)
            smiles = decode_batch(*graphs_to_host(atoms, bonds), self.vocab)
            m = evaluate_smiles(smiles, self.train_smiles).to_dict()
            for key in ("validity", "validity_loose", "uniqueness", "novelty", "vun", "qed_mean"):
                results[f"{mode}_{key}"] = m[key]
            if targets is not None and mode == sampling.mode:
                results |= self._target_errors(smiles, targets)
        self.generator.train()
        mode = sampling.mode
        results["validity"] = results[f"{mode}_validity"]
        results["uniqueness"] = results[f"{mode}_uniqueness"]
        results["novelty"] = results[f"{mode}_novelty"]
        results["score"] = results["validity"] * results["uniqueness"]
        return results

    def _target_errors(self, smiles: list[str | None], targets: torch.Tensor) -> dict[str, float]:
        """Mean absolute error, in the property's units, between each valid sample's property
        and its target: ``target_mae_<name>`` (absent when no sample is valid)."""
        assert self.conditions is not None
        values = property_values(smiles, self.conditions.names)
        out = {}
        for i, c in enumerate(self.conditions.conditions):
            wanted = targets[:, i].cpu().double().numpy() * c.std + c.mean
            gaps = abs(values[:, i] - wanted)
            gaps = gaps[~np.isnan(gaps)]
            if len(gaps):
                out[f"target_mae_{c.name}"] = float(gaps.mean())
        return out

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_meta(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "vocab": self.vocab.to_dict(),
            "step": self.state.step,
            "train_state": self.state.__dict__ | {"reward_memory": self.reward_fn.memory_state()},
            "metrics": metrics or {},
        } | ({"conditions": self.conditions.to_list()} if self.conditions is not None else {})

    def save_generator(self, path: Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the generator alone (what sampling needs): ``best`` and snapshots. Rank 0's job."""
        writer = CheckpointWriter(self.checkpoint_meta(metrics))
        writer.add_module("generator", self.generator)
        return writer.write(path)

    def save_checkpoint(self, path: Path, metrics: dict[str, Any] | None = None) -> None:
        """Write everything needed to resume. Every process calls it: rank 0 gathers each
        process's random states, checks that all hold the same parameters, and writes.

        The random states of rank r are ``rng.train.r`` and ``rng.global.r`` (rank 0's without the
        suffix, as a single process writes them); ``processes`` in the metadata says how many
        processes on which kind of device wrote them, and the parameter checksum of each.
        """
        states = self.processes.gather_tensors(self.rng.get_state())
        global_states = self.processes.gather_tensors(torch.get_rng_state())
        digests = self.processes.gather_objects(parameter_digest(self.modules))
        if len(set(digests)) > 1:
            raise RuntimeError(
                f"the processes hold different parameters at step {self.state.step}: {digests}"
            )
        if not self.processes.is_main:
            return
        meta = self.checkpoint_meta(metrics) | {
            "processes": {
                "world_size": self.processes.world_size,
                "rng_device": self.device.type,
                "parameters_sha256": digests,
            }
        }
        writer = CheckpointWriter(meta)
        writer.add_module("generator", self.generator)
        writer.add_module("discriminator", self.discriminator)
        writer.add_optimizer("generator", self.opt_g)
        writer.add_optimizer("discriminator", self.opt_d)
        if self.reward_net is not None and self.opt_r is not None:
            writer.add_module("reward", self.reward_net)
            writer.add_optimizer("reward", self.opt_r)
        for rank, (state, global_state) in enumerate(zip(states, global_states, strict=True)):
            writer.tensors[f"rng.{_rank_name('train', rank)}"] = state
            writer.tensors[f"rng.{_rank_name('global', rank)}"] = global_state
        writer.write(path)

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
        # Optimiser states move to the device of their parameters as they load.
        self.opt_g.load_state_dict(ckpt.optimizer_state("generator"))
        self.opt_d.load_state_dict(ckpt.optimizer_state("discriminator"))
        if self.reward_net is not None and self.opt_r is not None:
            load_state(self.reward_net, ckpt.state_dict("reward"), "reward network")
            self.opt_r.load_state_dict(ckpt.optimizer_state("reward"))
        # The memory is the same on every process (see RewardFunction), so one copy serves all.
        self.reward_fn.load_memory_state(memory)
        self.state = train_state
        self._restore_random_state(ckpt)

    def _restore_random_state(self, ckpt: Checkpoint) -> None:
        """Each process's generator states as saved, when this run has as many processes on the
        same kind of device; else fresh streams from the seed, the step and the rank."""
        saved = ckpt.meta.get("processes", {})
        saved_world, saved_device = saved.get("world_size", 1), saved.get("rng_device", "cpu")
        rank = self.processes.rank
        if saved_world == self.processes.world_size and saved_device == self.device.type:
            self.rng.set_state(ckpt.rng_state(_rank_name("train", rank)))
            torch.set_rng_state(ckpt.rng_state(_rank_name("global", rank)))
            return
        if self.processes.is_main:
            log.info(
                "%s was written by %d process(es) on %s, this run has %d on %s: random streams "
                "restart from the seed and step %d",
                ckpt.path, saved_world, saved_device, self.processes.world_size, self.device.type,
                self.state.step,
            )
        seed = rank_seed(self.config.train.seed, self.state.step, rank)
        self.rng.manual_seed(seed)
        torch.manual_seed(seed)

    # ------------------------------------------------------------------------------------ loop
    @contextmanager
    def _graceful_stop(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM finish the current step, then the loop saves and returns."""

        def handler(signum: int, _frame: Any) -> None:
            self._signal = signum

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
        """Train up to ``train.steps`` or ``train.max_minutes``. With several processes, every one
        calls this; they agree after each step whether to stop, so they stop after the same one."""
        cfg = self.config.train
        main = self.processes.is_main
        if main:
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.run.config.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
            if self.state.step > 0:  # resumed
                self._drop_records_after(self.state.step)
        budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
        started = time.monotonic() - self.state.elapsed_s
        deadline = started + budget_s if budget_s else math.inf
        last_eval: dict[str, Any] = {}
        stopped_by: str | None = None
        progress = Progress(
            cfg.steps, budget_s, step=self.state.step, elapsed_s=self.state.elapsed_s, enabled=self.progress
        )
        board = TensorBoardLog(
            self.run.path, enabled=main and cfg.tensorboard, purge_from=self.state.step + 1
        )
        with self._graceful_stop(), self._metrics_file() as metrics_file, board:
            while self.state.step < cfg.steps:
                tau = self.tau()
                stats = self.train_step(tau)
                self.state.step += 1
                self.state.elapsed_s = time.monotonic() - started
                step = self.state.step
                progress.advance(step, self.state.elapsed_s)
                if step % cfg.log_every == 0:
                    stats = self.processes.mean_stats(stats)
                    record = {"step": step, "tau": tau, "elapsed_s": round(self.state.elapsed_s, 2)}
                    if main:
                        metrics_file.write(json.dumps(record | stats) + "\n")
                        board.scalars("train", step, record | stats)
                    progress.show(stats, last_eval)
                signum, out_of_time = self.processes.agree_to_stop(self._signal, time.monotonic() >= deadline)
                stopped_by = signal.Signals(signum).name if signum else None
                stop = bool(signum) or out_of_time
                if step % cfg.eval_every == 0 or step == cfg.steps or stop:
                    if main:
                        last_eval = self.evaluate()
                        metrics_file.write(json.dumps({"step": step, "eval": last_eval}) + "\n")
                        board.scalars("eval", step, last_eval)
                        if cfg.keep_snapshots:
                            self.save_generator(self.run.snapshot(step), last_eval)
                        if last_eval["score"] > self.state.best_score:
                            self.state.best_score, self.state.best_step = last_eval["score"], step
                            self.save_generator(self.run.best, last_eval)
                    self.processes.barrier()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                    self.save_checkpoint(self.run.last, last_eval)
                if stop:
                    log.info("stopping at step %d (%s)", step, stopped_by or "time limit")
                    break
            self.processes.barrier()  # the others leave once rank 0 has written the last checkpoint
        progress.close()
        return {"step": self.state.step, "stopped_by": stopped_by, "last_eval": last_eval}

    def _drop_records_after(self, step: int) -> None:
        """Forget what a run that crashed logged after its last checkpoint (``step``): the resumed
        run logs those steps again, and each must appear once (TensorBoard hides them too)."""
        path = self.run.metrics
        if not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _record_step(line) <= step]
        if len(kept) < len(lines):
            log.info("%s: dropping %d records logged after step %d, the last checkpoint",
                     path, len(lines) - len(kept), step)
            atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))

    def _metrics_file(self) -> AbstractContextManager[IO[str] | None]:
        """``metrics.jsonl`` opened for appending on rank 0; ``None`` on the other processes. Line
        buffered, so that a run can be followed (``tail -f``) between evaluations too."""
        return self.run.metrics.open("a", buffering=1) if self.processes.is_main else nullcontext()


def _record_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line; a line cut short by a crash counts as after any."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _rank_name(name: str, rank: int) -> str:
    """Checkpoint name of a process's random state: rank 0's is the name itself."""
    return name if rank == 0 else f"{name}.{rank}"


def resume_trainer(run_dir: str | Path, overrides: list[str] | None = None, **kwargs: Any) -> Trainer:
    """A trainer for ``run_dir`` restored from its last checkpoint (same config; ``overrides``
    may change run-length settings such as ``train.steps`` or ``train.max_minutes``)."""
    config, ckpt = load_resume(run_dir, overrides)
    trainer = Trainer(config, run_dir, **kwargs)
    trainer.restore(ckpt)
    return trainer


def load_resume(run_dir: str | Path, overrides: list[str] | None = None) -> tuple[Config, Checkpoint]:
    """The config of the run in ``run_dir`` with ``overrides``, and its last checkpoint."""
    ckpt = load_checkpoint(RunDir(run_dir).last)
    saved = ckpt.meta.get("config")
    try:
        config_from_dict(saved)
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt.path} holds no usable config: {exc}") from None
    return config_from_dict(_with_rl_temperature(saved), overrides), ckpt


def _with_rl_temperature(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config as it trains today: runs saved before ``train.rl_temperature`` existed
    sampled REINFORCE at ``sampling.temperature``, and resume as they started."""
    train = saved.get("train", {})
    if "rl_temperature" in train or "temperature" not in saved.get("sampling", {}):
        return saved
    return saved | {"train": train | {"rl_temperature": saved["sampling"]["temperature"]}}
