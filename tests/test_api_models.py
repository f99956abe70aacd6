"""Several models in one service: which checkpoints are served (MOLGAN_MODELS, MOLGAN_CHECKPOINT,
the bundled ones), under which names, the default model, and choosing a model per request.

TestClient (inside ``with``, so the lifespan loads the models) for the app; the catalog's pure
functions directly; ``molgan serve`` for its start-up errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from molgan.api.app import create_app
from molgan.api.catalog import CatalogError, default_model, served_checkpoints
from molgan.api.settings import Settings
from molgan.checkpoint import bundled_checkpoint_path, bundled_models
from molgan.cli import app as cli
from molgan.config import load_config
from molgan.sampling import MoleculeSampler
from tests.api_support import free_port, write_template_checkpoint
from tests.conftest import DEBUG_CONFIG
from tests.test_api import clean_settings_cache, error_fields, metric  # noqa: F401 (a fixture)

FIGURES = {"validity": 0.5, "uniqueness": 0.75, "novelty": 1.0, "fcd": 12.5}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, api_checkpoint: Path) -> Path:
    """A folder of two checkpoints: ``chain`` (the API tests' checkpoint, with an evaluation
    report beside it) and ``branch`` (the same architecture, other output weights)."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(api_checkpoint, folder / "chain.safetensors")
    (folder / "chain.eval.json").write_text(json.dumps(FIGURES))
    write_template_checkpoint(
        load_config(DEBUG_CONFIG, ["reward.weights={validity: 1.0, sa: 0.5, qed: 2.0}"]),
        folder / "branch.safetensors", seed=5, metrics={"validity": 0.25}
    )
    (folder / "notes.txt").write_text("not a checkpoint")
    return folder


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models=str(models_dir), worker_threads=2))) as c:
        yield c


def startup_error(settings: Settings, caplog: pytest.LogCaptureFixture) -> str:
    """The one line the lifespan logs when ``settings`` cannot start a server."""
    with caplog.at_level(logging.ERROR, logger="molgan.api"), pytest.raises(ValueError), TestClient(
        create_app(settings)
    ):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "molgan.api"]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    return lines[0]


# --------------------------------------------------------------------------- which checkpoints


def test_a_folder_serves_its_checkpoints_by_stem_in_name_order(models_dir: Path) -> None:
    files = served_checkpoints(str(models_dir), None)
    assert files == {"branch": models_dir / "branch.safetensors", "chain": models_dir / "chain.safetensors"}


def test_a_list_serves_its_files_in_the_given_order(models_dir: Path) -> None:
    chain, branch = models_dir / "chain.safetensors", models_dir / "branch.safetensors"
    assert list(served_checkpoints(f" {chain} ,{branch}", None)) == ["chain", "branch"]
    assert served_checkpoints(str(chain), None) == {"chain": chain}


def test_without_settings_every_bundled_model_is_served() -> None:
    files = served_checkpoints(None, None)
    assert list(files) == bundled_models() and "qm9" in files
    assert files["qm9"] == bundled_checkpoint_path("qm9")


def test_the_single_checkpoint_setting_still_serves_one_file(api_checkpoint: Path) -> None:
    assert served_checkpoints(None, api_checkpoint) == {"debug": api_checkpoint}


@pytest.mark.parametrize(
    ("models", "says"),
    [
        ("", "MOLGAN_MODELS is empty"),
        ("{dir}/chain.safetensors,,{dir}/branch.safetensors", "MOLGAN_MODELS has an empty entry"),
        ("{dir}/no-such-folder", "is neither a folder nor a *.safetensors file"),
        ("{dir}/notes.txt", "is neither a folder nor a *.safetensors file"),
        ("{empty}", "no *.safetensors file in the folder"),
        ("{dir}/chain.safetensors,{copy}/chain.safetensors", "two checkpoints named 'chain'"),
    ],
)
def test_bad_model_lists_are_one_line_errors(
    models: str, says: str, models_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "copy").mkdir()
    shutil.copy(models_dir / "chain.safetensors", tmp_path / "copy" / "chain.safetensors")
    spec = models.format(dir=models_dir, empty=tmp_path / "empty", copy=tmp_path / "copy")
    with pytest.raises(CatalogError, match=r"^[^\n]*$") as caught:
        served_checkpoints(spec, None)
    assert says in str(caught.value)


def test_duplicate_names_name_both_files(models_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "chain.safetensors"
    shutil.copy(models_dir / "chain.safetensors", other)
    with pytest.raises(CatalogError) as caught:
        served_checkpoints(f"{models_dir / 'chain.safetensors'},{other}", None)
    assert str(models_dir / "chain.safetensors") in str(caught.value) and str(other) in str(caught.value)


def test_models_and_checkpoint_together_are_an_error(models_dir: Path, api_checkpoint: Path) -> None:
    with pytest.raises(CatalogError, match="not both"):
        served_checkpoints(str(models_dir), api_checkpoint)


def test_the_default_model() -> None:
    assert default_model(["branch", "chain"], None) == "branch"  # the first
    assert default_model(["moses", "qm9"], None) == "qm9"  # the bundled default wherever it is
    assert default_model(["moses", "qm9"], "moses") == "moses"
    with pytest.raises(CatalogError, match="MOLGAN_DEFAULT_MODEL 'zinc' is not served; served: moses, qm9"):
        default_model(["moses", "qm9"], "zinc")


# --------------------------------------------------------------------------- the API


def test_models_lists_every_model_with_its_vocabulary_defaults_and_figures(
    client: TestClient, models_dir: Path
) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    listed = response.json()
    assert listed["default"] == "branch"
    assert [m["name"] for m in listed["models"]] == ["branch", "chain"]
    assert [m["default"] for m in listed["models"]] == [True, False]
    for info in listed["models"]:
        path = models_dir / f"{info['name']}.safetensors"
        described = MoleculeSampler.load(path).describe()
        assert info["checkpoint"] == path.name
        assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert info["config"] == "debug"
        assert (info["vocab"], info["sampling"], info["z_dim"]) == (
            described["vocab"], described["sampling"], described["z_dim"]
        )
        assert info["vocab"]["max_atoms"] == 9 and info["vocab"]["atoms"][0] == "*"
    by_name = {m["name"]: m for m in listed["models"]}
    assert by_name["chain"]["metrics"] == FIGURES  # the report beside the checkpoint
    assert by_name["branch"]["metrics"] == {"validity": 0.25}  # none beside it: the checkpoint's own
    assert by_name["branch"]["objectives"] == ["qed", "sa"] and by_name["chain"]["objectives"] == []
    assert str(models_dir) not in response.text  # names, file names and hashes, never paths


def test_model_by_name_and_the_default_without_one(client: TestClient) -> None:
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert client.get("/v1/model", params={"name": "chain"}).json() == listed["chain"]
    assert client.get("/v1/model").json() == listed["branch"]


def test_unknown_model_is_a_422_listing_the_served_ones(client: TestClient) -> None:
    for response, field in (
        (client.post("/v1/generate", json={"n": 2, "model": "qm9"}), "model"),
        (client.get("/v1/model", params={"name": "qm9"}), "name"),
    ):
        assert response.status_code == 422
        assert error_fields(response) == [field]
        assert response.json()["detail"][0]["msg"] == "unknown model 'qm9'; this server serves: branch, chain"
    assert error_fields(client.post("/v1/generate", json={"n": 2, "model": ""})) == ["model"]
    assert error_fields(client.post("/v1/generate", json={"n": 2, "model": 7})) == ["model"]


def test_generate_samples_the_chosen_model(client: TestClient, models_dir: Path) -> None:
    answers = {}
    for name in ("branch", "chain"):
        answer = client.post("/v1/generate", json={"n": 30, "seed": 11, "model": name}).json()
        expected = MoleculeSampler.load(models_dir / f"{name}.safetensors").sample(30, seed=11)
        assert [m["smiles"] for m in answer["molecules"]] == [s.smiles for s in expected]
        assert answer["model"] == {"name": name, "config": "debug", "step": 0,
                                   "checkpoint": f"{name}.safetensors"}
        answers[name] = [m["smiles"] for m in answer["molecules"]]
    assert answers["branch"] != answers["chain"]  # two models, two sets of molecules
    unnamed = client.post("/v1/generate", json={"n": 30, "seed": 11}).json()
    assert unnamed["model"]["name"] == "branch"
    assert [m["smiles"] for m in unnamed["molecules"]] == answers["branch"]


def test_metrics_count_each_model_on_its_own(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models=str(models_dir)))) as client:
        before = client.get("/metrics").text
        chain = client.post("/v1/generate", json={"n": 12, "seed": 1, "model": "chain"}).json()
        client.post("/v1/generate", json={"n": 5, "seed": 1, "model": "branch"})
        client.post("/v1/generate", json={"n": 3, "seed": 2})
        text = client.get("/metrics").text
    # Every served model has its series from the start.
    assert metric(before, "molgan_molecules_generated_total", model="chain") == 0
    assert metric(before, "molgan_molecules_generated_total", model="branch") == 0
    assert metric(text, "molgan_molecules_generated_total", model="chain") == 12
    assert metric(text, "molgan_molecules_generated_total", model="branch") == 8
    assert metric(text, "molgan_molecules_valid_total", model="chain") == chain["stats"]["valid"]
    assert metric(text, "molgan_valid_rate", model="chain") == pytest.approx(chain["stats"]["valid"] / 12)


def test_ready_names_the_default_and_every_model(client: TestClient) -> None:
    ready = client.get("/ready").json()
    assert ready == {"status": "ready", "model": "branch", "models": ["branch", "chain"]}


def test_default_model_setting(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models=str(models_dir), default_model="chain"))) as client:
        assert client.get("/v1/models").json()["default"] == "chain"
        assert client.post("/v1/generate", json={"n": 1}).json()["model"]["name"] == "chain"
        assert client.get("/v1/model").json()["name"] == "chain"


def test_bundled_models_are_served_by_default_and_qm9_answers() -> None:
    with TestClient(create_app(Settings())) as client:
        listed = client.get("/v1/models").json()
        answer = client.post("/v1/generate", json={"n": 20, "seed": 7}).json()
    assert [m["name"] for m in listed["models"]] == bundled_models()
    assert listed["default"] == "qm9"
    qm9 = next(m for m in listed["models"] if m["name"] == "qm9")
    report = json.loads(bundled_checkpoint_path("qm9").with_name("qm9.eval.json").read_text())
    assert qm9["metrics"] == report
    assert qm9["vocab"]["atoms"] == ["*", "C", "N", "O", "F"] and qm9["vocab"]["max_atoms"] == 9
    expected = MoleculeSampler.load("qm9").sample(20, seed=7)
    assert [m["smiles"] for m in answer["molecules"]] == [s.smiles for s in expected]


def test_qm9_beside_another_model(api_checkpoint: Path) -> None:
    models = f"{bundled_checkpoint_path('qm9')},{api_checkpoint}"
    with TestClient(create_app(Settings(models=models))) as client:
        listed = client.get("/v1/models").json()
        debug = client.post("/v1/generate", json={"n": 5, "seed": 1, "model": "debug"}).json()
    assert [m["name"] for m in listed["models"]] == ["qm9", "debug"]
    assert listed["default"] == "qm9"  # not first by chance: qm9 is the default when served
    assert debug["model"]["name"] == "debug"


# --------------------------------------------------------------------------- start-up errors


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"models": "{dir}/missing"}, "cannot start: MOLGAN_MODELS: {dir}/missing is neither a folder"),
        ({"models": "{dir}", "default_model": "qm9"},
         "cannot start: MOLGAN_DEFAULT_MODEL 'qm9' is not served; served: branch, chain"),
        ({"models": "{dir}/chain.safetensors,{dir}/gone.safetensors"},
         "cannot start: checkpoint not found: {dir}/gone.safetensors"),
    ],
)
def test_bad_settings_stop_startup_with_one_line(
    settings: dict[str, Any], says: str, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filled = {k: v.format(dir=models_dir) for k, v in settings.items()}
    assert startup_error(Settings(**filled), caplog).startswith(says.format(dir=models_dir))


def test_a_broken_evaluation_report_stops_startup(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(models_dir / "chain.safetensors", tmp_path / "chain.safetensors")
    (tmp_path / "chain.eval.json").write_text("[0.5]")
    line = startup_error(Settings(models=str(tmp_path)), caplog)
    assert line == f"cannot start: {tmp_path / 'chain.eval.json'} is not a JSON object of evaluation figures"


@pytest.mark.usefixtures("clean_settings_cache")
@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({"MOLGAN_MODELS": "{dir}/chain.safetensors,{copy}"}, "two checkpoints named 'chain'"),
        ({"MOLGAN_MODELS": "{dir}", "MOLGAN_DEFAULT_MODEL": "zinc"}, "MOLGAN_DEFAULT_MODEL 'zinc' is not"),
        ({"MOLGAN_MODELS": "{dir}", "MOLGAN_CHECKPOINT": "{dir}/chain.safetensors"}, "not both"),
    ],
)
def test_molgan_serve_refuses_bad_model_settings_with_one_line(
    environment: dict[str, str], says: str, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "chain.safetensors"
    shutil.copy(models_dir / "chain.safetensors", copy)
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(dir=models_dir, copy=copy))
    result = CliRunner().invoke(cli, ["serve", "--port", str(free_port())])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert says in result.stderr
    assert result.stdout == ""
