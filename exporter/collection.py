"""One collection: read the socket tables, find owners, count. I/O and timing live here.

Stages, each timed and reported as success/failure (node_exporter style):

* ``netlink``: sock_diag dump of every configured table (exporter.sources.netlink).
* ``proc``: /proc/net/* for tables netlink could not serve (or all of them with ``source: proc``).
* ``owners``: /proc/PID/fd scan mapping inodes to pids (only with the per-process breakdown on).
  The Pipeline keeps an owner cache between scrapes: the socket inodes of processes that have not
  run since it read them (exporter/owner_cache.py); counts and owners are still computed afresh.
  The scan is *begun* before the dump, so that the scan workers (exporter/owner_pool.py) read the
  fd tables while the dump runs, and finished after it (exporter/owners.py); the stage's time is
  what the collection waited for it after the dump.

Why a failed table is left out instead of counted as zero: a kernel error or an unreadable
/proc/net file says nothing about how many sockets exist, and a 0 would page nobody while CLOSE_WAIT
piles up. The stage's success metric goes to 0 and the table's series disappear, which the
``SocketExporterCollectorFailing`` alert catches.

``auto`` falls back to /proc per table only when netlink is *unavailable* (refused, module missing),
logs that once per table and exports ``socket_netlink_fallback 1``; any other netlink error fails the
stage. Concurrent scrapes share one collection (``SharedCollection``): the second scraper waits for
the one in flight and gets its result; a result is never served to a scrape that began after it
finished.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

from . import owners
from .aggregate import Counts, count_by_owner, count_totals
from .config import Config
from .kinds import tables_for
from .model import Table
from .owner_cache import OwnerCache
from .owner_pool import shared_pool
from .sources import TableReader
from .stage import Stage, StageTimer

log = logging.getLogger(__name__)


@dataclass
class Collection:
    """Everything one scrape reports; built fresh for every scrape."""

    config: Config
    counts: Counts
    stages: list[Stage] = field(default_factory=list)
    source_of: dict[Table, str] = field(default_factory=dict)
    fallback: bool = False
    owner_scan: owners.OwnerScan | None = None

    @property
    def ok(self) -> bool:
        return all(stage.success for stage in self.stages)


class Pipeline:
    """Runs collections for one config; remembers only which tables already logged a fallback."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tables = tables_for(config.kinds)
        self._sources = TableReader(config.source, config.procfs, self.tables)
        # What the owner scan learned about idle processes, reused only once re-validated (owner_cache.py).
        self._owner_cache = OwnerCache()
        # Scan worker processes, one pool per exporter process (owner_pool.py); None: scan in-process.
        self._owner_pool = shared_pool() if config.per_process.enabled else None

    def collect(self) -> Collection:
        config, stages = self.config, list[Stage]()
        owner_job = None
        if config.per_process.enabled:  # begun first: the workers read /proc/PID/fd during the dump
            owner_job = owners.begin_scan(config.procfs, self._owner_cache, self._owner_pool)
        try:
            tables, source_of, fallback = self._sources.read(stages)
        except BaseException:
            if owner_job is not None:
                owner_job.abandon()
            raise
        counts = Counts(totals=count_totals(tables, source_of))
        scan = None
        if owner_job is not None:
            timer = StageTimer(stages, "owners")
            wanted = set(chain.from_iterable(st.inodes for st in tables))
            wanted.discard(0)
            try:
                scan = owner_job.finish(wanted)
                by_owner = count_by_owner(tables, scan.owner, scan.comm, config.per_process.labels,
                                          config.per_process.max_owners)
                by_owner.totals = counts.totals
                counts = by_owner
                scan.owner = {}  # counted: 100k entries need not live on through the exposition
            except OSError as exc:  # /proc itself unreadable: totals stand, the breakdown is missing
                timer.success = False
                log.error("owner scan of %s failed: %s", config.procfs, exc)
            timer.done()
        return Collection(config=config, counts=counts, stages=stages, source_of=source_of,
                          fallback=fallback, owner_scan=scan)


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Collection | BaseException | None = None


class _CollectThread:
    """One daemon thread running the collections of one SharedCollection, one after the other.

    Why not run a collection on the scrape thread that asked first: glibc gives each thread its own
    malloc arena and keeps what is freed there. A collection at 100k sockets allocates ~20 MB of
    short-lived columns, sets and dicts, and the HTTP server has a pool of scrape threads, so RSS
    grew by one collection's peak per pool thread that ever led one: at 10k sockets, after a burst of
    concurrent scrapes, 44 MB -> 59 MB over 300 scrapes. On one thread it stays flat (45 MB).
    (``malloc_trim`` after each collection kept it flat too, but made the next one page-fault its
    memory back in: 16 -> 29 ms per collection.) The thread ends with its SharedCollection.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="collect", daemon=True).start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
            del job  # hold no reference to the SharedCollection between jobs: it can be collected

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)


class SharedCollection:
    """Single-flight: concurrent callers of ``get()`` share the collection that is in flight.

    Each flight carries its own result, so a waiter can never pick up a later flight's result.
    """

    def __init__(self, collect: Callable[[], Collection]) -> None:
        self._collect = collect
        self._lock = threading.Lock()
        self._inflight: _Flight | None = None
        self._thread: _CollectThread | None = None

    def get(self) -> Collection:
        """The collection in flight, or a new one, run on this object's collect thread (_CollectThread)."""
        with self._lock:
            flight = self._inflight
            if flight is None:
                flight = self._inflight = _Flight()
                if self._thread is None:
                    self._thread = _CollectThread()
                    weakref.finalize(self, self._thread.stop)
                self._thread.submit(lambda: self._run(flight))
        flight.done.wait()
        result = flight.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    def _run(self, flight: _Flight) -> None:
        try:
            flight.result = self._collect()
        except BaseException as exc:  # handed to every waiter, which re-raises it
            flight.result = exc
        finally:
            with self._lock:
                self._inflight = None
            flight.done.set()
