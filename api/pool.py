"""A bounded pool for CPU-bound work, so the event loop stays free and the backlog stays short.

At most ``threads`` jobs run and at most ``max_queue`` more wait. A job counts against that
bound until it has finished, even if its request gave up waiting (a thread cannot be stopped
halfway), so timed-out work cannot pile up behind the server's back. When the bound is reached
``submit`` raises ``PoolFull`` at once: the caller answers 503 instead of queueing without limit.

Within that bound, a job that has a deadline is admitted only if it is expected to finish by it.
Each job says what kind of work it is (``kind``, e.g. generating from one model with properties)
and how much (``units``, e.g. molecules requested). For each kind the pool keeps an exponentially
weighted mean of the seconds per unit of its finished jobs (the sum of recent jobs' seconds over
the sum of their units, so that large jobs, whose cost matters, weigh most). At submit it plays
the queue forward: the running jobs' remaining time (their estimate less the time they have run),
then the queued jobs in order, each on the thread that frees first, then the new job. If that
finishes later than ``ADMIT_FRACTION`` of the deadline, ``submit`` raises ``PoolFull`` with the
seconds after which it would fit (``retry_after_s``).

What keeps the estimate from refusing work it should not:

* A job that finds the pool idle is always admitted: only work queued or running counts, so once
  the backlog has drained nothing is refused, however slow the last measurement was, and the
  admitted job measures again.
* A kind with no finished job yet (a cold server) has no estimate: up to ``threads`` of its jobs
  are admitted at a time, whose own cost counts as that of the most expensive measured kind (none
  measured: nothing); further ones are refused until one has finished and measured it, so that a
  burst on a cold server cannot queue work that ends in timeouts.
* Jobs that fail (e.g. a 422 raised halfway) or never start (their request timed out in the
  queue) are not measured.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Admit a job if its estimated finish is within this fraction of its deadline: the estimate is a
# mean, and the rest of the deadline absorbs a job that runs slower than its kind's mean.
ADMIT_FRACTION = 0.8
# Weight of the newest finished job in its kind's running means.
SMOOTHING = 0.3


class PoolFull(RuntimeError):
    """The job was refused at once: every thread is busy and the queue is full, or it would not
    finish within its deadline. ``retry_after_s``: when it is expected to fit (``None``: unknown)."""

    def __init__(self, message: str, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass
class _Job:
    kind: str | None
    units: float
    started: float | None = None
    """``time.monotonic()`` when a thread took it; ``None`` while it is queued."""


@dataclass
class _Rate:
    """Exponentially weighted seconds and units of one kind's finished jobs."""

    seconds: float
    units: float

    @property
    def per_unit(self) -> float:
        return self.seconds / self.units

    def add(self, seconds: float, units: float) -> None:
        self.seconds += SMOOTHING * (seconds - self.seconds)
        self.units += SMOOTHING * (units - self.units)


@dataclass(frozen=True)
class Estimate:
    start_s: float
    """Seconds until a thread would take the job."""
    finish_s: float
    """Seconds until it would be done."""


class WorkPool:
    def __init__(self, threads: int, max_queue: int, initializer: Callable[[], None] | None = None) -> None:
        self.threads = threads
        self.capacity = threads + max_queue
        self._executor = ThreadPoolExecutor(threads, "molgan-work", initializer=initializer)
        self._lock = threading.Lock()
        # In submission order, which is the order the executor's queue hands them to threads.
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count()
        self._rates: dict[str, _Rate] = {}

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return len(self._jobs)

    def seconds_per_unit(self, kind: str) -> float | None:
        """The running estimate for ``kind``; ``None`` until one of its jobs has finished."""
        with self._lock:
            rate = self._rates.get(kind)
            return None if rate is None else rate.per_unit

    def estimate(self, kind: str | None = None, units: float = 1.0) -> Estimate:
        """When a job of ``units`` of ``kind`` submitted now would start and finish."""
        with self._lock:
            return self._estimate(kind, units, time.monotonic())

    def submit(self, fn: Callable[[], T], kind: str | None = None, units: float = 1.0,
               deadline_s: float | None = None) -> Future[T]:
        """Queue ``fn()``; ``PoolFull`` at once if the queue is full or, with ``deadline_s``, if it
        is not expected to finish within that many seconds (see the module's description)."""
        with self._lock:
            if len(self._jobs) >= self.capacity:
                raise PoolFull(
                    f"{len(self._jobs)} jobs queued or running, the limit is {self.capacity}", "queue"
                )
            if deadline_s is not None and self._jobs:
                self._admit(kind, units, deadline_s)
            job_id, job = next(self._ids), _Job(kind, units)
            self._jobs[job_id] = job
        try:
            future = self._executor.submit(self._measured, job, fn)
        except BaseException:
            self._release(job_id)
            raise
        future.add_done_callback(lambda _: self._release(job_id))
        return future

    async def run(self, fn: Callable[[], T], timeout: float, kind: str | None = None,
                  units: float = 1.0) -> T:
        """``fn()`` on a pool thread, admitted only if expected to finish within ``timeout``
        seconds; ``TimeoutError`` after ``timeout`` seconds (a job that has not started by then is
        dropped)."""
        future = self.submit(fn, kind, units, deadline_s=timeout)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        finally:
            future.cancel()  # no-op once it runs or has finished

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------------- with the lock held

    def _admit(self, kind: str | None, units: float, deadline_s: float) -> None:
        """Raise ``PoolFull`` unless a job of ``units`` of ``kind`` is expected in time."""
        if kind is not None and kind not in self._rates:
            cold = sum(1 for job in self._jobs.values() if job.kind == kind)
            if cold >= self.threads:
                raise PoolFull(
                    f"{cold} requests of this kind are running or queued and none has finished yet, "
                    "so how long it takes is not known", "unmeasured",
                )
        estimate = self._estimate(kind, units, time.monotonic())
        budget = ADMIT_FRACTION * deadline_s
        if estimate.finish_s > budget:
            raise PoolFull(
                f"{len(self._jobs)} jobs are queued or running; this one would start in about "
                f"{estimate.start_s:.1f} s and finish in about {estimate.finish_s:.1f} s, later than the "
                f"request timeout of {deadline_s:g} s allows",
                "deadline", retry_after_s=estimate.finish_s - budget,
            )

    def _estimate(self, kind: str | None, units: float, now: float) -> Estimate:
        fallback = max((rate.per_unit for rate in self._rates.values()), default=0.0)

        def cost(job_kind: str | None, job_units: float) -> float:
            rate = self._rates.get(job_kind) if job_kind is not None else None
            return job_units * (rate.per_unit if rate is not None else fallback)

        running = [max(0.0, cost(j.kind, j.units) - (now - j.started))
                   for j in self._jobs.values() if j.started is not None]
        # A thread may take its next job a moment before the last one is released: count no more
        # running jobs than threads, keeping those that free a thread first.
        free = sorted(running + [0.0] * max(0, self.threads - len(running)))[: self.threads]
        heapq.heapify(free)
        for job in self._jobs.values():
            if job.started is None:
                heapq.heappush(free, heapq.heappop(free) + cost(job.kind, job.units))
        start = free[0]
        return Estimate(start, start + cost(kind, units))

    # ----------------------------------------------------------------------- on the pool's threads

    def _measured(self, job: _Job, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        with self._lock:
            job.started = started
        result = fn()
        seconds = time.monotonic() - started
        if job.kind is not None and job.units > 0:
            with self._lock:
                rate = self._rates.get(job.kind)
                if rate is None:
                    self._rates[job.kind] = _Rate(seconds, job.units)
                else:
                    rate.add(seconds, job.units)
        return result

    def _release(self, job_id: int) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)


def retry_after(seconds: float | None, least: int) -> int:
    """A Retry-After value: ``seconds`` rounded up, at least ``least``."""
    return least if seconds is None else max(least, math.ceil(seconds))
