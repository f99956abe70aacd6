"""Conditional generation: conditions and their statistics, the conditional generator and critic,
training with targets and their reward, sampling at targets from Python and the command line, and
the target evaluation."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import molgan
from molgan.checkpoint import load_checkpoint
from molgan.cli import app
from molgan.conditions import (
    GRID_PERCENTILES,
    ConditionSet,
    TargetError,
    closeness,
    condition_features,
    dataset_properties,
    property_values,
    quantile_edges,
    target_labels,
)
from molgan.config import Config, ConfigError
from molgan.metrics import properties
from molgan.models import GraphCritic, Graphs, build_discriminator, build_generator
from molgan.sampling import MoleculeSampler, sample_filtered
from molgan.target_evaluation import achieved_figures, evaluate_targets, spearman, target_grid
from molgan.training.trainer import Trainer
from tests.conftest import CONDITIONAL_OVERRIDES

runner = CliRunner()
SMILES = ["CCO", "c1ccccc1O", "CC(=O)N", "OCC(O)CO", "C#N"]


def two_conditions() -> ConditionSet:
    values = property_values(SMILES * 20, ["logp", "qed"])
    return ConditionSet.from_values(["logp", "qed"], values)


# ------------------------------------------------------------------------------ conditions


def test_statistics_are_the_training_values_own() -> None:
    values = property_values(SMILES, ["logp", "qed"])
    expected = [properties(s) for s in SMILES]
    assert values[:, 0] == pytest.approx([p["logp"] for p in expected])
    assert values[:, 1] == pytest.approx([p["qed"] for p in expected])
    conditions = ConditionSet.from_values(["logp", "qed"], values)
    logp = conditions["logp"]
    assert logp.mean == pytest.approx(values[:, 0].mean()) and logp.std == pytest.approx(values[:, 0].std())
    assert logp.low < values[:, 0].min() < values[:, 0].max() < logp.high
    assert list(logp.percentiles) == list(GRID_PERCENTILES)
    assert logp.percentiles[50] == pytest.approx(np.median(values[:, 0]))
    assert ConditionSet.from_list(conditions.to_list()) == conditions


def test_invalid_smiles_have_no_values() -> None:
    values = property_values(["CCO", None, "C1CC", "C.C"], ["logp"])
    assert not math.isnan(values[0, 0]) and np.isnan(values[1:, 0]).all()


def test_targets_are_checked_and_encoded_standardised() -> None:
    conditions = two_conditions()
    logp = conditions["logp"]
    encoded = conditions.encode({"logp": logp.mean + 0.5 * logp.std}, 3)
    assert encoded.shape == (3, 2)
    assert encoded[:, 0].tolist() == pytest.approx([0.5] * 3, rel=1e-5)
    assert torch.isnan(encoded[:, 1]).all()  # unset
    for bad, field in [({"mw": 1.0}, "targets.mw"), ({"logp": logp.high + 1}, "targets.logp"),
                       ({"qed": "high"}, "targets.qed"), ({"qed": math.nan}, "targets.qed")]:
        with pytest.raises(TargetError) as err:
            conditions.check(bad)
        assert err.value.field == field and field in str(err.value)


def test_condition_features_and_closeness() -> None:
    c = torch.tensor([[0.5, math.nan]])
    assert condition_features(c).tolist() == [[0.5, 0.0, 1.0, 0.0]]
    targets = torch.tensor([[0.0, math.nan], [0.0, 1.0], [math.nan, math.nan], [0.0, 0.0]])
    achieved = torch.tensor([[0.5, 9.0], [0.5, 1.0], [3.0, 3.0], [math.nan, math.nan]])
    near = closeness(achieved, targets, width=0.5)
    # One standard width away; the unset condition does not count; nothing set; no molecule.
    assert near.tolist() == pytest.approx([math.exp(-0.5), math.exp(-0.5), 1.0, 0.0])
    # A width per condition: half a width off in the first, two widths off in the second.
    near = closeness(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 0.0]]), torch.tensor([1.0, 0.25]))
    assert near.tolist() == pytest.approx([math.exp(-0.5 * (0.25 + 4.0))])


def test_dataset_properties_are_cached(tmp_path: Path) -> None:
    first = dataset_properties(SMILES, ["qed", "logp"], cache_dir=tmp_path, workers=1)
    assert first == pytest.approx(property_values(SMILES, ["qed", "logp"]))
    cached = list(tmp_path.glob("*.properties.npy"))
    assert len(cached) == 1
    table = np.load(cached[0])
    table[:, :] = 7.0  # what a second call reads, unless it recomputes
    np.save(cached[0], table)
    assert (dataset_properties(SMILES, ["sa"], cache_dir=tmp_path) == 7.0).all()


# ------------------------------------------------------------------------------------ models


def test_a_conditional_generator_reads_its_conditions(debug_config: Callable[..., Config]) -> None:
    config = debug_config(*CONDITIONAL_OVERRIDES)
    generator = build_generator(config.model, 9, 5, 4)
    z = torch.randn(6, config.model.z_dim, generator=torch.Generator().manual_seed(0))
    unset = generator(z, torch.full((6, 2), math.nan))
    assert unset.atoms.shape == (6, 9, 5) and unset.pairs.shape == (6, 36, 4)
    assert torch.equal(generator(z).atoms, unset.atoms)  # None: every condition unset
    asked = generator(z, torch.tensor([[1.0, -1.0]] * 6))
    assert not torch.allclose(asked.atoms, unset.atoms)
    plain = build_generator(debug_config().model, 9, 5, 4)
    with pytest.raises(ValueError, match="not conditional"):
        plain(z, torch.zeros(6, 2))


@pytest.mark.parametrize("pack", [1, 2])
def test_a_conditional_critic_scores_molecule_and_property(
    debug_config: Callable[..., Config], pack: int
) -> None:
    config = debug_config(*CONDITIONAL_OVERRIDES, f"model.pack={pack}")
    critic = build_discriminator(config.model, 5, 4)
    assert isinstance(critic, GraphCritic)
    g = torch.Generator().manual_seed(0)
    atoms, bonds = torch.rand(4, 9, 5, generator=g), torch.rand(4, 9, 9, 4, generator=g)
    scores = critic(atoms, bonds, torch.zeros(4, 2))
    assert scores.shape == (4 // pack,)
    assert not torch.allclose(scores, critic(atoms, bonds, torch.ones(4, 2)))


# ------------------------------------------------------------------------------------ config


def test_config_rules_of_conditions(debug_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match="target_weight"):
        debug_config("reward.target_weight=1.0")
    with pytest.raises(ConfigError, match="twice"):
        debug_config("model.conditions=[logp, logp]", "train.rl_estimator=reinforce")
    with pytest.raises(ConfigError, match="reinforce"):
        debug_config("model.conditions=[qed]")  # the debug config's reward network
    with pytest.raises(ConfigError, match="conditions"):
        debug_config("model.conditions=[solubility]", "train.rl_estimator=reinforce")
    with pytest.raises(ConfigError, match=r"target_width per condition must name each.*\['logp'\]"):
        debug_config(*CONDITIONAL_OVERRIDES, "reward.target_width={logp: 0.5}")
    with pytest.raises(ConfigError, match="target_width must be > 0"):
        debug_config(*CONDITIONAL_OVERRIDES, "reward.target_width={logp: 0.5, qed: 0.0}")
    widths = debug_config(*CONDITIONAL_OVERRIDES, "reward.target_width={qed: 0.3, logp: 0.5}")
    assert widths.reward.target_width == {"logp": 0.5, "qed": 0.3}


# ---------------------------------------------------------------------------------- training


def test_a_conditional_run_stores_its_statistics(conditional_run: Path) -> None:
    ckpt = load_checkpoint(conditional_run / "last.safetensors")
    stored = ConditionSet.from_list(ckpt.meta["conditions"])
    assert stored.names == ("logp", "qed")
    logp = stored["logp"]
    assert logp.low < logp.percentiles[10] < logp.percentiles[90] < logp.high
    lines = (conditional_run / "metrics.jsonl").read_text().splitlines()
    assert any('"eval"' in line for line in lines), "the run evaluated"


def test_training_conditions_follow_the_data_with_dropout(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config(*CONDITIONAL_OVERRIDES[:3], "train.condition_dropout=0.25")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert trainer.conditions is not None and trainer.train_conditions is not None
    raw = property_values(trainer.train_smiles_by_row, ["logp", "qed"])
    expected = trainer.conditions.standardise(torch.from_numpy(raw).float())
    assert torch.allclose(trainer.train_conditions, expected)
    rows = torch.arange(len(trainer.train_data)).repeat(20)
    drawn = trainer.conditions_of(rows)
    unset = torch.isnan(drawn)
    assert abs(unset.float().mean().item() - 0.25) < 0.02  # about 5,000 draws per condition
    assert torch.equal(drawn[~unset], trainer.train_conditions[rows][~unset])


def test_the_reward_is_scaled_by_closeness_to_the_target(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config(*CONDITIONAL_OVERRIDES, "reward.weights={validity: 1.0}",
                          "reward.target_width=1.0")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert trainer.train_conditions is not None
    rows = torch.arange(8)
    atoms, bonds = trainer.train_data.graphs(rows)
    own = trainer.train_conditions[rows]
    _, valid, reward = trainer.score(atoms, bonds, own)
    assert all(valid) and reward.tolist() == pytest.approx([1.0] * 8, abs=1e-5)
    shifted = own + torch.tensor([1.0, 0.0])  # one training std more logP than they have
    _, _, reward = trainer.score(atoms, bonds, shifted)
    assert reward.tolist() == pytest.approx([math.exp(-0.5)] * 8, rel=1e-4)
    _, _, unconditioned = trainer.score(atoms, bonds, None)
    assert unconditioned.tolist() == pytest.approx([1.0] * 8)
    # With a width per condition, the same shift in logP costs what its own width says.
    per_condition = debug_config(*CONDITIONAL_OVERRIDES, "reward.weights={validity: 1.0}",
                                 "reward.target_width={logp: 0.5, qed: 1.0}")
    trainer = Trainer(per_condition, tmp_path / "widths", progress=False)
    _, _, reward = trainer.score(atoms, bonds, shifted)
    assert reward.tolist() == pytest.approx([math.exp(-2.0)] * 8, rel=1e-4)


def test_target_bins_are_equally_populated_and_unset_is_a_bin_of_its_own() -> None:
    values = torch.from_numpy(np.random.default_rng(0).normal(size=(4000, 2))).float()
    values[:100, 1] = math.nan  # molecules without a value are left out of the edges
    edges = quantile_edges(values, 4)
    assert edges.shape == (2, 3) and torch.all(edges[:, 1:] > edges[:, :-1])
    labels = target_labels(values, edges, ["logp", "qed"])
    for i, name in enumerate(("logp", "qed")):
        counts = collections.Counter(label[i] for label in labels)
        assert counts.pop(f"{name}:unset", 0) == (100 if name == "qed" else 0)
        assert sorted(counts) == [f"{name}:{b}" for b in range(4)]
        assert all(abs(n - sum(counts.values()) / 4) <= 1 for n in counts.values())
    low, high = edges[0, 0].item() - 1, edges[0, -1].item() + 1
    asked = torch.tensor([[low, math.nan], [high, 0.0]])
    assert target_labels(asked, edges, ["logp", "qed"])[0] == ("logp:0", "qed:unset")
    assert target_labels(asked, edges, ["logp", "qed"])[1][0] == "logp:3"


def test_uniqueness_bins_count_a_molecule_again_only_at_a_like_target(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    overrides = (*CONDITIONAL_OVERRIDES, "reward.weights={validity: 1.0, uniqueness: 1.0}",
                 "reward.target_weight=0.0", "reward.combine=product", "reward.uniqueness_bins=2",
                 "reward.memory_size=0")
    config = debug_config(*overrides)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert len(trainer.target_edges) == 1 and trainer.conditions is not None
    atoms, bonds = trainer.train_data.graphs(torch.zeros(4, dtype=torch.long))  # one molecule 4 times
    low, high = trainer.target_edges[0][:, 0] - 1.0, trainer.target_edges[0][:, 0] + 1.0  # bins 0, 1
    nan = math.nan

    def asked(*bins: tuple[int | None, int | None]) -> torch.Tensor:
        return torch.tensor([[nan if b is None else (low if b == 0 else high)[i].item()
                              for i, b in enumerate(pair)] for pair in bins])

    # logP bins 0, 1, 1 and unset; QED unset throughout, where it occurs four times.
    _, valid, reward = trainer.score(atoms, bonds, asked((0, None), (1, None), (1, None), (None, None)))
    assert all(valid) and reward.tolist() == pytest.approx([1 / 4] * 4)
    # logP bins 0, 1, 1, unset and QED bins 0, 1, 0, 1: the first is alone in logP bin 0 and with
    # the third in QED bin 0; every sample's largest count is 2.
    _, _, reward = trainer.score(atoms, bonds, asked((0, 0), (1, 1), (1, 0), (None, 1)))
    assert reward.tolist() == pytest.approx([1 / 2] * 4)
    _, _, reward = trainer.score(atoms, bonds, asked((0, 0), (1, 1), (1, 1), (1, 1)))
    assert reward.tolist() == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3])
    # A second grid, shifted by half a bin: its middle bin holds both sides of the first's edge.
    config = debug_config(*overrides, "reward.uniqueness_grids=2")
    trainer = Trainer(config, tmp_path / "run2", progress=False)
    first, second = trainer.target_edges
    quartiles = torch.nanquantile(trainer.train_conditions, torch.tensor([0.25, 0.75]), 0).T
    assert second.shape == (2, 2) and torch.allclose(second, quartiles)
    near = [first[:, 0] - 0.01, first[:, 0] + 0.01]  # either side of the median, inside (25th, 75th)
    asked = torch.stack(near)
    assert trainer.uniqueness_contexts(asked) == [("logp:0", "qed:0", "logp~1:1", "qed~1:1"),
                                                 ("logp:1", "qed:1", "logp~1:1", "qed~1:1")]
    _, _, reward = trainer.score(atoms[:2], bonds[:2], asked)
    assert reward.tolist() == pytest.approx([1 / 2, 1 / 2])  # one grid would count each once
    with pytest.raises(ConfigError, match="uniqueness_bins"):
        debug_config("reward.uniqueness_bins=10")  # no conditions
    with pytest.raises(ConfigError, match="uniqueness_bins"):
        debug_config(*CONDITIONAL_OVERRIDES, "reward.weights={validity: 1.0}", "reward.uniqueness_bins=10")


def test_the_matching_aware_critic_scores_real_graphs_with_shuffled_conditions_as_generated(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    from molgan.training.trainer import Penalty, critic_loss

    config = debug_config(*CONDITIONAL_OVERRIDES, "train.mismatch_weight=0.5", "train.n_critic=1")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    real, _ = trainer.real_batch()
    g = torch.Generator().manual_seed(0)
    fake = real.with_conditions(torch.randn(real.conditions.shape, generator=g))
    other = real.with_conditions(real.conditions.flip(0))
    critic = trainer.discriminator
    eps = torch.rand(len(real.atoms), generator=g)

    def score(x: Graphs) -> torch.Tensor:
        return critic(x.atoms, x.bonds, x.conditions).mean()

    for w in (0.0, 0.5, 1.0):
        loss, w_distance, gp = critic_loss(critic, real, fake, eps, Penalty(0.0), mismatched=other,
                                           mismatch_weight=w)
        expected = (1 - w) * score(fake) + w * score(other) - score(real)
        assert gp is None and loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
        assert w_distance.item() == pytest.approx(-expected.item(), rel=1e-5, abs=1e-6)
    # The trainer's update shuffles the real conditions and trains the critic on them.
    before = [p.detach().clone() for p in critic.parameters()]
    stats = trainer.critic_step(1.0, 0)
    assert math.isfinite(stats["d_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, critic.parameters(), strict=True))
    with pytest.raises(ConfigError, match="mismatch_weight"):
        debug_config("train.mismatch_weight=0.5")  # no conditions to shuffle


def test_a_conditional_generator_starts_from_an_unconditional_one(
    debug_run: Path, debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    source = MoleculeSampler.load(debug_run / "last.safetensors").generator
    config = debug_config(*CONDITIONAL_OVERRIDES, f"train.init_generator={debug_run / 'last.safetensors'}")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    z = torch.randn(5, config.model.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = source(z)
        for targets in (None, torch.tensor([[1.5, -0.5]] * 5)):
            after = trainer.generator(z, targets)
            assert torch.allclose(after.atoms, before.atoms, atol=1e-6)
            assert torch.allclose(after.pairs, before.pairs, atol=1e-6)
    trainer.train()  # and it trains from there


def test_an_unconditional_run_cannot_start_from_a_conditional_generator(
    conditional_run: Path, debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config(f"train.init_generator={conditional_run / 'last.safetensors'}")
    with pytest.raises(ConfigError, match="another generator"):
        Trainer(config, tmp_path / "run", progress=False)


# ---------------------------------------------------------------------------------- sampling


def test_sampling_at_targets_is_reproducible_and_targets_matter(conditional_run: Path) -> None:
    sampler = MoleculeSampler.load(conditional_run / "last.safetensors")
    assert sampler.conditions is not None
    low, high = (sampler.conditions["logp"].percentiles[p] for p in (10, 90))
    gumbel = sampler.settings("gumbel")
    a = sampler.graphs(64, seed=5, settings=gumbel, targets={"logp": low})
    b = sampler.graphs(64, seed=5, settings=gumbel, targets={"logp": low})
    c = sampler.graphs(64, seed=5, settings=gumbel, targets={"logp": high})
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))
    filtered = sample_filtered(sampler, 10, seed=5, settings=gumbel, targets={"logp": low})
    assert filtered.samples == sampler.sample(10, seed=5, settings=gumbel, targets={"logp": low})
    with pytest.raises(TargetError, match=r"targets\.qed"):
        sample_filtered(sampler, 0, targets={"qed": 5.0})


def test_the_python_interface_takes_targets(conditional_run: Path) -> None:
    model = molgan.load(conditional_run / "last.safetensors")
    assert [c["name"] for c in model.conditions] == ["logp", "qed"]
    assert model.info()["conditions"] == model.conditions
    qed = model.conditions[1]["percentiles"]["50"]
    got = model.generate(6, seed=2, mode="gumbel", targets={"qed": qed})
    sampler = MoleculeSampler.load(conditional_run / "last.safetensors")
    assert got == sampler.sample(6, seed=2, settings=sampler.settings("gumbel"), targets={"qed": qed})
    with pytest.raises(TargetError, match="not conditional"):
        molgan.load("qm9").generate(2, targets={"qed": 0.5})
    assert molgan.load("qm9").conditions == []


def test_the_command_line_takes_targets(conditional_run: Path, tmp_path: Path) -> None:
    ckpt = conditional_run / "last.safetensors"
    out = tmp_path / "at.jsonl"
    result = runner.invoke(app, ["sample", str(ckpt), "-n", "8", "--seed", "4", "--mode", "gumbel",
                                 "--target", "logp=0.3", "--target", "qed=0.45", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    sampler = MoleculeSampler.load(ckpt)
    expected = sampler.sample(8, seed=4, settings=sampler.settings("gumbel"),
                              targets={"logp": 0.3, "qed": 0.45})
    import json

    written = [json.loads(line)["smiles"] for line in out.read_text().splitlines()]
    assert written == [s.smiles for s in expected]
    for args, message in [(["--target", "logp=99"], "targets.logp"), (["--target", "mw=1"], "targets.mw"),
                          (["--target", "logp"], "PROPERTY=VALUE")]:
        bad = runner.invoke(app, ["sample", str(ckpt), "-n", "2", *args])
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    plain = runner.invoke(app, ["sample", "--model", "qm9", "-n", "2", "--target", "qed=0.5"])
    assert plain.exit_code == 2 and "not conditional" in plain.stderr


# -------------------------------------------------------------------------------- evaluation


def test_the_grid_asks_for_the_training_percentiles() -> None:
    conditions = two_conditions()
    grid = target_grid(conditions)
    assert len(grid) == 2 * len(GRID_PERCENTILES) + 2
    assert grid[0].targets == {"logp": conditions["logp"].percentiles[10]}
    assert grid[-2].targets == {"logp": conditions["logp"].percentiles[25],
                                "qed": conditions["qed"].percentiles[75]}


def test_figures_and_spearman_by_hand() -> None:
    values = np.array([1.0, 1.2, np.nan, 2.0])
    f = achieved_figures(values, 1.1, 0.25, n=4)
    assert f["mean"] == pytest.approx(4.2 / 3) and f["mae"] == pytest.approx((0.1 + 0.1 + 0.9) / 3)
    assert f["within"] == pytest.approx(2 / 4)  # the invalid sample counts as a miss
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Ties take their average rank: ranks (1.5, 1.5, 3) against (1, 2, 3).
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1])
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_evaluate_targets_reports_every_grid_point(conditional_run: Path) -> None:
    sampler = MoleculeSampler.load(conditional_run / "last.safetensors")
    baseline = MoleculeSampler.load("qm9")
    report = evaluate_targets(sampler, baseline, 40, seed=1, settings=sampler.settings("gumbel"))
    assert [r["target"] for r in report["rows"]] == [p.label for p in target_grid(sampler.conditions)]
    first = report["rows"][0]
    assert set(first) >= {"validity", "uniqueness", "logp", "baseline_logp"}
    assert 0.0 <= first["baseline_logp"]["within"] <= 1.0
    assert set(report["spearman"]) == set(report["spearman_of_means"]) == {"logp", "qed"}
    result = runner.invoke(app, ["evaluate", str(conditional_run / "last.safetensors"), "--targets",
                                 "-n", "20", "--baseline", "none"])
    assert result.exit_code == 0, result.stderr
    assert "logp p10" in result.stdout and "Spearman" in result.stdout
    plain = runner.invoke(app, ["evaluate", "--model", "qm9", "--targets", "-n", "20"])
    assert plain.exit_code == 2 and "conditional" in plain.stderr


def test_graphs_carry_their_conditions_through_slicing() -> None:
    g = Graphs(torch.zeros(4, 3, 2), torch.zeros(4, 3, 3, 2), torch.arange(8.0).view(4, 2))
    assert g[1:3].conditions.tolist() == [[2.0, 3.0], [4.0, 5.0]]
    assert Graphs(torch.zeros(4, 3, 2), torch.zeros(4, 3, 3, 2))[:2].conditions is None


def test_hindsight_raises_the_likelihood_of_each_graph_given_its_own_properties(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    from molgan.training.rl import RLTerm

    config = debug_config(*CONDITIONAL_OVERRIDES, "train.hindsight_weight=1.0")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    rows = torch.arange(8)
    atoms, bonds = trainer.train_data.graphs(rows)
    smiles = [trainer.train_smiles_by_row[i] for i in rows.tolist()]
    valid = [True] * 7 + [False]  # the last one is left out as if it were not a molecule
    asked = torch.zeros(8, 2)
    asked[::2, 1] = math.nan  # QED unset for every other graph: it stays unset
    z = trainer.generator.noise(8, torch.Generator().manual_seed(0))
    own = trainer.achieved(smiles, valid)
    assert torch.allclose(own[:7], trainer.train_conditions[rows][:7]) and torch.isnan(own[7]).all()
    relabelled = torch.where(torch.isnan(asked), asked, own)

    def likelihood() -> torch.Tensor:
        with torch.no_grad():
            return trainer.generator(z[:7], relabelled[:7]).log_prob(atoms[:7], bonds[:7])

    before = likelihood()
    rl = RLTerm(None, torch.zeros(8), smiles, valid, graphs=(atoms, bonds))
    stats = trainer.hindsight_step(z, asked, rl)
    assert stats["hindsight_nll"] == pytest.approx(-before.mean().item(), rel=1e-5)
    assert likelihood().mean() > before.mean()
    with pytest.raises(ConfigError, match="hindsight"):
        debug_config("train.hindsight_weight=1.0", "train.rl_estimator=reinforce")


def test_hindsight_per_molecule_weighs_each_graph_as_the_uniqueness_reward_does(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    from molgan.rewards import RewardFunction
    from molgan.training.rl import RLTerm

    config = debug_config(*CONDITIONAL_OVERRIDES, "train.hindsight_weight=1.0",
                          "train.hindsight_per_molecule=true", "reward.memory_size=100")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    rows = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 3])  # one molecule six times
    atoms, bonds = trainer.train_data.graphs(rows)
    smiles = [trainer.train_smiles_by_row[i] for i in rows.tolist()]
    valid = [True] * 8 + [False]
    uniqueness = RewardFunction({"uniqueness": 1.0}, memory_size=100)
    rl = RLTerm(None, torch.zeros(9), smiles, valid, graphs=(atoms, bonds))
    asked = torch.zeros(9, 2)
    for seen in (1, 2):  # the same batch scored again: the memory now holds it twice
        scored = [s if ok else None for s, ok in zip(smiles, valid, strict=True)]
        trainer.reward_fn(scored)
        expected = uniqueness(scored)[:8]
        weights = trainer.hindsight_weights(rl, asked)
        assert weights.cpu().tolist() == pytest.approx(expected.tolist())
        assert weights.cpu().tolist() == pytest.approx([1 / (6 * seen)] * 6 + [1 / seen] * 2)
    z = trainer.generator.noise(9, torch.Generator().manual_seed(0))
    own = trainer.achieved(smiles, valid)
    with torch.no_grad():
        before = trainer.generator(z[:8], own[:8]).log_prob(atoms[:8], bonds[:8])
    trainer.hindsight_step(z, asked, rl)
    with torch.no_grad():
        after = trainer.generator(z[:8], own[:8]).log_prob(atoms[:8], bonds[:8])
    assert after.mean() > before.mean()
    with pytest.raises(ConfigError, match="hindsight_per_molecule"):
        debug_config(*CONDITIONAL_OVERRIDES, "train.hindsight_weight=1.0",
                     "train.hindsight_per_molecule=true", "reward.memory_size=0")


def test_samples_per_target_asks_each_target_of_a_step_several_times(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config(*CONDITIONAL_OVERRIDES, "train.samples_per_target=4", "train.rl_samples_per_z=2",
                          "train.batch_size=32")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    targets = trainer.step_targets(2)
    assert targets is not None and targets.shape == (32, 2)
    groups = targets.nan_to_num(99.0).view(4, 8, 2)
    assert (groups == groups[:, :1]).all()  # one target for each 8 consecutive graphs
    assert len({tuple(g[0].tolist()) for g in groups}) == 4  # and another for each group
    trainer.train_step(trainer.tau())  # a whole step runs on the grouped targets
    with pytest.raises(ConfigError, match=r"samples_per_target \(3\)"):
        debug_config(*CONDITIONAL_OVERRIDES, "train.samples_per_target=3", "train.batch_size=32")
    with pytest.raises(ConfigError, match=r"samples_per_target > 1 needs model.conditions"):
        debug_config("train.samples_per_target=4")


def test_paired_targets_give_the_mode_seeking_pairs_one_target(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = debug_config(*CONDITIONAL_OVERRIDES, "train.paired_targets=true", "train.samples_per_target=2",
                          "train.mode_seeking_weight=1.0", "train.batch_size=16")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    targets = trainer.step_targets(1)
    assert targets is not None and targets.shape == (16, 2)
    first, second = targets.nan_to_num(99.0).split(8)
    assert torch.equal(first, second)  # graph i and graph i + 8, the pairs of the mode-seeking term
    groups = first.view(4, 2, 2)
    assert (groups == groups[:, :1]).all() and len({tuple(g[0].tolist()) for g in groups}) == 4
    step = trainer.train_step(trainer.tau())  # a whole step runs on the paired targets
    assert step["mode_seeking"] > 0
    # Off, the halves ask for different targets.
    plain = Trainer(debug_config(*CONDITIONAL_OVERRIDES, "train.batch_size=16"), tmp_path / "plain",
                    progress=False).step_targets(1)
    assert plain is not None and not torch.equal(*plain.nan_to_num(99.0).split(8))
    with pytest.raises(ConfigError, match=r"samples_per_target \(2\) x 2 \(train.paired_targets\)"):
        debug_config(*CONDITIONAL_OVERRIDES, "train.paired_targets=true", "train.samples_per_target=2",
                     "train.mode_seeking_weight=1.0", "train.batch_size=10")  # not 2 x groups of 2
    with pytest.raises(ConfigError, match=r"paired_targets needs model\.conditions and train\.mode_seeking"):
        debug_config(*CONDITIONAL_OVERRIDES, "train.paired_targets=true")


def test_missed_bars_names_each_bar_a_report_misses() -> None:
    from molgan.target_evaluation import missed_bars

    def figures(mae: float | None, within: float) -> dict[str, float | None]:
        return {"mean": 0.0, "std": 0.0, "mae": mae, "within": within}

    good = {"target": "logp p10", "targets": {"logp": -0.8}, "validity": 0.99, "uniqueness": 0.8,
            "logp": figures(0.2, 0.3), "baseline_logp": figures(1.0, 0.1)}
    assert missed_bars({"rows": [good], "spearman": {"logp": 0.95}}) == []
    bad = good | {"uniqueness": 0.6, "logp": figures(0.4, 0.2)}
    missed = missed_bars({"rows": [bad], "spearman": {"logp": 0.5}})
    assert len(missed) == 4  # uniqueness, MAE, 2x the baseline's share, Spearman
    assert any("uniqueness" in m for m in missed) and any("Spearman" in m for m in missed)
    assert any("2.00x" in m for m in missed)
    middle = good | {"target": "logp p50", "logp": figures(0.2, 0.1)}  # the ratio counts at p10/p90 only
    assert missed_bars({"rows": [middle], "spearman": {"logp": 0.95}}) == []
