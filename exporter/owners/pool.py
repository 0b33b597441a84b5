"""A small, long-lived pool of owner-scan worker processes, so a busy host's fd tables are read in parallel.

Why processes: the owner scan's cost is one ``readlink`` per open fd of every process, mostly kernel
time. Threads were measured not to help (each readlink gives up and takes back the GIL, and the
Python between two of them, the call and the string, runs one thread at a time); separate processes
do scale with the CPUs (README, Performance). When every socket holder ran since the last scrape the
owner cache (exporter/owners/cache.py) cannot help, and this is what is left.

Design, and why each choice:

* **Sized by the CPUs we may run on** (``os.sched_getaffinity``, capped at MAX_WORKERS; the
  ``SOCKET_EXPORTER_SCAN_WORKERS`` environment variable overrides it). One CPU means no pool: the
  scan runs in the exporter, as before, and workers would only add copies and context switches.
* **Started once, reused by every scrape**, and shared by all pipelines of the process (a reload
  builds a new pipeline, not a new pool). One scan uses the pool at a time; a second, concurrent one
  (an old and a new config during a reload) scans in-process instead of waiting.
* **Fresh interpreters, not forks** (``subprocess`` with ``close_fds``, ``python -I -S``): the pool is
  started by the first pipeline (at start-up, on the main thread, before the server binds) but
  respawns workers from the collect thread, and forking a threaded process copies locks other
  threads hold; ``subprocess`` forks and execs in C, which is safe there. A fresh interpreter also
  holds none of the exporter's fds (its listening socket, client connections), none of its memory,
  and imports only exporter/owners/read.py (no dataclasses, no typing: each costs every worker RSS).
  Its cost is a fraction of a second of start-up, once, in the background.
* **Compact answers**: each worker returns, per pid, the raw bytes of an ``array('I')`` of socket
  inodes (exporter/owners/worker.py has the wire format); nothing is pickled.
* **Balanced by fd count**: the exporter ``stat``s each fd dir (its ``st_size`` is the number of open
  fds) and deals the pids out largest first to the least loaded worker, so one huge process does not
  leave the other workers idle behind it.
* **Failures cost one scrape's speed, never its answer**: a worker that dies, answers garbage or does
  not answer within WORKER_TIMEOUT is killed and reaped, its pids are read in the exporter, and a new
  worker is started for the next scrape.
* **No orphans**: a worker exits at EOF on its stdin, i.e. when the exporter dies however it dies
  (exporter/owners/worker.py says why not ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import heapq
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from . import worker as owner_worker
from .read import ProcessRead
from .worker import LENGTH, Task, decode_results, encode_request

log = logging.getLogger(__name__)

MAX_WORKERS = 4
WORKER_TIMEOUT = 30.0
ENV_WORKERS = "SOCKET_EXPORTER_SCAN_WORKERS"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds exporter/
_BOOT = f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from exporter.owners.worker import main; main()"


def default_size() -> int:
    """Workers for this process: the env override, else the CPUs it may use, capped."""
    if (env := os.environ.get(ENV_WORKERS, "").strip()).isdigit():
        return int(env)
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    rfd: int  # its stdout
    wfd: int  # its stdin

    @property
    def pid(self) -> int:
        return self.proc.pid


class OwnerPool:
    """``size`` worker processes; :meth:`start` hands out one scan's pids, :meth:`collect` gathers them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.respawns = 0
        self._workers: list[_Worker | None] = [None] * size
        self._lock = threading.Lock()
        for i in range(size):
            self._spawn(i)

    @property
    def pids(self) -> list[int]:
        """The live workers' pids."""
        return [w.pid for w in self._workers if w is not None]

    def _spawn(self, i: int) -> None:
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, str(os.getpid())],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, bufsize=0)
        except OSError as exc:
            log.warning("cannot start an owner scan worker (%s): scanning in-process", exc)
            self._workers[i] = None
            return
        assert proc.stdin is not None and proc.stdout is not None
        self._workers[i] = _Worker(proc, proc.stdout.fileno(), proc.stdin.fileno())

    def _retire(self, i: int, why: str) -> None:
        """Kill and reap worker ``i`` (whatever state it is in); the next :meth:`start` replaces it."""
        worker = self._workers[i]
        self._workers[i] = None
        if worker is None:
            return
        log.warning("owner scan worker %d %s: its processes are read in-process; restarting it", worker.pid, why)
        worker.proc.kill()
        worker.proc.wait()
        for f in (worker.proc.stdin, worker.proc.stdout):
            if f is not None:
                f.close()

    def start(self, procfs: str, want_key: bool, tasks: list[tuple[Task, int]]) -> PoolScan | None:
        """Send ``(task, weight)`` pairs to the workers; None when the pool is busy or has no worker."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._start(procfs, want_key, tasks)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, procfs: str, want_key: bool, tasks: list[tuple[Task, int]]) -> PoolScan | None:
        for i, worker in enumerate(self._workers):
            if worker is None or worker.proc.poll() is not None:
                if worker is not None:
                    self._retire(i, f"exited with status {worker.proc.returncode}")
                self.respawns += 1
                self._spawn(i)
        live = [i for i, w in enumerate(self._workers) if w is not None]
        if not live:
            self._lock.release()
            return None
        shares: dict[int, list[Task]] = {i: [] for i in live}
        heap = [(0, i) for i in live]
        for task, weight in sorted(tasks, key=lambda tw: -tw[1]):  # largest first, to the least loaded
            load, i = heapq.heappop(heap)
            shares[i].append(task)
            heapq.heappush(heap, (load + max(1, weight), i))
        scan = PoolScan(self, {})
        for i, share in shares.items():
            if not share:
                continue
            worker = self._workers[i]
            assert worker is not None
            try:
                owner_worker.write_all(worker.wfd, encode_request(procfs, want_key, share))
                scan.pending[i] = share
            except OSError as exc:
                self._retire(i, f"refused a request ({exc})")
                scan.leftover.extend(share)
        return scan

    def _receive(self, i: int, deadline: float) -> list[ProcessRead] | None:
        worker = self._workers[i]
        assert worker is not None
        try:
            head = owner_worker.read_exactly(worker.rfd, LENGTH.size, deadline)
            payload = owner_worker.read_exactly(worker.rfd, LENGTH.unpack(head)[0], deadline) if head else None
            if payload is None:
                self._retire(i, "exited mid-scan")
                return None
            return decode_results(payload)
        except TimeoutError:
            self._retire(i, f"did not answer within {WORKER_TIMEOUT:.0f} s")
        except Exception as exc:  # a garbled answer: never trust that worker again
            self._retire(i, f"answered badly ({exc!r})")
        return None

    def close(self) -> None:
        """Stop every worker (tests; a running exporter's workers end with it)."""
        with self._lock:
            for i, worker in enumerate(self._workers):
                if worker is not None:
                    for f in (worker.proc.stdin, worker.proc.stdout):
                        if f is not None:
                            f.close()
                    worker.proc.wait()
                    self._workers[i] = None


@dataclass
class PoolScan:
    """One scan in the pool's hands: the tasks each worker has, and those no worker took."""

    pool: OwnerPool
    pending: dict[int, list[Task]]
    leftover: list[Task] = field(default_factory=list)

    def collect(self) -> tuple[list[ProcessRead], list[Task]]:
        """Every worker's answers, and the tasks of workers that failed (for the caller to read);
        releases the pool. Safe to call once; :meth:`abandon` is the alternative."""
        deadline = time.monotonic() + WORKER_TIMEOUT
        results: list[ProcessRead] = []
        try:
            for i, share in self.pending.items():
                got = self.pool._receive(i, deadline)
                if got is None:
                    self.leftover.extend(share)
                else:
                    results.extend(got)
        finally:
            self.pending = {}
            self.pool._lock.release()
        return results, self.leftover

    def abandon(self) -> None:
        """The collection failed before its owner stage: drop the answers (kill the busy workers)."""
        try:
            for i in self.pending:
                self.pool._retire(i, "was abandoned mid-scan")
        finally:
            self.pending = {}
            self.pool._lock.release()


_shared: OwnerPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> OwnerPool | None:
    """The process's pool, started on first use; None when one CPU (or the env) says in-process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            size = default_size()
            if size <= 1:
                return None
            _shared = OwnerPool(size)
        return _shared
