"""A bounded pool for CPU-bound work, so the event loop stays free and the backlog stays short.

At most ``threads`` jobs run and at most ``max_queue`` more wait. A job counts against that
bound until it has finished, even if its request gave up waiting (a thread cannot be stopped
halfway), so timed-out work cannot pile up behind the server's back. When the bound is reached
``submit`` raises ``PoolFull`` at once: the caller answers 503 instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolFull(RuntimeError):
    """Every thread is busy and the queue is full."""


class WorkPool:
    def __init__(self, threads: int, max_queue: int, initializer: Callable[[], None] | None = None) -> None:
        self.threads = threads
        self.capacity = threads + max_queue
        self._executor = ThreadPoolExecutor(threads, "molgan-work", initializer=initializer)
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._pending >= self.capacity:
                raise PoolFull(f"{self._pending} jobs queued or running, the limit is {self.capacity}")
            self._pending += 1
        try:
            future = self._executor.submit(fn)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return future

    async def run(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()`` on a pool thread; ``TimeoutError`` after ``timeout`` seconds (a job that has not
        started by then is dropped)."""
        future = self.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        finally:
            future.cancel()  # no-op once it runs or has finished

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
