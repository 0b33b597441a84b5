"""Password checks served one client address at a time, so a guessing client cannot queue Prometheus out.

Why: bcrypt at cost 12 is a third of a second of CPU, and the pool that runs it is small on purpose
(``auth_workers``). With one first-come queue, four addresses sending wrong passwords as fast as their
401s come back keep it full, and Prometheus's own first check (before its credentials are cached, or
after a restart) waits behind dozens of theirs until ``auth_timeout``. Here each address has its own
queue and the pool takes from them in turn, so a new address waits for at most one check per other
address with checks pending. The bounds stay: ``max_pending`` checks in all, ``max_per_client`` from
one address; when all are taken, a check from an address with fewer pending displaces the newest one
of the address with the most (whose client gets ``auth_busy``), so even many guessing addresses cannot
keep a quiet one out.

Loop thread only, like everything in the server but the pools themselves.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class FairQueue:
    """``submit(host, fn, *args)``: a future for ``fn(*args)`` run on ``executor``, or None when refused."""

    def __init__(self, executor: Executor, workers: int, max_pending: int, max_per_client: int) -> None:
        self._executor, self._workers = executor, workers
        self._max_pending, self._max_per_client = max_pending, max_per_client
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()  # whose turn is next first
        self._pending: dict[str, int] = {}  # queued or running, per address
        self._running = 0

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    def submit(self, host: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any] | None:
        mine = self._pending.get(host, 0)
        if mine >= self._max_per_client or (self.pending >= self._max_pending and not self._displace(mine)):
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(host, deque()).append((fn, args, future))
        self._pending[host] = mine + 1
        self._pump()
        return future

    def _displace(self, mine: int) -> bool:
        """Drop the newest queued check of the address with the most pending, if it has more than ``mine``."""
        queued = [(self._pending[h], h) for h, q in self._queues.items() if q]
        if not queued:
            return False
        most, host = max(queued)
        if most <= mine + 1:
            return False
        _, _, future = self._queues[host].pop()
        if not self._queues[host]:
            del self._queues[host]
        self._release(host)
        future.set_result(None)
        return True

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running < self._workers and self._queues:
            host, queue = next(iter(self._queues.items()))
            fn, args, future = queue.popleft()
            if queue:
                self._queues.move_to_end(host)
            else:
                del self._queues[host]
            if future.cancelled():  # its client left while it waited: no bcrypt spent on it
                self._release(host)
                continue
            self._running += 1
            done = loop.run_in_executor(self._executor, fn, *args)
            done.add_done_callback(functools.partial(self._finished, host=host, future=future))

    def _finished(self, done: asyncio.Future[Any], host: str, future: asyncio.Future[Any]) -> None:
        self._running -= 1
        self._release(host)
        if not future.done():
            if done.cancelled():
                future.cancel()
            elif (exc := done.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result())
        self._pump()

    def _release(self, host: str) -> None:
        left = self._pending[host] - 1
        if left:
            self._pending[host] = left
        else:
            del self._pending[host]
