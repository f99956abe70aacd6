"""The service as deployed: `molgan serve` (uvicorn) in its own process, called over loopback HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from molgan.api.settings import get_settings
from molgan.checkpoint import bundled_checkpoint_path, bundled_models
from molgan.cli import app
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings
from tests.api_support import ServerProcess, free_port, rss_bytes


def test_molgan_serve_answers_over_http_and_stops_on_sigterm(api_checkpoint: Path) -> None:
    with ServerProcess(api_checkpoint, env={"MOLGAN_MAX_MOLECULES": "50"}) as server, httpx.Client(
        base_url=server.url, timeout=30
    ) as http:
        assert http.get("/health").json() == {"status": "ok"}
        body = {"n": 12, "seed": 4, "properties": True}
        first, second = http.post("/v1/generate", json=body), http.post("/v1/generate", json=body)
        assert first.status_code == second.status_code == 200
        assert first.json()["molecules"] == second.json()["molecules"]
        assert len(first.json()["molecules"]) == 12
        assert first.json()["model"]["checkpoint"] == api_checkpoint.name
        assert str(api_checkpoint.parent) not in first.text + http.get("/v1/model").text
        assert http.post("/v1/generate", json={"n": 51}).status_code == 422  # the environment's limit
        smiles = next(m["smiles"] for m in first.json()["molecules"] if m["valid"])
        svg = http.get("/v1/depict", params={"smiles": smiles})
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert 'molgan_molecules_generated_total{model="debug"} 24.0' in http.get("/metrics").text
        assert http.get("/").headers["content-type"].startswith("text/html")
        started = time.monotonic()
        code = server.stop()
        stopped_in = time.monotonic() - started
        log = server.log
    # uvicorn shuts down cleanly, then lets the SIGTERM end the process as the signal's default.
    assert code in (0, -signal.SIGTERM), log
    assert stopped_in < 5
    assert "Application startup complete" in log and "Finished server process" in log
    assert "Traceback" not in log


def test_molgan_serve_serves_qm9_and_a_trained_model_side_by_side(debug_run: Path, tmp_path: Path) -> None:
    # A generator trained for a few steps with configs/debug.yaml: another vocabulary, another
    # architecture, served beside the bundled QM9 model by one process.
    tiny = tmp_path / "tiny.safetensors"
    shutil.copy(debug_run / "best.safetensors", tiny)
    models = f"{bundled_checkpoint_path('qm9')},{tiny}"
    with ServerProcess(None, env={"MOLGAN_MODELS": models}) as server, httpx.Client(
        base_url=server.url, timeout=30
    ) as http:
        listed = http.get("/v1/models")
        answers = {name: http.post("/v1/generate", json={"n": 50, "seed": 3, "model": name})
                   for name in ("qm9", "tiny")}
        unknown = http.post("/v1/generate", json={"n": 5, "model": "moses"})
        metrics = http.get("/metrics").text
        rss = rss_bytes(server.pid)
    assert listed.json()["default"] == "qm9"
    assert [m["name"] for m in listed.json()["models"]] == ["qm9", "tiny"]
    assert [m["vocab"]["max_atoms"] for m in listed.json()["models"]] == [
        MoleculeSampler.load(path).vocab.max_atoms for path in (bundled_checkpoint_path("qm9"), tiny)
    ]
    for name, path in (("qm9", bundled_checkpoint_path("qm9")), ("tiny", tiny)):
        answer = answers[name].json()
        assert answer["model"]["name"] == name
        expected = MoleculeSampler.load(path).sample(50, seed=3)
        assert [m["smiles"] for m in answer["molecules"]] == [s.smiles for s in expected]
        assert f'molgan_molecules_generated_total{{model="{name}"}} 50.0' in metrics
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["msg"] == "unknown model 'moses'; this server serves: qm9, tiny"
    assert str(tmp_path) not in listed.text + "".join(a.text for a in answers.values())
    assert rss < 1024**3  # both models loaded and sampled from, well under 1 GB


def test_serve_options_set_the_servers_default_sampling(api_checkpoint: Path) -> None:
    # The options replace the environment's sampling defaults as a whole: MOLGAN_MODE is dropped.
    options = ["--temperature", "0.7", "--min-p", "0.05"]
    with ServerProcess(api_checkpoint, env={"MOLGAN_MODE": "argmax"}, options=options) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        model = http.get("/v1/model").json()
        answer = http.post("/v1/generate", json={"n": 20, "seed": 3}).json()
        argmax = http.post("/v1/generate", json={"n": 5, "seed": 3, "mode": "argmax"})
    assert model["sampling"] == {"mode": "gumbel", "temperature": 0.7, "min_p": 0.05}
    stats = answer["stats"]
    assert (stats["mode"], stats["temperature"], stats["min_p"]) == ("gumbel", 0.7, 0.05)
    sampler = MoleculeSampler.load(api_checkpoint)
    expected = sampler.sample(20, seed=3, settings=SamplingSettings("gumbel", 0.7, 0.05))
    assert [m["smiles"] for m in answer["molecules"]] == [s.smiles for s in expected]
    assert argmax.status_code == 200 and argmax.json()["stats"]["mode"] == "argmax"


def test_serve_with_a_missing_checkpoint_exits_with_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.safetensors"
    monkeypatch.setenv("MOLGAN_CHECKPOINT", str(missing))  # restored afterwards: serve sets it
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve", "--checkpoint", str(missing), "--port", str(free_port())])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {missing}"
    assert result.stdout == ""


@pytest.mark.slow
def test_uvicorn_with_a_broken_checkpoint_logs_one_line_and_exits(
    tmp_path: Path, api_checkpoint: Path
) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(api_checkpoint.read_bytes()[:300])
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "molgan.api.app:create_app",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env={**os.environ, "MOLGAN_CHECKPOINT": str(broken)},
    )
    assert result.returncode == 3  # uvicorn: start-up failed
    errors = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1 and str(broken) in errors[0] and "truncated or corrupted" in errors[0]
    assert "Traceback" not in result.stderr


def test_the_property_model_is_served_by_name_with_its_objective() -> None:
    # Every bundled model, as `make run` serves them: qm9-qed answers by name, listed with what
    # it was optimised for.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLGAN_")}
    with ServerProcess(None, env=env) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        listed = http.get("/v1/models").json()
        answer = http.post("/v1/generate", json={"n": 30, "seed": 5, "model": "qm9-qed"}).json()
    models = {m["name"]: m for m in listed["models"]}
    assert list(models) == bundled_models() and listed["default"] == "qm9"
    assert models["qm9-qed"]["objectives"] == ["qed"] and models["qm9"]["objectives"] == []
    assert answer["model"]["name"] == "qm9-qed"
    expected = MoleculeSampler.load("qm9-qed").sample(30, seed=5)
    assert [m["smiles"] for m in answer["molecules"]] == [s.smiles for s in expected]
