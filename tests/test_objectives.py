"""The MolGAN paper's objective scores and the hit counts, on real molecules scored by RDKit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rdkit import Chem
from rdkit.Chem import QED, Crippen
from typer.testing import CliRunner

import molgan
from molgan.cli import app
from molgan.metrics import sa_score
from molgan.objectives import (
    LOGP_HIGH,
    LOGP_LOW,
    HitRule,
    objective_metrics,
    paper_score,
    parse_hit_rule,
)
from molgan.sampling import MoleculeSampler

runner = CliRunner()


def test_paper_scores_follow_the_published_maps() -> None:
    assert paper_score("logp", LOGP_LOW) == 0.0
    assert paper_score("logp", LOGP_HIGH) == 1.0
    assert paper_score("logp", 1.0) == pytest.approx((1.0 + 2.12178879609) / (6.0429063424 + 2.12178879609))
    assert paper_score("logp", -5.0) == 0.0 and paper_score("logp", 9.0) == 1.0
    assert paper_score("sa", 5.0) == 0.0 and paper_score("sa", 1.5) == 1.0
    assert paper_score("sa", 3.25) == pytest.approx(0.5)
    assert paper_score("sa", 8.0) == 0.0 and paper_score("sa", 1.0) == 1.0
    assert paper_score("qed", 0.42) == 0.42
    with pytest.raises(ValueError, match="unknown objective"):
        paper_score("mw", 1.0)


def test_objective_metrics_count_invalid_samples_as_zero_and_hits_once() -> None:
    benzamide, ethanol = "NC(=O)c1ccccc1", "CCO"
    samples = [benzamide, benzamide, ethanol, None, "C1CC", "C.C"]  # None, unparsable, 2 fragments
    found = objective_metrics(samples, hits={"qed": HitRule("qed", 0.5)})
    qed = {s: QED.qed(Chem.MolFromSmiles(s)) for s in (benzamide, ethanol)}
    assert qed[benzamide] >= 0.5 > qed[ethanol]
    assert found["qed_normalized"] == pytest.approx((2 * qed[benzamide] + qed[ethanol]) / 6)
    assert found["qed_valid_mean"] == pytest.approx((2 * qed[benzamide] + qed[ethanol]) / 3)
    assert found["qed_hits"] == pytest.approx(1 * 10_000 / 6)  # the repeat is one hit
    assert found["qed_hit_rule"] == "qed >= 0.5"
    logp = {s: Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in (benzamide, ethanol)}
    assert found["logp_normalized"] == pytest.approx(
        (2 * paper_score("logp", logp[benzamide]) + paper_score("logp", logp[ethanol])) / 6)
    sa = {s: sa_score(Chem.MolFromSmiles(s)) for s in (benzamide, ethanol)}
    assert found["sa_valid_mean"] == pytest.approx((2 * sa[benzamide] + sa[ethanol]) / 3)
    assert found["sa_hit_rule"] == "sa <= 2.5"  # the default; lower SA is better
    assert found["sa_hits"] == pytest.approx(sum(v <= 2.5 for v in sa.values()) * 10_000 / 6)


def test_nothing_valid_scores_zero_and_no_samples_is_an_error() -> None:
    found = objective_metrics([None, "C1CC"])
    assert found["qed_normalized"] == found["qed_valid_mean"] == found["qed_hits"] == 0.0
    with pytest.raises(ValueError, match="no samples"):
        objective_metrics([])


@pytest.mark.parametrize(
    ("text", "message"),
    [("qed", "OBJECTIVE=VALUE"), ("mw=3", "OBJECTIVE=VALUE"), ("qed=high", "not a number"),
     ("logp=nan", "finite")],
)
def test_bad_hit_rules_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hit_rule(text)
    assert parse_hit_rule(" sa=3").passes(2.9) and not parse_hit_rule("logp=2").passes(1.9)


def test_evaluate_objectives_scores_the_samples(toy_checkpoint: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(toy_checkpoint), "-n", "60", "--seed", "3",
                                 "--objectives", "--hit", "qed=0.3", "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    sampler = MoleculeSampler.load(toy_checkpoint)
    smiles = [s.smiles for s in sampler.sample(60, seed=3, settings=sampler.settings())]
    expected = objective_metrics(smiles, hits={"qed": HitRule("qed", 0.3)})
    assert any(s is not None for s in smiles)
    for key, value in expected.items():
        assert metrics[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    from_python = molgan.load(toy_checkpoint).evaluate(60, seed=3, objectives=True)
    assert from_python["qed_hits"] == objective_metrics(smiles)["qed_hits"]  # the default rule
    assert from_python["logp_normalized"] == pytest.approx(metrics["logp_normalized"])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--hit", "qed=0.5"], "--hit needs --objectives"),
     (["--objectives", "--hit", "weight=3"], "--hit: expected OBJECTIVE=VALUE"),
     (["--objectives", "--benchmark", "moses"], "without --benchmark")],
)
def test_evaluate_objective_options_are_usage_errors(
    toy_checkpoint: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["evaluate", str(toy_checkpoint), "-n", "20", *args])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
