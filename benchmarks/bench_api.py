"""Cost of HTTP: sampling n molecules in-process vs the same through POST /v1/generate.

    .venv/bin/python benchmarks/bench_api.py [--n 1000] [--repeats 9] [--checkpoint PATH]

In-process is ``MoleculeSampler.sample`` (noise -> graphs -> canonical SMILES). Over HTTP it is
a real ``molgan serve`` in a child process on loopback, one sampling thread, answering
``{"n": n, "seed": s}`` to a keep-alive ``http.client`` connection; the time is the client's,
from sending the request to having parsed the JSON answer. Both use one torch thread and the
same seeds, and their runs alternate so that load from other processes affects both alike.
Target: HTTP median <= 1.3 x in-process median. CPU time is reported beside wall time (for
HTTP: the server's threads plus the client), because on a machine shared with other work wall
time also counts waiting for a core.
Without --checkpoint the bundled checkpoint is served, or, until there is one, the untrained
configs/qm9.yaml architecture (see benchmarks/api_common.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path

import torch
from api_common import REPO, ServerProcess, benchmark_checkpoint, cpu_seconds

from molgan.sampling import MoleculeSampler

TARGET_RATIO = 1.3


Run = tuple[float, float, int]  # wall seconds, CPU seconds, valid molecules


def compare(sampler: MoleculeSampler, http: HTTPConnection, server_pid: int, n: int, repeats: int,
            mode: str | None) -> dict[str, list[Run]]:
    """Alternating in-process and HTTP calls with the same seeds; two untimed warm-up calls each."""
    extra = {} if mode is None else {"mode": mode}

    def in_process(seed: int) -> Run:
        wall, cpu = time.perf_counter(), time.process_time()
        samples = sampler.sample(n, seed=seed, settings=sampler.settings(mode))
        return time.perf_counter() - wall, time.process_time() - cpu, sum(s.valid for s in samples)

    def over_http(seed: int) -> Run:
        wall, cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
        http.request("POST", "/v1/generate", body=json.dumps({"n": n, "seed": seed, **extra}),
                     headers={"Content-Type": "application/json"})
        response = http.getresponse()
        answer = response.read()
        assert response.status == 200, answer
        valid = json.loads(answer)["stats"]["valid"]
        cpu = time.process_time() - cpu + cpu_seconds(server_pid) - server_cpu
        return time.perf_counter() - wall, cpu, valid

    for seed in range(2):
        in_process(seed)
        over_http(seed)
    runs: dict[str, list[Run]] = {"local": [], "http": []}
    for seed in range(100, 100 + repeats):
        runs["local"].append(in_process(seed))
        runs["http"].append(over_http(seed))
        assert runs["local"][-1][2] == runs["http"][-1][2], "the server sampled other molecules"
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="molecules per call")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each kind (>= 5)")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "qm9.yaml",
                        help="architecture when no checkpoint exists")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    torch.set_num_threads(1)

    results: dict[str, dict[str, list[Run]]] = {}
    with tempfile.TemporaryDirectory(prefix="molgan-bench-api-") as tmp:
        checkpoint, described = benchmark_checkpoint(args.checkpoint, Path(tmp), args.config)
        sampler = MoleculeSampler.load(checkpoint)
        env = {"MOLGAN_WORKER_THREADS": "1", "MOLGAN_TORCH_THREADS": "1",
               "MOLGAN_MAX_MOLECULES": str(max(args.n, 1000))}
        with ServerProcess(checkpoint, env=env) as server:
            http = HTTPConnection("127.0.0.1", server.port, timeout=60)  # one keep-alive connection
            other = "argmax" if sampler.default_mode == "gumbel" else "gumbel"
            for label, mode in ((f"{sampler.default_mode} (the checkpoint's default)", None), (other, other)):
                results[label] = compare(sampler, http, server.pid, args.n, args.repeats, mode)
            http.close()

    print(f"{described}; n = {args.n}; {args.repeats} timed calls of each; torch threads 1")
    print()
    print("| sampling | path | valid | median wall ms | min-max wall ms | median CPU ms | molecules/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    verdicts = []
    for label, runs in results.items():
        medians = {kind: [statistics.median(r[k] for r in rs) for k in range(3)] for kind, rs in runs.items()}
        for kind, path in (("local", "in-process"), ("http", "HTTP")):
            wall, cpu, valid = medians[kind]
            walls = [r[0] for r in runs[kind]]
            print(f"| {label} | {path} | {valid:.0f} | {1000 * wall:.1f} | {1000 * min(walls):.1f}-"
                  f"{1000 * max(walls):.1f} | {1000 * cpu:.1f} | {args.n / wall:,.0f} |")
        wall_ratio = medians["http"][0] / medians["local"][0]
        cpu_ratio = medians["http"][1] / medians["local"][1]
        verdicts.append(f"{label}: HTTP / in-process = {wall_ratio:.2f} wall, {cpu_ratio:.2f} CPU "
                        f"(target <= {TARGET_RATIO}: {'PASS' if wall_ratio <= TARGET_RATIO else 'FAIL'})")
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
