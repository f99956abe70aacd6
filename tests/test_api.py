"""The HTTP service through FastAPI's TestClient (inside ``with``, so the lifespan loads the model)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from rdkit import Chem

from molgan.api.app import create_app
from molgan.api.deps import loaded_service
from molgan.api.schemas import GenerateResponse, export_limits
from molgan.api.settings import Settings, get_settings
from molgan.checkpoint import CheckpointError
from molgan.chem import is_valid
from molgan.config import load_config
from molgan.metrics import properties
from molgan.sampling import MoleculeSampler, sample_filtered
from molgan.sampling_settings import SamplingError
from tests.api_support import write_template_checkpoint
from tests.conftest import DEBUG_CONFIG

MAX_N = 200
# Characters per SMILES that MAX_N of them may have in an export body of at most 64 KiB.
EXPORT_LENGTH = export_limits(MAX_N, 65536)[1]


@pytest.fixture(scope="module")
def sampler(api_checkpoint: Path) -> MoleculeSampler:
    return MoleculeSampler.load(api_checkpoint)


@pytest.fixture(scope="module")
def client(api_checkpoint: Path) -> Iterator[TestClient]:
    app = create_app(Settings(checkpoint=api_checkpoint, max_molecules=MAX_N, worker_threads=2))
    with TestClient(app) as c:
        yield c


def generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error_fields(response: Any) -> list[str]:
    """The field names a 422 points at (``loc`` without its "body"/"query" prefix)."""
    return [".".join(str(p) for p in e["loc"][1:]) for e in response.json()["detail"]]


# --------------------------------------------------------------------------- /v1/generate


def test_generate_returns_molecules_stats_and_model(client: TestClient, api_checkpoint: Path) -> None:
    response = client.post("/v1/generate", json={"n": 40, "seed": 3})
    assert response.status_code == 200, response.text
    assert str(api_checkpoint.parent) not in response.text  # the server's paths stay private
    out = response.json()
    GenerateResponse.model_validate(out)
    molecules, stats = out["molecules"], out["stats"]
    assert len(molecules) == 40
    assert all(set(m) == {"smiles", "valid"} for m in molecules)  # no properties unless asked
    for m in molecules:
        assert m["valid"] == is_valid(m["smiles"])
    valid = [m["smiles"] for m in molecules if m["valid"]]
    assert 0 < len(valid) < 40  # this checkpoint gives both kinds
    assert stats["requested"] == stats["returned"] == stats["sampled"] == 40
    assert stats["valid"] == len(valid)
    assert stats["unique"] == len(set(valid)) < len(valid)
    assert stats["seed"] == 3
    assert stats["fell_short"] is False
    assert (stats["mode"], stats["temperature"]) == ("argmax", None)
    assert stats["elapsed_ms"] > 0
    assert out["model"] == {"name": "debug", "config": "debug", "step": 0, "checkpoint": api_checkpoint.name}


def test_same_seed_same_molecules_as_the_library(client: TestClient, sampler: MoleculeSampler) -> None:
    body = {"n": 30, "seed": 11, "temperature": 0.8, "valid_only": True}
    first, second = generate(client, **body), generate(client, **body)
    assert first["molecules"] == second["molecules"]
    expected = sample_filtered(
        sampler, 30, seed=11, settings=sampler.settings(temperature=0.8), valid_only=True
    )
    assert [m["smiles"] for m in first["molecules"]] == [s.smiles for s in expected.samples]
    assert first["stats"]["sampled"] == expected.sampled
    other = generate(client, **{**body, "seed": 12})
    assert other["molecules"] != first["molecules"]


def test_without_seed_a_random_one_is_used_and_returned(client: TestClient) -> None:
    a, b = generate(client, n=20, temperature=1.0), generate(client, n=20, temperature=1.0)
    assert a["stats"]["seed"] != b["stats"]["seed"]
    again = generate(client, n=20, temperature=1.0, seed=a["stats"]["seed"])
    assert again["molecules"] == a["molecules"]


def test_mode_and_temperature(client: TestClient, sampler: MoleculeSampler) -> None:
    stats = generate(client, n=5, seed=0, temperature=0.5)["stats"]
    assert (stats["mode"], stats["temperature"]) == ("gumbel", 0.5)
    stats = generate(client, n=5, seed=0, mode="gumbel")["stats"]
    assert (stats["mode"], stats["temperature"]) == ("gumbel", sampler.default_temperature)
    response = client.post("/v1/generate", json={"n": 5, "mode": "argmax", "temperature": 0.5})
    assert response.status_code == 422
    assert error_fields(response) == ["temperature"]
    assert "gumbel" in response.json()["detail"][0]["msg"]


def test_min_p(client: TestClient, sampler: MoleculeSampler) -> None:
    out = generate(client, n=30, seed=2, min_p=0.4)
    assert (out["stats"]["mode"], out["stats"]["min_p"]) == ("gumbel", 0.4)
    expected = sampler.sample(30, seed=2, settings=sampler.settings(min_p=0.4))
    assert [m["smiles"] for m in out["molecules"]] == [s.smiles for s in expected]
    assert generate(client, n=5, seed=0)["stats"]["min_p"] == (
        sampler.default_min_p if sampler.default_mode == "gumbel" else None
    )
    for body, field in (({"min_p": 1.0}, "min_p"), ({"min_p": -0.1}, "min_p"),
                        ({"mode": "argmax", "min_p": 0.1}, "min_p")):
        response = client.post("/v1/generate", json={"n": 5, **body})
        assert response.status_code == 422, body
        assert error_fields(response) == [field]


def test_valid_only_and_unique_keep_sampling(client: TestClient) -> None:
    out = generate(client, n=20, seed=5, valid_only=True, unique=True)
    smiles = [m["smiles"] for m in out["molecules"]]
    assert len(smiles) == 20 == len(set(smiles))
    assert all(m["valid"] for m in out["molecules"])
    assert out["stats"]["sampled"] > 20
    assert out["stats"]["unique"] == out["stats"]["valid"] == 20
    assert out["stats"]["fell_short"] is False


def test_says_when_it_fell_short(client: TestClient) -> None:
    # This checkpoint knows fewer than 100 distinct valid molecules: the attempt cap (20 n) is hit.
    stats = generate(client, n=100, seed=5, valid_only=True, unique=True)["stats"]
    assert stats["fell_short"] is True
    assert stats["returned"] < stats["requested"] == 100
    assert stats["sampled"] == 20 * 100


def test_properties(client: TestClient) -> None:
    out = generate(client, n=30, seed=2, temperature=1.0, properties=True)
    GenerateResponse.model_validate(out)
    molecules = out["molecules"]
    assert any(m["smiles"] is None for m in molecules)
    for m in molecules:
        assert set(m) == {"smiles", "valid", "qed", "logp", "sa", "mol_weight"}
        if m["smiles"] is None:
            assert m["qed"] is m["logp"] is m["sa"] is m["mol_weight"] is None
        else:
            expected = properties(m["smiles"])
            assert {k: m[k] for k in expected} == pytest.approx(expected)


# --------------------------------------------------------------------------- bad input: 4xx, never 5xx


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": "5"}, "n"),
        ({"n": 5.5}, "n"),
        ({"n": True}, "n"),
        ({"n": None}, "n"),
        ({"n": 0}, "n"),
        ({"n": MAX_N + 1}, "n"),
        ({"n": -3}, "n"),
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"seed": 2**53}, "seed"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": 1e9}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"valid_only": "yes"}, "valid_only"),
        ({"unique": 1}, "unique"),
        ({"properties": []}, "properties"),
        ({"mode": "best"}, "mode"),
        ({"n": 2, "checkpoint": "/etc/passwd"}, "checkpoint"),
        ({"n": 2, "nn": 3}, "nn"),
    ],
)
def test_bad_fields_get_422_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)


@pytest.mark.parametrize(
    "raw", [b"{bad json", b'{"n": 3,}', b"[1, 2]", b'"n"', b"", b'{"n": 3, "temperature": NaN}']
)
def test_malformed_bodies_get_422(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/generate", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_oversized_bodies_get_413(client: TestClient) -> None:
    body = json.dumps({"n": 1, "pad": "x" * 70_000}).encode()
    response = client.post("/v1/generate", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "65536 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 4096

    response = client.post("/v1/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    # Just under the limit is read and judged on its content.
    body = b'{"n": 1}' + b" " * (65536 - 8)
    response = client.post("/v1/generate", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200


def test_wrong_method_and_unknown_path(client: TestClient) -> None:
    assert client.get("/v1/generate").status_code == 405
    assert client.get("/v1/nothing").status_code == 404


# --------------------------------------------------------------------------- /v1/depict


def test_depict_draws_svg(client: TestClient) -> None:
    response = client.get("/v1/depict", params={"smiles": "c1ccccc1O", "width": 300, "height": 220})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert "nosniff" in response.headers["x-content-type-options"]
    svg = response.text
    assert "<svg" in svg and "width='300px'" in svg and "height='220px'" in svg
    assert "<script" not in svg


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"smiles": "C1CC"}, "smiles", "does not parse"),
        ({"smiles": "not a molecule"}, "smiles", "does not parse"),
        ({"smiles": ""}, "smiles", "at least 1"),
        ({"smiles": "C" * 501}, "smiles", "at most 500"),
        ({}, "smiles", "required"),
        ({"smiles": "CCO", "width": 10}, "width", "greater than or equal to 50"),
        ({"smiles": "CCO", "height": 5000}, "height", "less than or equal to 1000"),
        ({"smiles": "CCO", "width": "wide"}, "width", "valid integer"),
    ],
)
def test_depict_rejects_bad_input(client: TestClient, params: dict[str, Any], field: str, says: str) -> None:
    response = client.get("/v1/depict", params=params)
    assert response.status_code == 422, response.text
    assert error_fields(response) == [field]
    assert says in response.json()["detail"][0]["msg"]


# --------------------------------------------------------------------------- /v1/export

# Two valid molecules, two fragments in one SMILES (parses, not valid), and another valid one.
EXPORT_SMILES = ["CCO", "c1ccccc1O", "CC.O", "N#CC(=O)O"]


def export(client: TestClient, smiles: list[str], fmt: str) -> Any:
    response = client.post("/v1/export", json={"smiles": smiles, "format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="molecules.{fmt}"'
    return response


def test_export_csv_lists_smiles_validity_and_properties(client: TestClient) -> None:
    response = export(client, EXPORT_SMILES, "csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["smiles", "valid", "qed", "logp", "sa", "mol_weight"]
    assert [r["smiles"] for r in rows] == EXPORT_SMILES
    assert [r["valid"] for r in rows] == ["True", "True", "False", "True"]
    for row in rows:
        values = {k: row[k] for k in ("qed", "logp", "sa", "mol_weight")}
        if row["valid"] == "True":
            expected = properties(row["smiles"])
            assert {k: float(v) for k, v in values.items()} == pytest.approx(expected, abs=1e-4)
        else:
            assert set(values.values()) == {""}


def test_export_sdf_has_the_valid_molecules_with_2d_coordinates(client: TestClient) -> None:
    response = export(client, EXPORT_SMILES, "sdf")
    assert response.headers["content-type"] == "chemical/x-mdl-sdfile"
    molecules = list(Chem.ForwardSDMolSupplier(io.BytesIO(response.content)))
    valid = [s for s in EXPORT_SMILES if is_valid(s)]
    assert [m.GetProp("_Name") for m in molecules] == valid
    for mol, smiles in zip(molecules, valid, strict=True):
        assert Chem.MolToSmiles(mol) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
        conformer = mol.GetConformer()
        assert not conformer.Is3D()
        positions = conformer.GetPositions().tolist()  # (atoms, 3)
        assert all(z == 0 for _, _, z in positions)
        # Laid out in the plane: no two atoms on one spot.
        assert len({(round(x, 3), round(y, 3)) for x, y, _ in positions}) == mol.GetNumAtoms()


def test_export_of_generated_molecules(client: TestClient) -> None:
    molecules = generate(client, n=30, seed=2, temperature=1.0)["molecules"]
    shown = [m for m in molecules if m["smiles"] is not None]
    rows = list(csv.DictReader(io.StringIO(export(client, [m["smiles"] for m in shown], "csv").text)))
    assert [(r["smiles"], r["valid"]) for r in rows] == [(m["smiles"], str(m["valid"])) for m in shown]
    sdf = export(client, [m["smiles"] for m in shown], "sdf").content
    names = [m.GetProp("_Name") for m in Chem.ForwardSDMolSupplier(io.BytesIO(sdf))]
    assert names == [m["smiles"] for m in shown if m["valid"]]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"smiles": ["CCO", "C1CC"], "format": "csv"}, "smiles.1", "does not parse"),
        ({"smiles": ["CCO", "C1C(=O"], "format": "sdf"}, "smiles.1", "does not parse"),
        ({"smiles": ["CCO", "not a molecule"], "format": "sdf"}, "smiles.1", "printable ASCII"),
        ({"smiles": ["CCO", "CC", "C" * 37], "format": "csv"}, "smiles.2", "37 heavy atoms; this server"),
        ({"smiles": [], "format": "csv"}, "smiles", "at least 1 item"),
        ({"smiles": ["C"] * (MAX_N + 1), "format": "sdf"}, "smiles", f"at most {MAX_N} items"),
        ({"smiles": ["CCO", ""], "format": "csv"}, "smiles.1", "at least 1 character"),
        ({"smiles": ["C" * (EXPORT_LENGTH + 1)], "format": "csv"}, "smiles.0", f"most {EXPORT_LENGTH} char"),
        ({"smiles": "CCO", "format": "csv"}, "smiles", "valid list"),
        ({"smiles": ["CCO", 5], "format": "csv"}, "smiles.1", "valid string"),
        ({"smiles": ["CCO"], "format": "pdf"}, "format", "'csv' or 'sdf'"),
        ({"smiles": ["CCO"]}, "format", "required"),
        ({"smiles": ["CCO"], "format": "csv", "path": "/etc/passwd"}, "path", "not permitted"),
    ],
)
def test_export_rejects_bad_input(client: TestClient, body: dict[str, Any], field: str, says: str) -> None:
    response = client.post("/v1/export", json=body)
    assert response.status_code == 422, response.text
    assert error_fields(response) == [field]
    assert says in response.json()["detail"][0]["msg"]


# --------------------------------------------------------------------------- model, health, metrics, page


def test_model_metadata(client: TestClient, sampler: MoleculeSampler, api_checkpoint: Path) -> None:
    response = client.get("/v1/model")
    info = response.json()
    described = sampler.describe()
    for key in ("name", "step", "vocab", "sampling", "z_dim", "metrics", "versions"):
        assert info[key] == described[key]
    assert info["checkpoint"] == "debug.safetensors"
    assert info["sha256"] == hashlib.sha256(api_checkpoint.read_bytes()).hexdigest()
    assert str(api_checkpoint.parent) not in response.text
    assert info["limits"] == {"max_molecules": MAX_N, "max_body_bytes": 65536, "request_timeout_s": 30.0,
                              "max_heavy_atoms": 4 * sampler.vocab.max_atoms}


def test_model_metrics_that_json_cannot_hold_are_text(tmp_path: Path) -> None:
    config = load_config(DEBUG_CONFIG)
    checkpoint = write_template_checkpoint(
        config, tmp_path / "nan.safetensors", metrics={"validity": 0.5, "fcd": math.nan, "ratio": math.inf}
    )
    with TestClient(create_app(Settings(checkpoint=checkpoint))) as client:
        response = client.get("/v1/model")
    assert response.status_code == 200
    assert response.json()["metrics"] == {"validity": 0.5, "fcd": "nan", "ratio": "inf"}


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "model": "debug", "models": ["debug"]}


def test_not_ready_before_the_model_is_loaded(api_checkpoint: Path) -> None:
    client = TestClient(create_app(Settings(checkpoint=api_checkpoint)))  # no `with`: no lifespan
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    response = client.post("/v1/generate", json={"n": 1})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "the model is not loaded"}
    assert client.get("/v1/model").status_code == 503
    assert client.post("/v1/export", json={"smiles": ["CCO"], "format": "csv"}).status_code == 503
    # Depict's limit on heavy atoms comes with the models.
    assert client.get("/v1/depict", params={"smiles": "CCO"}).status_code == 503
    assert metric(client.get("/metrics").text, "molgan_work_pending") == 0


def test_every_route_sees_the_model_through_one_dependency(api_checkpoint: Path) -> None:
    app = create_app(Settings(checkpoint=api_checkpoint, worker_threads=1))
    with TestClient(app) as client:
        assert client.get("/ready").json() == {"status": "ready", "model": "debug", "models": ["debug"]}
        # /metrics reports the queue of the pool that the dependency hands out.
        with occupied_pool(app):
            assert metric(client.get("/metrics").text, "molgan_work_pending") == 1
        assert metric(client.get("/metrics").text, "molgan_work_pending") == 0
        # The model loaded, but the dependency says it is not: every route follows the dependency.
        app.dependency_overrides[loaded_service] = lambda: None
        assert client.get("/ready").status_code == 503
        assert client.get("/v1/model").status_code == 503
        assert client.post("/v1/generate", json={"n": 1}).status_code == 503
        assert metric(client.get("/metrics").text, "molgan_work_pending") == 0
        app.dependency_overrides.clear()
        assert client.get("/ready").status_code == 200


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == want:
            return float(value)
    raise AssertionError(f"{want} not in metrics")


def test_metrics_count_requests_and_molecules(api_checkpoint: Path) -> None:
    app = create_app(Settings(checkpoint=api_checkpoint))
    other = create_app(Settings(checkpoint=api_checkpoint))  # a registry of its own
    with TestClient(app) as client, TestClient(other) as other_client:
        first = generate(client, n=25, seed=1)
        second = generate(client, n=15, seed=2)
        client.post("/v1/generate", json={"n": 0})
        text = client.get("/metrics").text
        other_text = other_client.get("/metrics").text
    model = {"model": "debug"}
    assert metric(text, "molgan_molecules_generated_total", **model) == 40
    valid = first["stats"]["valid"] + second["stats"]["valid"]
    assert metric(text, "molgan_molecules_valid_total", **model) == valid
    assert metric(text, "molgan_valid_rate", **model) == pytest.approx(valid / 40)
    assert metric(text, "molgan_samples_drawn_total", **model) == 40
    route = {"method": "POST", "route": "/v1/generate"}
    assert metric(text, "molgan_http_requests_total", **route, status="200") == 2
    assert metric(text, "molgan_http_requests_total", **route, status="422") == 1
    assert metric(text, "molgan_http_request_duration_seconds_count", **route) == 3
    assert metric(other_text, "molgan_molecules_generated_total", **model) == 0


def test_metrics_label_routes_not_raw_paths(client: TestClient) -> None:
    client.get("/v1/depict", params={"smiles": "CC"})
    client.get("/no/such/path/123")
    text = client.get("/metrics").text
    assert 'route="/v1/depict"' in text
    assert "/no/such/path" not in text and 'route="unmatched"' in text


def test_index_page_is_self_contained(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for needle in ('id="n"', 'id="seed"', 'id="temperature"', "v1/generate", "v1/depict", "v1/export"):
        assert needle in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_docs_page_loads_swagger_ui_from_the_app_itself(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    page = response.text
    assert "SwaggerUIBundle" in page and "'/openapi.json'" in page
    assert "http://" not in page and "https://" not in page  # no CDN, no validator badge
    urls = sorted(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert urls == ["/docs-assets/favicon.png", "/docs-assets/swagger-ui-bundle.js",
                    "/docs-assets/swagger-ui.css"]
    types = {}
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
        types[url.rsplit(".", 1)[1]] = asset.headers["content-type"]
    assert types["js"].startswith(("text/javascript", "application/javascript"))
    assert types["css"].startswith("text/css")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self' 'unsafe-inline'" in policy
    assert client.get("/docs-assets/nothing.js").status_code == 404
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_openapi_describes_the_endpoints_exactly(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/v1/generate", "/v1/export", "/v1/depict", "/v1/model", "/v1/models", "/health", "/ready", "/metrics"
    }
    schemas = spec["components"]["schemas"]
    request = schemas["GenerateRequest"]
    assert request["additionalProperties"] is False
    assert (request["properties"]["n"]["minimum"], request["properties"]["n"]["maximum"]) == (1, MAX_N)
    assert request["properties"]["temperature"]["anyOf"][0]["exclusiveMinimum"] == 0
    assert request["properties"]["model"]["anyOf"][0] == {"type": "string", "minLength": 1, "maxLength": 200}
    generate_op = spec["paths"]["/v1/generate"]["post"]
    assert generate_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/GenerateResponse"
    )
    assert {"422", "503", "504"} <= set(generate_op["responses"])
    depict = spec["paths"]["/v1/depict"]["get"]
    assert set(depict["responses"]["200"]["content"]) == {"image/svg+xml"}
    assert set(schemas["GenerateStats"]["required"]) >= {"requested", "sampled", "valid", "unique",
                                                         "elapsed_ms", "fell_short", "seed"}
    export_request = schemas["ExportRequest"]
    assert export_request["additionalProperties"] is False
    smiles = export_request["properties"]["smiles"]
    assert (smiles["minItems"], smiles["maxItems"], smiles["items"]["maxLength"]) == (1, MAX_N, EXPORT_LENGTH)
    assert smiles["items"]["pattern"] == "^[!-~]+$"
    assert export_request["properties"]["format"]["enum"] == ["csv", "sdf"]
    export_op = spec["paths"]["/v1/export"]["post"]
    assert set(export_op["responses"]["200"]["content"]) == {"text/csv", "chemical/x-mdl-sdfile"}
    assert {"422", "503", "504"} <= set(export_op["responses"])
    assert {"name", "config", "sha256", "default"} <= set(schemas["ModelInfo"]["required"])
    models_op = spec["paths"]["/v1/models"]["get"]
    listing = models_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing["$ref"].endswith("/ModelList")
    assert [p["name"] for p in spec["paths"]["/v1/model"]["get"]["parameters"]] == ["name"]


# --------------------------------------------------------------------------- load: 503 and 504


@contextmanager
def occupied_pool(app: Any) -> Iterator[None]:
    """Keep the app's only sampling thread busy inside the ``with`` block."""
    release = threading.Event()
    job = app.state.service.pool.submit(lambda: release.wait(10))
    try:
        yield
    finally:
        release.set()
        job.result(5)


def test_full_queue_answers_503_with_retry_after(api_checkpoint: Path) -> None:
    settings = Settings(checkpoint=api_checkpoint, worker_threads=1, max_queue=0, retry_after_s=2)
    app = create_app(settings)
    with TestClient(app) as client:
        with occupied_pool(app):
            response = client.post("/v1/generate", json={"n": 3, "seed": 0})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert "busy" in response.json()["detail"]
        assert client.post("/v1/generate", json={"n": 3, "seed": 0}).status_code == 200
        text = client.get("/metrics").text
    assert metric(text, "molgan_rejected_requests_total", reason="busy") == 1


def test_request_timeout_answers_504_and_drops_the_queued_job(api_checkpoint: Path) -> None:
    settings = Settings(checkpoint=api_checkpoint, worker_threads=1, max_queue=1, request_timeout_s=0.3)
    app = create_app(settings)
    with TestClient(app) as client:
        with occupied_pool(app):
            started = time.perf_counter()
            response = client.post("/v1/generate", json={"n": 3})
            waited = time.perf_counter() - started
            # The timed-out request's job never started, so it no longer counts.
            assert app.state.service.pool.pending == 1
        assert response.status_code == 504
        assert "0.3 s" in response.json()["detail"]
        assert 0.3 <= waited < 5
        assert client.post("/v1/generate", json={"n": 3}).status_code == 200
        text = client.get("/metrics").text
    assert metric(text, "molgan_rejected_requests_total", reason="timeout") == 1


# --------------------------------------------------------------------------- settings and start-up


def test_missing_checkpoint_stops_startup_with_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nope.safetensors"
    with caplog.at_level(logging.ERROR, logger="molgan.api"), pytest.raises(CheckpointError), TestClient(
        create_app(Settings(checkpoint=missing))
    ):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "molgan.api"]
    assert lines == [f"cannot start: checkpoint not found: {missing}"]


def test_broken_checkpoint_stops_startup(tmp_path: Path, api_checkpoint: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(api_checkpoint.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupted"), TestClient(
        create_app(Settings(checkpoint=broken))
    ):
        pass


@pytest.fixture
def clean_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("clean_settings_cache")
def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, api_checkpoint: Path) -> None:
    monkeypatch.setenv("MOLGAN_CHECKPOINT", str(api_checkpoint))
    monkeypatch.setenv("MOLGAN_MAX_MOLECULES", "7")
    monkeypatch.setenv("MOLGAN_REQUEST_TIMEOUT_S", "2.5")
    monkeypatch.setenv("MOLGAN_WORKER_THREADS", "3")
    monkeypatch.setenv("MOLGAN_CORS_ORIGINS", "http://a.example, http://b.example")
    settings = get_settings()
    assert get_settings() is settings  # read once
    assert settings.checkpoint == api_checkpoint
    assert (settings.max_molecules, settings.request_timeout_s, settings.worker_threads) == (7, 2.5, 3)
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    with TestClient(create_app()) as client:  # no argument: the environment's settings
        assert client.post("/v1/generate", json={"n": 8}).status_code == 422
        assert len(generate(client, n=7)["molecules"]) == 7
        preflight = {"Origin": "http://b.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}
        allowed = client.options("/v1/generate", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "http://b.example"
        refused = client.options("/v1/generate", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.usefixtures("clean_settings_cache")
def test_bad_environment_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLGAN_MAX_MOLECULES", "0")
    with pytest.raises(ValidationError, match="max_molecules"):
        get_settings()


def test_default_sampling_that_does_not_resolve_stops_startup(
    api_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(checkpoint=api_checkpoint, mode="argmax", min_p=0.1)
    with caplog.at_level(logging.ERROR, logger="molgan.api"), pytest.raises(SamplingError), TestClient(
        create_app(settings)
    ):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "molgan.api"]
    assert lines == ["cannot start: min_p applies to mode 'gumbel' only"]


def test_settings_refuse_bad_default_sampling_values() -> None:
    for bad in ({"temperature": math.inf}, {"temperature": 0.0}, {"min_p": 1.0}, {"mode": "best"}):
        with pytest.raises(ValidationError):
            Settings(**bad)
