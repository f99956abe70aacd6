"""Load on POST /v1/generate from a second process over loopback: throughput, latency, memory.

    .venv/bin/python benchmarks/load_api.py [--clients 32] [--duration 60] [--n 100] [--workers 1]

Starts ``molgan serve`` on a free 127.0.0.1 port, warms it up, then runs ``--clients`` concurrent
clients (keep-alive connections) that each send ``{"n": N}`` requests back to back until
``--duration`` seconds or ``--max-requests`` requests in all. A 503 must carry Retry-After; the
client then waits that long, as a well-behaved client would. Anything else that is not a 200 is
an error. The resident memory of each server worker process is read before, during (every
second) and after the load. Pass criteria: no errors; each worker's RSS under 1.5 GB and flat
(end - start < max(64 MB, 10 %)). Without --checkpoint: as in bench_api.py.

    .venv/bin/python benchmarks/load_api.py --burst 3 --clients 40 --n 1000 --properties

With ``--burst K``, a cold server (no warm-up) instead gets ``--clients`` requests at once, K
times, each burst after the last one's answers: how many of each are answered 200, 503 (refused
at once, with Retry-After) and 504 (waited for the request timeout), and how long they took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from api_common import REPO, ServerProcess, benchmark_checkpoint, cpu_seconds, rss_bytes

RSS_LIMIT = 1.5e9
MB = 1e6


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    """stats.elapsed_ms: the server's own time for the request, queueing for a thread included."""
    molecules: int = 0
    busy: int = 0
    """503 answers with Retry-After."""
    errors: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {detail[:300]}")


def worker_pids(pid: int) -> list[int]:
    """The processes that serve: uvicorn's workers if it started any, else the server itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    # The multiprocess supervisor also starts a resource tracker; workers are the Python
    # processes that import the app, i.e. the ones with a large RSS.
    workers = [int(c) for c in children if rss_bytes(int(c)) > 100 * MB]
    return workers or [pid]


class MemoryWatch(threading.Thread):
    """Samples the RSS of the given processes once a second; keeps the peak of each."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {pid: rss_bytes(pid) for pid in pids}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))

    def stop(self) -> None:
        self._done.set()
        self.join()


class Connection:
    """One keep-alive HTTP/1.1 connection with just enough HTTP for this benchmark.

    A full client library costs about as much CPU per request as the server's own HTTP work;
    on a machine with two cores that would measure the client more than the server.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        try:
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            fields = (line.partition(":") for line in head[1:] if line)
            headers = {name.strip().lower(): value.strip() for name, _, value in fields}
            answer = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(head[0].split()[1]), headers, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def client(port: int, n: int, deadline: float, budget: list[int], tally: Tally,
                 properties: bool = False) -> None:
    connection = Connection(port)
    body = json.dumps({"n": n, "properties": properties}).encode()
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            status, headers, answer = await asyncio.wait_for(connection.post("/v1/generate", body), 120)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            tally.error(type(exc).__name__, repr(exc))
            continue
        if status == 200:
            stats = json.loads(answer)["stats"]
            tally.latencies.append(time.perf_counter() - started)
            tally.molecules += stats["returned"]
            tally.server_ms.append(stats["elapsed_ms"])
        elif status == 503 and headers.get("retry-after", "").isdigit():
            tally.busy += 1
            await asyncio.sleep(min(float(headers["retry-after"]), max(0.0, deadline - time.monotonic())))
        else:
            tally.error(f"HTTP {status}", answer.decode(errors="replace"))
    connection.close()


async def run_load(
    port: int, clients: int, n: int, duration: float, max_requests: int, properties: bool = False
) -> tuple[Tally, float]:
    tally = Tally()
    budget = [max_requests]
    started = time.monotonic()
    deadline = started + duration
    await asyncio.gather(*(client(port, n, deadline, budget, tally, properties) for _ in range(clients)))
    return tally, time.monotonic() - started


async def burst(port: int, clients: int, body: bytes) -> list[tuple[int, float, str]]:
    """``clients`` requests at once, each on its own connection: (status, seconds, Retry-After)."""

    async def one() -> tuple[int, float, str]:
        connection = Connection(port)
        started = time.perf_counter()
        try:
            status, headers, _ = await connection.post("/v1/generate", body)
        finally:
            connection.close()
        return status, time.perf_counter() - started, headers.get("retry-after", "")

    return await asyncio.gather(*(one() for _ in range(clients)))


def run_bursts(port: int, clients: int, body: bytes, count: int) -> None:
    print("| burst | 200 | 503 | 504 | other | slowest 200 s | slowest 503 s | Retry-After s | took s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in range(1, count + 1):
        started = time.perf_counter()
        answers = asyncio.run(burst(port, clients, body))
        took = time.perf_counter() - started
        by_status = {code: [t for status, t, _ in answers if status == code] for code in (200, 503, 504)}
        other = sum(1 for status, _, _ in answers if status not in by_status)
        retry = sorted({int(r) for status, _, r in answers if status == 503 and r.isdigit()})
        slowest = [f"{max(by_status[code]):.2f}" if by_status[code] else "-" for code in (200, 503)]
        print(f"| {k} | {len(by_status[200])} | {len(by_status[503])} | {len(by_status[504])} | {other} | "
              f"{slowest[0]} | {slowest[1]} | {', '.join(map(str, retry)) or '-'} | {took:.1f} |")


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (1-256)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (1-600)")
    parser.add_argument("--n", type=int, default=100, help="molecules per request")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--workers", type=int, default=1, help="server processes (molgan serve --workers)")
    parser.add_argument("--max-queue", type=int, default=None, help="MOLGAN_MAX_QUEUE for the server")
    parser.add_argument("--properties", action="store_true", help="ask for properties too")
    parser.add_argument("--burst", type=int, default=0, help="K bursts of --clients requests at once "
                        "on a cold server instead of the timed load")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "qm9.yaml",
                        help="architecture when no checkpoint exists")
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and 1 <= args.duration <= 600 and args.max_requests >= 1):
        parser.error("--clients must be in 1..256, --duration in 1..600 s, --max-requests >= 1")

    env = {"MOLGAN_MAX_MOLECULES": str(max(args.n, 1000))}
    if args.max_queue is not None:
        env["MOLGAN_MAX_QUEUE"] = str(args.max_queue)
    with tempfile.TemporaryDirectory(prefix="molgan-load-api-") as tmp:
        checkpoint, described = benchmark_checkpoint(args.checkpoint, Path(tmp), args.config)
        if args.burst:
            body = json.dumps({"n": args.n, "properties": args.properties}).encode()
            with ServerProcess(checkpoint, env=env, workers=args.workers) as server:
                print(f"{described}; molgan serve --workers {args.workers} on 127.0.0.1 (default MOLGAN_* "
                      f"settings); {args.burst} bursts of {args.clients} x {body.decode()}")
                print()
                run_bursts(server.port, args.clients, body, args.burst)
                tracebacks = server.log.count("Traceback")
            print(f"\ntracebacks in the server log: {tracebacks}")
            return
        with ServerProcess(checkpoint, env=env, workers=args.workers) as server:
            pids = worker_pids(server.pid)
            idle = {pid: rss_bytes(pid) for pid in pids}
            warm_up = run_load(server.port, min(args.clients, 8), args.n, 3.0, 200, args.properties)
            asyncio.run(warm_up)
            start = {pid: rss_bytes(pid) for pid in pids}
            watch = MemoryWatch(pids)
            watch.start()
            server_pids = sorted({server.pid, *pids})
            client_cpu, server_cpu = time.process_time(), sum(cpu_seconds(p) for p in server_pids)
            load = run_load(
                server.port, args.clients, args.n, args.duration, args.max_requests, args.properties
            )
            tally, elapsed = asyncio.run(load)
            client_cpu = time.process_time() - client_cpu
            server_cpu = sum(cpu_seconds(p) for p in server_pids) - server_cpu
            watch.stop()
            end = {pid: rss_bytes(pid) for pid in pids}
            exit_code = server.stop()
            server_errors = [ln for ln in server.log.splitlines() if "Traceback" in ln or "ERROR" in ln]

    ok = len(tally.latencies)
    print(f"{described}; server: molgan serve --workers {args.workers} on 127.0.0.1 (default MOLGAN_* "
          f"settings{'' if args.max_queue is None else f', MOLGAN_MAX_QUEUE={args.max_queue}'}); "
          f"{args.clients} clients x {{\"n\": {args.n}, \"properties\": {str(args.properties).lower()}}} "
          f"for {elapsed:.1f} s")
    print()
    print("| requests ok | 503 + Retry-After | errors | molecules/s | requests/s | p50 ms | p90 ms | p99 ms "
          "| server p50 ms | server p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lat = [1000 * t for t in tally.latencies] or [float("nan")]
    own = tally.server_ms or [float("nan")]
    quantiles = [percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), percentile(own, 50),
                 percentile(own, 99)]
    print(f"| {ok:,} | {tally.busy:,} | {sum(tally.errors.values())} | {tally.molecules / elapsed:,.0f} | "
          f"{ok / elapsed:,.1f} | " + " | ".join(f"{q:.0f}" for q in quantiles) + " |")
    print("(p50-p99: at the client, from sending to the parsed answer; server: stats.elapsed_ms, "
          "from the request's arrival at the handler to its encoded answer)")
    print()
    print("| worker pid | RSS idle MB | RSS start MB | RSS peak MB | RSS end MB |")
    print("|---:|---:|---:|---:|---:|")
    flat = True
    for pid in pids:
        print(f"| {pid} | {idle[pid] / MB:.0f} | {start[pid] / MB:.0f} | {watch.peak[pid] / MB:.0f} | "
              f"{end[pid] / MB:.0f} |")
        flat &= end[pid] - start[pid] < max(64 * MB, 0.1 * start[pid]) and watch.peak[pid] < RSS_LIMIT
    print()
    print(f"CPU used during the load: server {server_cpu / elapsed:.2f} cores, "
          f"load generator {client_cpu / elapsed:.2f} cores")
    print(f"errors: {tally.errors or 'none'} -> {'PASS' if not tally.errors and ok else 'FAIL'}")
    for line in tally.examples + server_errors[:5]:
        print(f"    {line}")
    print(f"memory flat and under {RSS_LIMIT / 1e9:.1f} GB per worker -> {'PASS' if flat else 'FAIL'}")
    print(f"server exit after SIGTERM: {exit_code} ({'clean' if exit_code in (0, -15) else 'NOT clean'})")


if __name__ == "__main__":
    main()
