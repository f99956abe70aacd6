"""Conditional models in the service: their conditions in GET /v1/models, targets in
POST /v1/generate, and the 422s for targets a model cannot take.

TestClient (inside ``with``, so the lifespan loads the models), as the other API tests. The trained
conditional run of a few steps has not learnt to make molecules yet, so a template checkpoint with
its condition statistics (tests/api_support.py) shows that targets reach the generator.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from molgan.api.app import create_app
from molgan.api.settings import Settings
from molgan.conditions import TOLERANCES
from molgan.config import load_config
from molgan.metrics import properties
from molgan.sampling import MoleculeSampler, sample_filtered
from tests.api_support import write_template_checkpoint
from tests.conftest import CONDITIONAL_OVERRIDES, DEBUG_CONFIG
from tests.test_api import error_fields, generate, metric, occupied_pool

TARGETS = {"logp": 1.5, "qed": 0.45}


def conditional_template(path: Path, trained: Path) -> Path:
    """A template checkpoint (molecules from the first step) of a model conditioned on logP and
    QED, with the condition statistics of the ``trained`` conditional checkpoint."""
    conditions = MoleculeSampler.load(trained).conditions
    assert conditions is not None
    config = load_config(DEBUG_CONFIG, list(CONDITIONAL_OVERRIDES))
    return write_template_checkpoint(config, path, conditions=conditions.to_list())


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, api_checkpoint: Path, conditional_run: Path) -> Path:
    """``chain`` (conditional template, the default: first by name), ``plain`` (unconditional)
    and ``trained`` (the conditional training run's checkpoint)."""
    folder = tmp_path_factory.mktemp("conditional-models")
    trained = conditional_run / "last.safetensors"
    conditional_template(folder / "chain.safetensors", trained)
    shutil.copy(api_checkpoint, folder / "plain.safetensors")
    shutil.copy(trained, folder / "trained.safetensors")
    return folder


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models=str(models_dir), worker_threads=2))) as c:
        yield c


@pytest.fixture(scope="module")
def chain(models_dir: Path) -> MoleculeSampler:
    return MoleculeSampler.load(models_dir / "chain.safetensors")


def smiles(answer: dict[str, Any]) -> list[str | None]:
    return [m["smiles"] for m in answer["molecules"]]


def error(response: Any) -> dict[str, Any]:
    """The one error of a 422."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert len(errors) == 1, errors
    return errors[0]


# --------------------------------------------------------------------------- GET /v1/models


def test_models_list_the_conditions_of_conditional_models(client: TestClient, models_dir: Path) -> None:
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    for name in ("chain", "trained"):
        conditions = listed[name]["conditions"]
        sampler = MoleculeSampler.load(models_dir / f"{name}.safetensors")
        assert sampler.conditions is not None
        assert conditions == sampler.conditions.to_list() == sampler.describe()["conditions"]
        assert [c["name"] for c in conditions] == ["logp", "qed"]
        for c in conditions:
            percentiles = c["percentiles"]
            assert list(percentiles) == ["10", "25", "50", "75", "90"]
            assert c["low"] < percentiles["10"] < percentiles["50"] < percentiles["90"] < c["high"]
            assert c["std"] > 0 and c["low"] < c["mean"] < c["high"]
            assert c["tolerance"] == TOLERANCES[c["name"]]
    assert listed["plain"]["conditions"] == []
    assert client.get("/v1/model", params={"name": "trained"}).json() == listed["trained"]


def test_openapi_describes_targets_and_conditions(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    targets = schemas["GenerateRequest"]["properties"]["targets"]
    assert "conditions" in targets["description"] and "422" in targets["description"]
    assert targets["anyOf"][0] == {"type": "object", "additionalProperties": {"type": "number"}}
    conditions = schemas["ModelInfo"]["properties"]["conditions"]
    assert conditions["items"]["$ref"].endswith("/ConditionInfo") and conditions["description"]
    assert "conditions" in schemas["ModelInfo"]["required"]
    condition = schemas["ConditionInfo"]
    assert set(condition["properties"]) == {"name", "low", "high", "mean", "std", "percentiles", "tolerance"}
    assert all(field["description"] for field in condition["properties"].values())
    assert condition["properties"]["name"]["enum"] == ["logp", "qed", "sa", "mol_weight"]


# --------------------------------------------------------------------------- POST /v1/generate


def test_generate_with_targets_is_the_librarys_sample(client: TestClient, chain: MoleculeSampler) -> None:
    answer = generate(client, model="chain", n=30, seed=7, targets=TARGETS, valid_only=True, properties=True)
    expected = sample_filtered(chain, 30, seed=7, settings=chain.settings(), valid_only=True, targets=TARGETS)
    assert smiles(answer) == [s.smiles for s in expected.samples]
    assert answer["stats"]["sampled"] == expected.sampled and answer["stats"]["returned"] == 30
    for m in answer["molecules"]:  # the achieved values the page shows beside each molecule
        achieved = properties(m["smiles"])
        assert (m["logp"], m["qed"]) == pytest.approx((achieved["logp"], achieved["qed"]))
    # Without filters the answer is one call of the sampler.
    raw = generate(client, model="chain", n=30, seed=7, targets=TARGETS)
    assert smiles(raw) == [s.smiles for s in chain.sample(30, seed=7, targets=TARGETS)]


def test_targets_reach_the_model(client: TestClient, chain: MoleculeSampler) -> None:
    asked = smiles(generate(client, model="chain", n=40, seed=3, targets=TARGETS))
    unset = smiles(generate(client, model="chain", n=40, seed=3))
    low = smiles(generate(client, model="chain", n=40, seed=3, targets={"logp": -2.0}))
    assert asked != unset and asked != low and low != unset
    assert low == [s.smiles for s in chain.sample(40, seed=3, targets={"logp": -2.0})]  # qed left unset
    # No targets, or an empty object, leave every condition to the model.
    assert smiles(generate(client, model="chain", n=40, seed=3, targets={})) == unset
    assert smiles(generate(client, model="chain", n=40, seed=3, targets=None)) == unset
    assert unset == [s.smiles for s in chain.sample(40, seed=3)]


@pytest.mark.parametrize(
    ("targets", "field", "says"),
    [
        ({"mol_weight": 120.0}, "mol_weight", "this model is conditioned on logp, qed, not 'mol_weight'"),
        ({"logp": 1.0, "density": 1.0}, "density", "this model is conditioned on logp, qed, not 'density'"),
        ({"logp": 99.0}, "logp", "must be within ["),
        ({"logp": 1.0, "qed": -0.5}, "qed", "must be within ["),
        ({"logp": "high"}, "logp", "Input should be a valid number"),
        ({"logp": True}, "logp", "Input should be a valid number"),
        ({"qed": None}, "qed", "Input should be a valid number"),
        ({"qed": [0.5]}, "qed", "Input should be a valid number"),
    ],
)
def test_bad_targets_are_a_422_naming_the_target(
    client: TestClient, targets: dict[str, Any], field: str, says: str
) -> None:
    response = client.post("/v1/generate", json={"model": "trained", "n": 2, "targets": targets})
    found = error(response)
    assert found["loc"] == ["body", "targets", field]
    assert found["msg"].startswith(says)
    assert found["input"] == targets[field]


def test_targets_that_are_not_an_object_or_not_finite_are_a_422(client: TestClient) -> None:
    assert error(client.post("/v1/generate", json={"n": 2, "targets": [1.5]}))["loc"] == ["body", "targets"]
    response = client.post("/v1/generate", content=b'{"n": 2, "targets": {"logp": NaN}}',
                           headers={"Content-Type": "application/json"})
    found = error(response)
    assert found["loc"] == ["body", "targets", "logp"] and found["input"] == "nan"


def test_targets_for_an_unconditional_model_are_a_422(client: TestClient, api_checkpoint: Path) -> None:
    found = error(client.post("/v1/generate", json={"model": "plain", "n": 2, "targets": {"logp": 1.0}}))
    assert found["loc"] == ["body", "targets", "logp"]
    assert found["msg"] == "this model is not conditional: it takes no targets"
    unknown = client.post("/v1/generate", json={"model": "plain", "n": 2, "targets": {"x": 1}})
    assert error_fields(unknown) == ["targets.x"]
    # Nothing asked is fine.
    plain = generate(client, model="plain", n=20, seed=2, targets={})
    assert smiles(plain) == [s.smiles for s in MoleculeSampler.load(api_checkpoint).sample(20, seed=2)]


def test_targets_are_checked_before_any_sampling(models_dir: Path) -> None:
    # One sampling thread and no queue: with the thread busy, a request that reached the pool
    # would be a 503; a bad target is answered at once, and no sample is drawn for it.
    app = create_app(Settings(models=str(models_dir), worker_threads=1, max_queue=0))
    with TestClient(app) as client:
        with occupied_pool(app):
            bad = client.post("/v1/generate", json={"model": "chain", "n": 5, "targets": {"logp": 50.0}})
            good = client.post("/v1/generate", json={"model": "chain", "n": 5, "targets": TARGETS})
        assert error(bad)["loc"] == ["body", "targets", "logp"]
        assert good.status_code == 503
        bad = client.post("/v1/generate", json={"model": "chain", "n": 5, "targets": {"qed": 2.0}})
        assert error(bad)["loc"] == ["body", "targets", "qed"]
        assert metric(client.get("/metrics").text, "molgan_samples_drawn_total", model="chain") == 0


# --------------------------------------------------------------------------- the page


def test_page_has_sliders_for_conditions(client: TestClient) -> None:
    # The page builds them from GET /v1/models; tests/test_browser.py drives them in Chromium.
    page = client.get("/").text
    for needle in ('id="conditions"', 'slider.type = "range"', "info.conditions", "request.targets",
                   'percentiles["50"]', "achieved"):
        assert needle in page
