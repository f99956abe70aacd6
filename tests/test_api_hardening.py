"""Hostile and careless input over a real server (`molgan serve`, uvicorn, loopback HTTP): every
answer is a 4xx that says what is wrong, at once, and the server logs no traceback.

Lone UTF-16 surrogates in JSON strings, bodies that are not JSON, JSON nested thousands deep,
SMILES that would cost seconds of RDKit work each, export bodies the schema allows but the body
limit would refuse, and more parallel requests than can finish before the request timeout. The
pool's admission rule behind the last is also checked on its own, with jobs that sleep.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from molgan.api.pool import ADMIT_FRACTION, PoolFull, WorkPool
from tests.api_support import ServerProcess

JSON = {"Content-Type": "application/json"}
# The template checkpoint's graphs have 9 atoms: the server takes SMILES of up to 4 x 9.
MAX_HEAVY_ATOMS = 36


@pytest.fixture(scope="module")
def server(api_checkpoint: Path) -> Iterator[ServerProcess]:
    with ServerProcess(api_checkpoint) as running:
        yield running


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the module's server; the test fails if the server logs a traceback meanwhile."""
    before = len(server.log)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    assert "Traceback" not in server.log[before:], server.log[before:]


def fields(response: httpx.Response) -> list[str]:
    """Where a 422 points, e.g. ``body.smiles.3``."""
    return [".".join(str(p) for p in error["loc"]) for error in response.json()["detail"]]


# --------------------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/v1/generate", rb'{"n": 5, "model": "\ud800"}', "body.model"),
        ("/v1/generate", rb'{"n": 5, "mode": "\udfff"}', "body.mode"),
        ("/v1/generate", rb'{"n": 5, "\ud800": 1}', "body"),
        ("/v1/export", rb'{"smiles": ["CCO", "C\ud800"], "format": "csv"}', "body.smiles.1"),
        ("/v1/export", rb'{"smiles": ["CCO"], "format": "\ud800"}', "body.format"),
    ],
)
def test_a_lone_surrogate_in_a_json_string_is_a_422_naming_the_field(
    http: httpx.Client, path: str, raw: bytes, field: str
) -> None:
    # Valid JSON ("\ud800" is a legal escape) whose string UTF-8 cannot encode: echoing it back
    # in the 422 used to fail inside the error handler, a 500.
    response = http.post(path, content=raw, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert fields(response) == [field]
    echoed = json.dumps(response.json()["detail"][0]["input"])
    assert "\\\\ud8" in echoed or "\\\\udf" in echoed  # as the text of its escape, not a 500


def test_error_answers_echo_any_input_they_were_given(http: httpx.Client) -> None:
    # A surrogate pair is one character (an emoji): it is echoed as it is.
    response = http.post("/v1/generate", content=rb'{"n": 1, "model": "\ud83d\ude00"}', headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "unknown model '\U0001f600'; this server serves: debug"
    # Bytes of a lone surrogate in a query string are not UTF-8: read as replacement characters.
    for path, params in (("/v1/depict", "smiles=%ED%A0%80"), ("/v1/model", "name=%ED%A0%80"),
                         ("/v1/depict", "smiles=C%FFC"), ("/v1/model", "name=%FF")):
        response = http.get(f"{path}?{params}")
        assert response.status_code == 422, response.text
        assert "\ufffd" in response.json()["detail"][0]["input"]


# --------------------------------------------------------------------------- bodies that are not JSON


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Content-Type": "text/plain"}, "it was sent as 'text/plain'"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "as 'application/x-www-form-urlencoded'"),
        ({}, "without a Content-Type"),
    ],
)
def test_a_body_not_sent_as_json_is_a_415_saying_so(
    http: httpx.Client, headers: dict[str, str], says: str
) -> None:
    for path, body in (("/v1/generate", {"n": 2}), ("/v1/export", {"smiles": ["CC"], "format": "csv"})):
        # httpx adds no Content-Type to `content`; an empty header value leaves it out altogether.
        response = http.post(path, content=json.dumps(body).encode(), headers=headers)
        assert response.status_code == 415, response.text
        detail = response.json()["detail"]
        assert "must be JSON with Content-Type: application/json" in detail and says in detail
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert http.post("/v1/generate", content=b'{"n": 2}', headers=charset).status_code == 200


@pytest.mark.parametrize("depth", [33, 500, 2000, 20_000])
def test_json_nested_too_deep_is_a_400_saying_so(http: httpx.Client, depth: int) -> None:
    for raw in ("[" * depth + "]" * depth, '{"n": ' + "[" * depth + "]" * depth + "}"):
        response = http.post("/v1/generate", content=raw.encode(), headers=JSON)
        assert response.status_code == 400, response.text
        assert response.json() == {"detail": "the JSON body is nested more than 32 levels deep; requests of "
                                              "this API are objects of plain values and lists"}


def test_json_nested_within_the_limit_is_judged_on_its_content(http: httpx.Client) -> None:
    # Brackets inside strings do not count.
    raw = '{"n": ' + "[" * 31 + "]" * 31 + ', "model": "' + "[" * 100 + '"}'
    response = http.post("/v1/generate", content=raw.encode(), headers=JSON)
    assert response.status_code == 422
    assert fields(response) == ["body.n"]


def test_a_body_that_is_not_utf8_is_a_400_saying_so(http: httpx.Client) -> None:
    response = http.post("/v1/generate", content=b'{"n": 2, "model": "\xff"}', headers=JSON)
    assert response.status_code == 400
    assert response.json() == {"detail": "the request body is not UTF-8 text (byte 19 is not)"}


# --------------------------------------------------------------------------- the work one SMILES costs


def test_export_refuses_smiles_too_large_for_the_server_at_once(http: httpx.Client) -> None:
    # 150 chains of 400 carbons (60 KB) took 13.6 s of CPU as an SDF; the schema's length refuses
    # them now, and a SMILES within it is bounded by its heavy atoms.
    started = time.perf_counter()
    response = http.post("/v1/export", json={"smiles": ["C" * 400] * 150, "format": "sdf"})
    assert response.status_code == 422
    assert fields(response)[0] == "body.smiles.0"
    for fmt in ("sdf", "csv"):
        smiles = ["CCO", "c1ccccc1", "CC(=O)O", "C" * (MAX_HEAVY_ATOMS + 1), "CC"]
        response = http.post("/v1/export", json={"smiles": smiles, "format": fmt})
        assert response.status_code == 422, response.text
        assert fields(response) == ["body.smiles.3"]
        assert response.json()["detail"][0]["msg"] == (
            f"SMILES has {MAX_HEAVY_ATOMS + 1} heavy atoms; this server takes at most {MAX_HEAVY_ATOMS}"
        )
    assert time.perf_counter() - started < 2
    # Hydrogens are not heavy atoms; the limit itself is allowed.
    smiles = ["[H]C([H])([H])" + "C" * (MAX_HEAVY_ATOMS - 1)]
    assert http.post("/v1/export", json={"smiles": smiles, "format": "sdf"}).status_code == 200
    assert http.get("/v1/model").json()["limits"]["max_heavy_atoms"] == MAX_HEAVY_ATOMS


def test_depict_refuses_smiles_too_large_for_the_server_at_once(http: httpx.Client) -> None:
    started = time.perf_counter()
    for _ in range(10):  # each used to take about 0.1 s of RDKit's time
        response = http.get("/v1/depict", params={"smiles": "C" * 500})
        assert response.status_code == 422
        assert fields(response) == ["query.smiles"]
        assert "500 heavy atoms" in response.json()["detail"][0]["msg"]
    assert time.perf_counter() - started < 1
    assert http.get("/v1/depict", params={"smiles": "C" * MAX_HEAVY_ATOMS}).status_code == 200


def test_every_export_body_the_schema_allows_fits_in_the_body_limit(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    smiles = spec["components"]["schemas"]["ExportRequest"]["properties"]["smiles"]
    items, length = smiles["maxItems"], smiles["items"]["maxLength"]
    limit = http.get("/v1/model").json()["limits"]["max_body_bytes"]
    assert (items, limit) == (1000, 65536)
    # The largest list of the longest SMILES, as json.dumps writes it (", " between items): within
    # the limit, so judged on its content, not refused as too large.
    longest = "C" + "[CH2]" * ((length - 2) // 5) + "C" * ((length - 2) % 5 + 1)
    assert len(longest) == length
    body = json.dumps({"smiles": [longest] * items, "format": "sdf"}).encode()
    assert len(body) <= limit
    response = http.post("/v1/export", content=body, headers=JSON)
    assert response.status_code == 200, response.text[:300]
    assert response.text.count("$$$$") == items
    # What the schema refuses (1,000 SMILES of 500 characters used to be allowed) is a 422 when it
    # fits in the body limit, and a 413 when it does not.
    response = http.post("/v1/export", json={"smiles": ["C" * (length + 1)] * 10, "format": "csv"})
    assert response.status_code == 422
    assert fields(response) == [f"body.smiles.{i}" for i in range(10)]
    assert f"at most {length} characters" in response.json()["detail"][0]["msg"]


# --------------------------------------------------------------------------- admission


async def burst(url: str, body: dict[str, Any], count: int) -> list[tuple[int, float, httpx.Headers]]:
    """``count`` requests at once, each on its own connection: (status, seconds, headers)."""
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=count)) as c:

        async def one() -> tuple[int, float, httpx.Headers]:
            started = time.perf_counter()
            response = await c.post("/v1/generate", json=body)
            return response.status_code, time.perf_counter() - started, response.headers

        return await asyncio.gather(*(one() for _ in range(count)))


def test_requests_that_cannot_finish_before_the_timeout_are_refused_at_once() -> None:
    # One sampling thread, a 4 s timeout, and requests of about 0.4 s (QM9, properties): some
    # 8 fit into the timeout, 30 arrive at once. Before admission by estimate all 30 were queued
    # and those past the first 10 or so waited the full 4 s for a 504.
    timeout_s = 4.0
    env = {"MOLGAN_WORKER_THREADS": "1", "MOLGAN_TORCH_THREADS": "1",
           "MOLGAN_REQUEST_TIMEOUT_S": str(timeout_s)}
    body = {"n": 400, "properties": True}
    with ServerProcess(None, env=env) as server:
        # A cold server does not know how long such a request takes: it runs one per thread and
        # refuses the rest until one has finished.
        cold = asyncio.run(burst(server.url, body, 10))
        # Now it knows: it admits what fits into the timeout.
        warm = asyncio.run(burst(server.url, body, 30))
        # Refusals are of the backlog only: once it has drained, a request is admitted again.
        with httpx.Client(base_url=server.url, timeout=30) as http:
            after = http.post("/v1/generate", json=body)
            metrics = http.get("/metrics").text
        log = server.log
    assert "Traceback" not in log
    assert Counter(status for status, _, _ in cold) == {200: 1, 503: 9}
    statuses = Counter(status for status, _, _ in warm)
    assert set(statuses) == {200, 503}, statuses  # no 504
    # How many fit depends on how fast this machine is at the moment: at least one does.
    assert statuses[200] >= 1 and statuses[503] >= 10, statuses
    for status, seconds, headers in cold + warm:
        if status == 503:
            assert seconds < 1.0  # refused at once, not after waiting
            assert int(headers["retry-after"]) >= 1
        else:
            assert seconds < timeout_s
    assert after.status_code == 200
    assert 'molgan_rejected_requests_total{reason="estimate"}' in metrics


# --------------------------------------------------------------------------- the pool's admission rule


@contextmanager
def blocking_jobs(pool: WorkPool, count: int, kind: str | None = None) -> Iterator[list[Future[Any]]]:
    """``count`` jobs that run (or wait for a thread) until the ``with`` block ends."""
    release = threading.Event()
    jobs = [pool.submit(lambda: release.wait(10), kind) for _ in range(count)]
    try:
        yield jobs
    finally:
        release.set()
        for job in jobs:
            job.result(5)


def measured_pool(threads: int, per_unit_s: float) -> WorkPool:
    """A pool that has measured kind "k" at about ``per_unit_s`` seconds a unit."""
    pool = WorkPool(threads, max_queue=100)
    pool.submit(lambda: time.sleep(2 * per_unit_s), "k", units=2).result(5)
    assert pool.seconds_per_unit("k") == pytest.approx(per_unit_s, rel=0.5)
    return pool


def test_a_cold_pool_admits_one_job_per_thread_of_a_kind_it_has_not_measured() -> None:
    pool = WorkPool(2, max_queue=10)
    with blocking_jobs(pool, 2, "k"):
        with pytest.raises(PoolFull) as refused:
            pool.submit(lambda: None, "k", deadline_s=30)
        assert refused.value.reason == "unmeasured"
        assert pool.submit(lambda: None, "other", deadline_s=30) is not None  # another kind is queued
    assert pool.seconds_per_unit("k") is not None  # measured once they finished
    pool.shutdown()


def test_a_job_that_would_finish_after_its_deadline_is_refused_with_when_to_retry() -> None:
    pool = measured_pool(threads=1, per_unit_s=0.1)
    with blocking_jobs(pool, 1, "k"):  # about 0.1 s of expected work left, then 1 s for this one
        estimate = pool.estimate("k", units=10)
        assert 0.7 < estimate.finish_s < 2
        with pytest.raises(PoolFull) as refused:
            pool.submit(lambda: None, "k", units=10, deadline_s=1.0)
        assert refused.value.reason == "deadline"
        assert refused.value.retry_after_s == pytest.approx(estimate.finish_s - ADMIT_FRACTION * 1.0, abs=0.2)
        assert "would start in about" in str(refused.value)
        # What fits is admitted, and counts for the next one.
        pool.submit(lambda: None, "k", units=2, deadline_s=1.0)
        assert pool.estimate("k", units=1).start_s > estimate.start_s
    pool.shutdown()


def test_an_idle_pool_admits_any_job_so_a_bad_estimate_cannot_lock_it() -> None:
    pool = measured_pool(threads=1, per_unit_s=0.1)
    # Expected to take 10 s, far over a 1 s deadline, but nothing is queued ahead of it: it runs
    # (and measures the kind again) rather than being refused for ever.
    assert pool.estimate("k", units=100).finish_s > 5
    job = pool.submit(lambda: 42, "k", units=100, deadline_s=1.0)
    assert job.result(5) == 42
    assert pool.seconds_per_unit("k") < 0.1  # the fast job pulled the mean down
    pool.shutdown()


def test_the_queue_bound_still_holds_and_failed_or_dropped_jobs_measure_nothing() -> None:
    pool = WorkPool(1, max_queue=1)
    with blocking_jobs(pool, 2):
        with pytest.raises(PoolFull) as refused:
            pool.submit(lambda: None)
        assert refused.value.reason == "queue" and refused.value.retry_after_s is None

    def fails() -> None:
        raise ValueError("a 422 halfway through")

    with pytest.raises(ValueError):
        pool.submit(fails, "k", units=5).result(5)
    with blocking_jobs(pool, 1):
        dropped = pool.submit(lambda: None, "k", units=5)
        assert dropped.cancel()  # as when its request times out in the queue
    assert pool.seconds_per_unit("k") is None
    assert pool.pending == 0
    pool.shutdown()
