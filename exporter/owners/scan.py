"""Map socket inodes to the processes holding them, through ``/proc/PID/fd`` as psutil does.

Why this is its own step: neither /proc/net nor sock_diag says which process holds a socket; only
each process's fd table does (exporter/owners/read.py reads one). Reading every fd of every process
is the slowest part of a scrape, and on a busy host (every socket holder ran since the last scrape,
so the owner cache cannot vouch for any of them) it is most of it. The rule and the ways around the
cost:

* **The rule**: the owner of a socket is the LOWEST pid holding it (psutil 7 reports the highest
  instead: its per-pid ``dict.update`` lets the last pid win; the lowest is stable, the master
  process that outlives its workers, and is what we document). Pids are placed in ascending order
  and an inode, once placed, is never moved, however the reading was split up.
* **Two halves** (:func:`begin_scan`, then :meth:`ScanJob.finish`): which inodes are wanted is known
  only after the socket dump, but which sockets each process holds does not depend on it. So with a
  worker pool (exporter/owners/pool.py) the collection begins the scan first: the exporter lists
  ``/proc``, ``stat``s each fd dir (``st_size`` is the open-fd count on Linux >= 6.2: 0 for kernel
  threads, skipped; the count balances the workers), and hands the pids to the workers, which read
  every fd table while the exporter runs the dump. ``finish`` then walks the answers in pid order
  and places the wanted inodes. A failed worker's pids are read in-process there: same answer.
* **Without a pool** (one CPU, the pool busy, or no worker running) ``finish`` reads the processes
  itself, in pid order, and stops as soon as every wanted inode is placed: the first pid found is
  the lowest, so stopping early cannot change the answer. The pool cannot stop early (it starts
  before anything is wanted); it reads all processes, the in-process scan only those below the
  last owner. The counters (scanned, denied, vanished) count the pids each way actually visited.
* **The owner cache** (exporter/owners/cache.py) vouches for processes that did not run since they
  were read: their fds are not read again, wherever the reading happens (a worker is sent the
  expected key and answers "unchanged"). It never decides ownership: the pid walk does.

Processes come and go during a scan: a vanished pid or fd is normal and only counted, and so is a
pid whose fd dir we may not read (not root, or a ptrace-restricted process).
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Collection
from dataclasses import dataclass, field

from .cache import Entry, OwnerCache
from .pool import OwnerPool, PoolScan
from .read import ProcessRead, read_process, socket_inode
from .worker import Task

__all__ = ["OwnerScan", "ScanJob", "begin_scan", "parse_comm", "scan_owners", "socket_inode"]

#: C0 controls and DEL -> "?" as ps(1) prints them: a comm stays one harmless line in logs and labels.
_CONTROL = {c: "?" for c in (*range(32), 127)}


@dataclass(slots=True)
class OwnerScan:
    """Result of one owner scan.

    ``scanned_pids`` counts pids whose fd table was read (or known empty, or unchanged: cached); with
    ``denied_pids`` and ``vanished_pids`` that is every pid visited. ``vanished_fds`` counts fds
    closed between listing the dir and reading the link. ``pooled_pids`` of them were read by the
    worker pool, the rest in the exporter.
    """

    owner: dict[int, int] = field(default_factory=dict)
    comm: dict[int, str] = field(default_factory=dict)
    denied_pids: int = 0
    vanished_pids: int = 0
    vanished_fds: int = 0
    scanned_pids: int = 0
    scanned_fds: int = 0
    cached_pids: int = 0  # of scanned_pids: fd table unchanged, not read again (owners/cache.py)
    pooled_pids: int = 0  # of scanned_pids: read by a worker process (owners/pool.py)


def parse_comm(raw: bytes) -> str:
    """``/proc/PID/comm`` content -> process name.

    The kernel appends one newline; the name itself is up to 15 arbitrary non-NUL bytes, cut at a
    byte boundary, so it may be invalid UTF-8 (-> U+FFFD) or hold newlines and tabs (-> "?", as
    ps does). Quotes and backslashes are kept: escaping them is the exposition format's job.

    >>> parse_comm(b'nginx\\n'), parse_comm(b'a\\nb"\\xff\\n')
    ('nginx', 'a?b"\\ufffd')
    """
    return raw.removesuffix(b"\n").decode("utf-8", "replace").translate(_CONTROL)


def _fd_count_works(procfs: str) -> bool:
    """True when the fd dir's st_size is the open-fd count (Linux >= 6.2): we have fds open."""
    try:
        return os.stat(f"{procfs}/self/fd").st_size > 0
    except OSError:
        return False


def _read_comm(procfs: str, pid: int) -> str | None:
    try:
        with open(f"{procfs}/{pid}/comm", "rb") as f:
            return parse_comm(f.read())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _fd_stat(procfs: str, pid: int, fd_count: bool) -> int | ProcessRead:
    """The pid's open-fd count (-1: unknown), or its final read when there is nothing to read."""
    try:
        fds = os.stat(f"{procfs}/{pid}/fd").st_size if fd_count else -1
    except (FileNotFoundError, ProcessLookupError):
        return ProcessRead(pid, "vanished")
    except PermissionError:
        return ProcessRead(pid, "denied")
    return ProcessRead(pid) if fds == 0 else fds  # no open fds (kernel threads): nothing to read


class ScanJob:
    """One owner scan, begun before the socket dump (:func:`begin_scan`) and finished after it."""

    def __init__(self, procfs: str, cache: OwnerCache | None, pool: OwnerPool | None) -> None:
        self.procfs, self.cache = procfs, cache
        self._error: OSError | None = None
        self._pool_scan: PoolScan | None = None
        self._early: dict[int, ProcessRead] = {}  # pids settled at begin (vanished, denied, no fds)
        self._fds: dict[int, int] = {}
        self._expected: dict[int, Entry] = {}  # cache entries whose key a worker was asked to check
        self.pids: list[int] = []
        try:
            # isascii: str.isdigit() is also true for "\u00b2", which int() refuses.
            self.pids = sorted(int(n) for n in os.listdir(procfs) if n.isascii() and n.isdigit())
        except OSError as exc:  # raised by finish(): an unlistable procfs is a failed scan, not "no owners"
            self._error = exc
            return
        self.fd_count = _fd_count_works(procfs)
        if cache is not None and self.fd_count:
            cache.prune(set(self.pids))
        elif cache is not None:
            self.cache = None  # the cache's key needs the fd count (Linux >= 6.2)
        if pool is not None:
            try:
                self._start_pool(pool)
            except OSError as exc:  # raised by finish(), in the owner stage, like any scan error
                self.abandon()
                self._error = exc

    def __del__(self) -> None:
        self.abandon()  # a collection that failed between begin and finish must not keep the pool

    def _task(self, pid: int, fds: int, now: float) -> Task:
        entry = self.cache.usable(pid, fds, now) if self.cache is not None else None
        if entry is not None:
            self._expected[pid] = entry
        return pid, fds, None if entry is None else entry.key

    def _start_pool(self, pool: OwnerPool) -> None:
        tasks: list[tuple[Task, int]] = []
        now = time.monotonic()
        for pid in self.pids:
            fds = _fd_stat(self.procfs, pid, self.fd_count)
            if isinstance(fds, ProcessRead):
                self._early[pid] = fds
            else:
                self._fds[pid] = fds
                tasks.append((self._task(pid, fds, now), fds))
        self._pool_scan = pool.start(self.procfs, self.cache is not None, tasks)
        if self._pool_scan is None:  # busy or no worker: finish() reads in-process, pid by pid
            self._early, self._fds, self._expected = {}, {}, {}

    def abandon(self) -> None:
        """The collection failed before using this scan: give the pool back."""
        if self._pool_scan is not None:
            self._pool_scan.abandon()
            self._pool_scan = None

    def finish(self, wanted: set[int]) -> OwnerScan:
        """For each wanted socket inode, the lowest pid holding it (inode 0 is never wanted).

        ``wanted`` is consumed: placed inodes are removed from it (at 100k sockets a copy would be
        megabytes of peak memory). Vanished and denied pids/fds are counted, never raised. Any other
        OSError propagates with its filename: an unlistable ``procfs`` is a failed scan, not "no owners".
        """
        remaining = wanted
        remaining.discard(0)
        if self._pool_scan is None:
            if not remaining:
                return OwnerScan()
            if self._error is not None:
                raise self._error
            return self._scan_here(remaining)
        results, leftover = self._pool_scan.collect()
        self._pool_scan = None
        reads = self._early
        tasks = {pid: (pid, fds, key) for pid, fds, key in leftover}
        for r in results:
            if r.status == "failed":  # an unexpected error in the worker: read it here, raise it here
                tasks[r.pid] = (r.pid, self._fds[r.pid], self._expected[r.pid].key if r.pid in self._expected else None)
            else:
                reads[r.pid] = r
        scan = OwnerScan(pooled_pids=sum(r.status == "ok" for r in results))
        want_key = self.cache is not None
        for pid, fds, key in tasks.values():  # a failed worker's share: read here
            reads[pid] = read_process(self.procfs, pid, fds, want_key=want_key, expected=key)
        for pid in self.pids:
            if (got := reads.get(pid)) is not None:
                self._place(scan, got, self._fds.get(pid, 0), remaining)
        return scan

    def _scan_here(self, remaining: set[int]) -> OwnerScan:
        scan, want_key = OwnerScan(), self.cache is not None
        for pid in self.pids:
            fds = _fd_stat(self.procfs, pid, self.fd_count)
            if isinstance(fds, ProcessRead):
                read = fds
            else:
                _, _, key = self._task(pid, fds, time.monotonic())
                read = read_process(self.procfs, pid, fds, want_key=want_key, expected=key)
            if self._place(scan, read, fds if isinstance(fds, int) else 0, remaining) and not remaining:
                break
        return scan

    def _place(self, scan: OwnerScan, r: ProcessRead, fds: int, remaining: set[int]) -> bool:
        """Count one pid's read and give it the remaining inodes it holds; True if it got any."""
        scan.vanished_fds += r.vanished_fds
        scan.scanned_fds += r.scanned_fds
        if r.status != "ok":
            if r.status == "denied":
                scan.denied_pids += 1
            else:
                scan.vanished_pids += 1
            return False
        scan.scanned_pids += 1
        sockets: array[int] = r.sockets
        if r.unchanged:
            sockets = self._expected[r.pid].sockets
            scan.cached_pids += 1
        elif self.cache is not None and fds > 0:
            self.cache.store(r.pid, r.key, fds, sockets, r.since)
        if not remaining or not sockets:
            return False
        hits = remaining.intersection(sockets)
        if not hits:
            return False
        scan.owner.update(dict.fromkeys(hits, r.pid))
        remaining.difference_update(hits)
        if (name := _read_comm(self.procfs, r.pid)) is not None:
            scan.comm[r.pid] = name
        return True


def begin_scan(procfs: str, cache: OwnerCache | None = None, pool: OwnerPool | None = None) -> ScanJob:
    """Start an owner scan of ``procfs``: with a ``pool``, its workers start reading now. Never raises
    (an unlistable procfs is raised by :meth:`ScanJob.finish`); call ``finish`` or ``abandon``."""
    return ScanJob(procfs, cache, pool)


def scan_owners(procfs: str, wanted: Collection[int], *, cache: OwnerCache | None = None,
                pool: OwnerPool | None = None) -> OwnerScan:
    """:func:`begin_scan` + :meth:`ScanJob.finish` at once. Returns at once when nothing is wanted.

    With a ``cache`` (kept by the caller between scans of the same procfs), processes whose fd table
    provably did not change since the last scan are not read again; the answer is the same.
    """
    if not any(inode != 0 for inode in wanted):
        return OwnerScan()
    return begin_scan(procfs, cache, pool).finish(set(wanted))
