"""The one typed configuration of a run, loaded from YAML and overridable from the command line.

Every section forbids unknown keys, so a typo such as ``train.batchsize`` is an error naming the
key instead of a silently ignored setting.

A leaf module: it imports nothing from ``molgan``, so that any module can read settings without
pulling in RDKit or the models. What a section describes is built elsewhere (the dataset of
``data`` by ``molgan.data.dataset_from_config``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from molgan.device import check_device_name
from molgan.sampling_settings import SamplingMode, check_min_p, check_temperature

# The option names of molgan.gumbel (``ESTIMATORS``, ``SCHEDULES``), spelt out here to keep this
# module a leaf; a test checks that the two lists agree.
Estimator = Literal["softmax", "gumbel", "st_gumbel", "st"]
Schedule = Literal["constant", "exponential", "linear", "cosine"]

RLEstimator = Literal["reward_net", "reinforce"]
"""Names of the RL terms of ``molgan.training.rl``."""

CriticRewardMode = Literal["standardised", "penalty"]
"""How ``molgan.training.rl.critic_reward`` turns the critic's scores into a reward term."""

EVAL_SEED_OFFSET = 1_000_003
"""Added to ``train.seed`` to seed the evaluation's own generator. Evaluation must not draw from
the training generator (a run would then depend on how often it evaluates), and with the same
seed its noise would repeat the first training draws; a large prime keeps the evaluation seeds
of runs with nearby seeds (0, 1, 2, ...) away from every training seed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    path: str | None = None
    """SMILES / CSV / SDF file, or a dataset's name: ``qm9`` (or ``None``) is the QM9 file bundled
    with the package, ``moses`` the MOSES training split of the installed molsets wheel."""
    limit: int | None = Field(None, ge=1)
    """Use only the first ``limit`` records of the file (a quick subset); ``None``: all of them."""
    max_atoms: int = Field(9, ge=2, le=64)
    """N: heavy atoms per graph. Molecules with more are skipped."""
    smiles_column: str | None = None
    """CSV column holding SMILES (default: ``smiles`` in any case)."""
    atoms: tuple[str, ...] | None = None
    """Atom vocabulary (labels such as ``C``, ``N+``; the padding label is added). ``None``: every
    atom type that occurs in the data. Molecules with other atoms are skipped."""
    aromatic: bool = False
    """Keep aromatic bonds as a fifth bond type instead of kekulizing them; RDKit then decides
    whether a generated aromatic ring can be kekulized. Aromatic atoms whose hydrogens must be
    stated (pyrrole's ``[nH]``) get labels with a hydrogen count, ``NH``: a fixed ``atoms`` list
    must name them, or their molecules are skipped."""
    split_seed: int = 0
    val_fraction: float = Field(0.05, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5)

    @property
    def fractions(self) -> tuple[float, float, float]:
        """(train, validation, test) fractions for ``MolDataset.split``."""
        return (1.0 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)


ConditionName = Literal["logp", "qed", "sa", "mol_weight"]
"""Properties a model can be conditioned on (``molgan.conditions.PROPERTIES``)."""

CriticFeature = Literal["cycles", "bond_pairs", "degrees"]
"""What ``model.critic_features`` may name (``molgan.graph_features``): ``cycles``, the 3- to
5-cycles through each atom and the 3- to 6-cycles of each graph; ``bond_pairs``, each graph's
bonds of each type between each pair of elements; ``degrees``, each atom's degree and each
graph's histogram of them."""

GeneratorKind = Literal["mlp", "atoms_first", "transformer"]
"""Names of the generators of ``molgan.models`` (``GENERATORS``)."""


CRITIC_FIELDS = (
    "gcn_dims", "aggregation_dim", "head_dims", "pack", "critic_features", "critic_features_detached",
)
"""The fields of ``model`` that shape the critic and the reward network alone."""


class ModelConfig(_Section):
    generator: GeneratorKind = "mlp"
    """``mlp``: atom and bond logits as independent heads of one MLP (MolGAN); ``transformer``: the
    same independent choices from atom tokens and pair states that attend to one another;
    ``atoms_first``: atom types are drawn first and the bond logits computed from them.
    Checkpoints without this key hold an ``mlp`` generator."""
    z_dim: int = Field(32, ge=1)
    generator_dims: tuple[int, ...] = (128, 256, 512)
    generator_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    estimator: Estimator = "st_gumbel"
    """How the generator's logits become graphs for the critic (see ``molgan.gumbel.relax``)."""
    gcn_dims: tuple[int, ...] = (64, 32)
    """Relational GCN layers of the discriminator and the reward network."""
    aggregation_dim: int = Field(128, ge=1)
    head_dims: tuple[int, ...] = (128, 64)
    """MLP between the graph embedding and the single output."""
    pack: int = Field(1, ge=1)
    """PacGAN packing: the critic scores ``pack`` graphs at once (1 = off)."""
    critic_features: tuple[CriticFeature, ...] = ()
    """Structural features the critic (and the reward network) reads beside the graph
    (``molgan.graph_features``): any of ``cycles``, ``bond_pairs``, ``degrees``."""
    critic_features_detached: bool = False
    """Pass no gradient through the structural features: the critic reads them, but its gradient
    reaches the graph (the generator, the gradient penalty) through the R-GCN alone."""
    conditions: tuple[ConditionName, ...] = ()
    """Properties the generator and the critic are conditioned on (``molgan.conditions``): a
    user then asks for a value of each, e.g. ``[logp, qed]``. Empty: an unconditional model."""

    @model_validator(mode="after")
    def _distinct_names(self) -> ModelConfig:
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"model.conditions names a property twice: {list(self.conditions)}")
        if len(set(self.critic_features)) != len(self.critic_features):
            raise ValueError(f"model.critic_features names a feature twice: {list(self.critic_features)}")
        return self


Temperature = Annotated[float, AfterValidator(check_temperature)]
"""A finite temperature > 0, by the one rule of ``molgan.sampling_settings``."""


class TemperatureConfig(_Section):
    """The straight-through Gumbel-Softmax temperature of the critic's path during training."""

    schedule: Schedule = "exponential"
    tau_start: Temperature = 1.0
    tau_min: Temperature = 0.2
    anneal_steps: int = Field(20_000, ge=0)
    """Generator steps over which ``tau_start`` decays to ``tau_min``."""

    @model_validator(mode="after")
    def _ordered(self) -> TemperatureConfig:
        if self.tau_start < self.tau_min:
            raise ValueError("temperature.tau_start must be >= temperature.tau_min")
        return self


class RewardConfig(_Section):
    weights: dict[str, float] = Field(default_factory=lambda: {"validity": 1.0})
    """Components of ``molgan.rewards.REWARD_COMPONENTS`` and their weights."""
    memory_size: int = Field(0, ge=0)
    """Recent valid samples remembered by the uniqueness component (0 = within the batch only)."""
    combine: Literal["mean", "product"] = "mean"
    """How a valid sample's components make its reward: their weighted mean, or the product of
    each component to the power of its weight (``molgan.rewards``)."""
    target_weight: float = Field(0.0, ge=0.0)
    """Conditional models: the reward of a sample is multiplied by ``closeness ** target_weight``,
    how near its properties came to the targets it was generated for
    (``molgan.conditions.closeness``); 0 = off."""
    target_width: float | dict[str, float] = 0.25
    """The distance to a target, in standard deviations of the training data's property, at
    which ``closeness`` has fallen to exp(-1/2): one for all conditions, or one per condition
    (``{logp: 0.5, qed: 0.3}``, every condition named)."""
    uniqueness_bins: int = Field(0, ge=0)
    """Conditional models: count the repeats of ``uniqueness`` (and of
    ``train.hindsight_per_molecule``) apart in each of this many quantile bins of each
    condition's target, and in one more for "unset" (0: over all targets together). A generator
    that gives each target a few favourite molecules is then a repeater at that target, as a
    user asking for it sees; over all targets its favourites of different targets never meet."""
    uniqueness_grids: int = Field(1, ge=1)
    """How many grids of ``uniqueness_bins`` bins, each shifted by 1 / this of a bin against the
    last (a sample's largest count over all its bins divides): a target on a bin edge of one
    grid, where the molecules asked for it are split between two bins, lies inside a bin of
    another."""


class SamplingConfig(_Section):
    """A checkpoint's default sampling settings, checked by the rules of ``molgan.sampling_settings``
    (``SamplingSettings.resolve`` combines them with what a call gives)."""

    mode: SamplingMode = "argmax"
    """Test-time sampling: argmax of the logits, or Gumbel-Max at ``temperature``."""
    temperature: Temperature = 1.0
    """Gumbel-Max temperature; kept with mode argmax for the calls that ask for gumbel. A
    serving default: REINFORCE samples at ``train.rl_temperature``."""
    min_p: Annotated[float, AfterValidator(check_min_p)] = 0.0
    """Gumbel-Max skips classes less likely than ``min_p`` times a choice's most likely class
    (0 = plain Gumbel-Max). A test-time setting: REINFORCE samples without it."""


class TrainConfig(_Section):
    seed: int = 0
    device: Annotated[str, AfterValidator(check_device_name)] = "auto"
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:K`` or ``mps``. Under
    torchrun, ``cuda`` and ``auto`` give each process the GPU of its local rank."""
    batch_size: int = Field(128, ge=2)
    """Graphs per step over all processes: with K processes each generates and scores
    batch_size / K of them."""
    steps: int = Field(50_000, ge=1)
    """Generator steps; the run also stops at ``max_minutes``."""
    max_minutes: float | None = Field(None, gt=0.0)
    threads: int | None = Field(None, ge=1)
    """torch intra-op threads of each process (``None``: torch's default)."""
    processes: int = Field(1, ge=1)
    """Training processes on this machine. With more than one, ``molgan train`` starts them
    itself under torchrun (``--standalone``), each training its share of every batch; a run
    started by torchrun has its processes already and ignores this."""
    lr_generator: float = Field(1e-3, gt=0.0)
    lr_discriminator: float = Field(1e-3, gt=0.0)
    lr_reward: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.5, 0.9)
    n_critic: int = Field(5, ge=0)
    """Critic updates per generator step; 0 (with ``lam`` 0) trains the generator on the RL
    term alone, with no critic work at all."""
    gp_weight: float = Field(10.0, ge=0.0)
    gp_every: int = Field(1, ge=1)
    """Take the gradient penalty at every ``gp_every``-th critic update only, at ``gp_every`` times
    its weight (lazy regularisation): the penalty's double backward is most of a critic update."""
    gp_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Share of each process's batch (in whole PacGAN packs) whose interpolates the penalty is
    taken on: an unbiased estimate of the full penalty from fewer double backwards."""
    critic_dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """What the critic's updates compute in: ``bfloat16`` runs them under autocast (matrix
    products in bfloat16, about twice as fast on CPUs with bfloat16 instructions and on GPUs),
    with weights, gradients' accumulation and Adam in float32. The generator's update, and so its
    gradient through the critic, stays float32. ``auto``: bfloat16 where the device computes it
    natively (``molgan.device.fast_bfloat16``), else float32."""
    critic_joint_forward: bool = False
    """Score the real and generated graphs of a critic update in one forward pass (one larger
    batch) instead of two: equal in exact arithmetic, not in float summation order."""
    init_generator: str | None = None
    """Start the generator from this checkpoint's generator (a bundled model's name or a file),
    to fine-tune it, e.g. towards a property; the critic and the optimisers start afresh. Its
    model section and vocabulary must equal this run's. Ignored when a run resumes."""
    critic_warmup_steps: int = Field(0, ge=0)
    """The first steps update the critic alone (``n_critic`` updates each), the generator held.
    A critic added to a generator that is already good (``init_generator``) first learns what
    the data looks like, so that its first gradients do not pull the generator away from the
    molecules it already makes."""
    mismatch_weight: float = Field(0.0, ge=0.0, le=1.0)
    """Conditional critic: the share of the critic's "generated" term taken by real graphs paired
    with the conditions of other real graphs of the batch (shuffled), as in the matching-aware
    discriminators of text-to-image GANs. The critic then judges whether a graph has the
    properties it is paired with, not only whether it looks like data (0 = off)."""
    lam: float = Field(1.0, ge=0.0, le=1.0)
    """Generator loss = lam * WGAN + (1 - lam) * RL (1.0 = pure GAN)."""
    rl_start_step: int = Field(0, ge=0)
    """Generator step at which the RL term is switched on."""
    rl_estimator: RLEstimator = "reward_net"
    """``reward_net``: the paper's differentiable reward-network prediction through the ST graphs;
    ``reinforce``: REINFORCE on the exact RDKit reward of Gumbel-Max samples, with the batch mean
    reward as baseline (or leave-one-out, see ``rl_samples_per_z``)."""
    rl_samples_per_z: int = Field(1, ge=1)
    """REINFORCE: Gumbel-Max samples drawn per noise vector; with more than one, each sample's
    baseline is the mean reward of its siblings (leave-one-out). Each process's share of
    ``batch_size`` must hold whole groups (see ``Config.batch_share``)."""
    rl_temperature: Temperature = 1.0
    """REINFORCE: temperature of the Gumbel-Max samples the exact reward scores (no min-p: a
    truncated policy never draws a class again once it falls below the cut, so it could not
    learn that the class was good). Runs saved before this key sampled at
    ``sampling.temperature``, which ``molgan.training`` keeps for them on resume."""
    rl_advantage: Literal["centred", "standardised"] = "centred"
    """REINFORCE: the reward minus its baseline (``centred``), or that divided by the batch's
    reward spread (``standardised``), so that the policy gradient keeps its size when the reward
    varies little, e.g. a property's score times the uniqueness term."""
    entropy_weight: float = Field(0.0, ge=0.0)
    """Bonus on the per-choice entropy of the generator's categoricals (REINFORCE only)."""
    critic_reward_weight: float = Field(0.0, ge=0.0)
    """REINFORCE: weight ``w`` of the critic in the reward of the exact samples. Each valid
    sample's reward becomes ``rdkit_reward + w * z``, ``z`` its critic score standardised over
    the valid samples of the whole batch; invalid samples keep reward 0 (0 = off). Needs
    ``rl_estimator: reinforce`` and ``model.pack: 1`` (the critic must score single graphs)."""
    critic_reward_mode: CriticRewardMode = "standardised"
    """How the critic's standardised score ``z`` enters the reward (``critic_reward_weight`` > 0):
    ``standardised`` adds ``w * z``; ``penalty`` adds ``w * (min(z, 0) - c)``, only the
    below-average part, with ``c`` its mean over the valid samples so that the term still sums
    to 0. Under ``penalty`` the molecules the critic dislikes are pushed away while those it
    likes all earn the same, so there is no favourite for the generator to collapse onto."""
    condition_dropout: float = Field(0.0, ge=0.0, le=1.0)
    """Conditional models: the chance that each condition of a training graph is left unset, so
    that a user may leave it unset too ("QED 0.5, logP anything")."""
    samples_per_target: int = Field(1, ge=1)
    """Conditional models: each target drawn for a step is asked this many times, with different
    noise, so that answers repeated to one question count against ``uniqueness`` within the
    batch. Drawn one per graph, targets rarely repeat, and a generator that gives each target a
    handful of molecules is not penalised for it. Each process's share of ``batch_size`` must hold
    whole groups (with ``rl_samples_per_z``, groups of both)."""
    paired_targets: bool = False
    """Conditional models: the second half of each process's share asks for the targets of the
    first, graph for graph. The mode-seeking term pairs the halves, so it then compares two noise
    vectors at one target, as in conditional mode-seeking GANs, and rewards a generator whose
    noise changes the molecule it draws for a target; with targets drawn per graph it compares two
    targets, and a generator that gives each target one molecule satisfies it. Needs
    ``mode_seeking_weight`` > 0; the share holds two of each group of ``samples_per_target``."""
    hindsight_weight: float = Field(0.0, ge=0.0)
    """Conditional models with REINFORCE: after each generator update, a second one that raises
    the likelihood of each valid sample given the noise it came from and, as its targets, the
    properties it turned out to have (hindsight relabelling): every valid sample then teaches
    the generator what to draw when asked for its values, not only the few that came near the
    targets they were drawn for. Conditions that were unset stay unset. 0 = off."""
    hindsight_per_molecule: bool = False
    """Weight each relabelled sample as ``uniqueness`` does, 1 / its occurrences in this batch and
    the reward's memory: a molecule drawn often is imitated as much as one drawn once, so the
    relabelling does not sharpen the generator onto its favourites. Needs ``reward.memory_size``."""
    mode_seeking_weight: float = Field(0.0, ge=0.0)
    """Weight of a mode-seeking term (Mao et al. 2019) that rewards different noise vectors for
    giving different graph distributions, so that the noise, not only the sampling, carries variety."""
    eval_every: int = Field(1000, ge=1)
    eval_samples: int = Field(2000, ge=10)
    checkpoint_every: int = Field(1000, ge=1)
    keep_snapshots: bool = False
    """Also save the generator at every evaluation as ``snapshots/step-XXXXXXX.safetensors``, to
    choose a checkpoint afterwards on other samples than the evaluation's."""
    log_every: int = Field(50, ge=1)
    tensorboard: bool = False
    """Also write the logged scalars and the sample grid as TensorBoard events into the run
    directory (needs the optional extra ``tensorboard``); ``metrics.jsonl`` stays the record."""

    @property
    def eval_seed(self) -> int:
        """Seed of the evaluation's samples (see ``EVAL_SEED_OFFSET``)."""
        return self.seed + EVAL_SEED_OFFSET

    @property
    def reinforce_group(self) -> int:
        """Samples drawn per noise vector: ``rl_samples_per_z`` with the ``reinforce`` estimator,
        else 1 (no other estimator compares siblings)."""
        return self.rl_samples_per_z if self.rl_estimator == "reinforce" else 1

    @property
    def target_copies(self) -> int:
        """How many times a share holds each group of graphs asked for one target: 2 with
        ``paired_targets`` (once in each half), else 1."""
        return 2 if self.paired_targets else 1


class Config(_Section):
    name: str = "molgan"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    temperature: TemperatureConfig = TemperatureConfig()
    reward: RewardConfig = RewardConfig()
    sampling: SamplingConfig = SamplingConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _batches_split(self) -> Config:
        # Otherwise the critic fails at the first step, after the data has been loaded.
        self.batch_share(1)
        return self

    def batch_share(self, processes: int) -> int:
        """Graphs each of ``processes`` training processes generates per step: ``train.batch_size``
        split evenly, in whole REINFORCE groups (``TrainConfig.reinforce_group``), times the
        graphs asked for one target (``train.samples_per_target``, twice with
        ``train.paired_targets``), and PacGAN packs (``model.pack``), at least 2 (the mode-seeking
        term pairs halves). ValueError naming the settings otherwise: the one rule of how a batch
        splits."""
        train = self.train
        k = train.reinforce_group
        m = train.samples_per_target
        unit = math.lcm(k * m * train.target_copies, self.model.pack)
        share = train.batch_size // processes
        if train.batch_size % processes or share % unit or share < 2:
            over = f"over {processes} processes into equal shares" if processes > 1 else "into a share"
            raise ValueError(
                f"train.batch_size ({train.batch_size}) must split {over} of at least 2 graphs that "
                f"are multiples of train.rl_samples_per_z ({k}) x train.samples_per_target ({m})"
                + (" x 2 (train.paired_targets)" if train.paired_targets else "")
                + f" and model.pack ({self.model.pack})"
            )
        return share

    @model_validator(mode="after")
    def _critic_reward_scores_single_graphs(self) -> Config:
        # Otherwise the weight would be ignored, or the reward of one graph would be a pack's score.
        if self.train.critic_reward_weight > 0 and (
            self.train.rl_estimator != "reinforce" or self.model.pack != 1
        ):
            raise ValueError(
                "train.critic_reward_weight > 0 needs train.rl_estimator: reinforce and model.pack: 1 "
                f"(got {self.train.rl_estimator!r} and {self.model.pack})"
            )
        return self

    @model_validator(mode="after")
    def _targets_need_conditions(self) -> Config:
        if self.reward.target_weight > 0 and not self.model.conditions:
            raise ValueError("reward.target_weight > 0 needs model.conditions (the targets it rewards)")
        widths = self.reward.target_width
        if isinstance(widths, dict) and set(widths) != set(self.model.conditions):
            raise ValueError(f"reward.target_width per condition must name each of model.conditions "
                             f"{list(self.model.conditions)} once (got {sorted(widths)})")
        if any(w <= 0 for w in (widths.values() if isinstance(widths, dict) else [widths])):
            raise ValueError(f"reward.target_width must be > 0 (got {widths})")
        # The reward network would have to learn each target's reward: not built for conditions.
        if self.model.conditions and self.train.rl_estimator == "reward_net" and self.train.lam < 1:
            raise ValueError("model.conditions needs train.rl_estimator: reinforce (or train.lam: 1)")
        if self.train.hindsight_weight > 0 and (
            not self.model.conditions or self.train.rl_estimator != "reinforce"
        ):
            raise ValueError("train.hindsight_weight > 0 needs model.conditions and train.rl_estimator: "
                             "reinforce (it relabels REINFORCE's samples)")
        train = self.train
        if self.reward.uniqueness_bins and (
            not self.model.conditions or "uniqueness" not in self.reward.weights
        ):
            raise ValueError("reward.uniqueness_bins needs model.conditions and a uniqueness weight "
                             "(the repeats it counts per target)")
        if train.samples_per_target > 1 and not self.model.conditions:
            raise ValueError("train.samples_per_target > 1 needs model.conditions (the targets it repeats)")
        if train.paired_targets and (not self.model.conditions or train.mode_seeking_weight == 0):
            raise ValueError("train.paired_targets needs model.conditions and train.mode_seeking_weight > 0 "
                             "(the term whose pairs it gives one target)")
        if train.hindsight_per_molecule and (train.hindsight_weight == 0 or self.reward.memory_size == 0):
            raise ValueError("train.hindsight_per_molecule needs train.hindsight_weight > 0 and "
                             "reward.memory_size > 0 (the occurrences it divides by)")
        return self

    @model_validator(mode="after")
    def _no_critic_no_wgan(self) -> Config:
        # An untrained critic's score would be a random direction in the generator's loss.
        train = self.train
        if train.n_critic == 0 and (train.critic_warmup_steps or train.mismatch_weight):
            raise ValueError("train.critic_warmup_steps and train.mismatch_weight need a critic "
                             "(train.n_critic > 0)")
        if train.mismatch_weight and not self.model.conditions:
            raise ValueError("train.mismatch_weight > 0 needs model.conditions (the conditions it shuffles)")
        if train.n_critic == 0 and (train.lam > 0 or train.rl_start_step > 0):
            raise ValueError(
                "train.n_critic: 0 trains no critic, so it needs train.lam: 0 and "
                f"train.rl_start_step: 0 (got {train.lam} and {train.rl_start_step})"
            )
        return self


class ConfigError(ValueError):
    """A config file or override that does not describe a valid run."""


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr_generator=3e-4", "model.gcn_dims=[32,16]"]`` -> nested dict (values as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
            node = child
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        # A mapping given as a value replaces the configured mapping instead of merging into it,
        # so `reward.weights={qed: 1}` means exactly that.
        node[parts[-1]] = _Replace(value) if isinstance(value, dict) else value
    return nested


class _Replace(dict):  # type: ignore[type-arg]
    """A mapping value from an override (as opposed to a section named by a dotted key)."""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, _Replace):
            out[key] = dict(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    merged = _merge(data, parse_overrides(overrides or []))
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(part for part in (".".join(str(p) for p in err["loc"]), err["msg"]) if part)
            for err in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of sections a YAML config file holds (empty for an empty file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    return loaded or {}


def overlay(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``layer``, a partial config, laid over ``base``: every field it names replaces the base's
    (a mapping such as ``reward.weights`` too), the others stay."""
    out = dict(base)
    for section, fields in layer.items():
        if isinstance(fields, dict) and isinstance(out.get(section), dict):
            out[section] = out[section] | fields
        else:
            out[section] = fields
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    overlays: Sequence[str | Path] = (),
) -> Config:
    """Read a YAML config (``None``: all defaults), lay the partial configs ``overlays`` over it
    in order (see ``overlay``; the ablation's variants are such files) and apply ``key=value``
    overrides."""
    data = read_config_file(path) if path is not None else {}
    for layer in overlays:
        data = overlay(data, read_config_file(layer))
    return config_from_dict(data, overrides)
