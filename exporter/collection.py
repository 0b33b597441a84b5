"""One collection: read the socket tables, find owners, count. I/O and timing live here.

Stages, each timed and reported as success/failure (node_exporter style):

* ``netlink``: sock_diag dump of every configured table (exporter.sources.netlink).
* ``proc``: /proc/net/* for tables netlink could not serve (or all of them with ``source: proc``).
* ``owners``: /proc/PID/fd scan mapping inodes to pids (only with the per-process breakdown on).
  The Pipeline keeps an owner cache between scrapes: the socket inodes of processes that have not
  run since it read them (exporter/owners/cache.py); counts and owners are still computed afresh.
  A procfs that shows no process at all (empty, unmounted) fails it (owners/procfs_check.py).
  The scan is *begun* before the dump, so that the scan workers (exporter/owners/pool.py) read the
  fd tables while the dump runs, and finished after it (exporter/owners/scan.py); the stage's time is
  what the collection waited for it after the dump.

Why a failed table is left out instead of counted as zero: a kernel error or an unreadable
/proc/net file says nothing about how many sockets exist, and a 0 would page nobody while CLOSE_WAIT
piles up. The stage's success metric goes to 0 and the table's series disappear, which the
``SocketExporterCollectorFailing`` alert catches.

``auto`` falls back to /proc per table only when netlink is *unavailable* (refused, module missing),
logs that once per table and exports ``socket_netlink_fallback 1``; any other netlink error fails the
stage. Concurrent scrapes share one collection (``SharedCollection``): the second scraper waits for
the one in flight and gets its result; a result is never served to a scrape that began after it
finished. A collection has a deadline (``collection.timeout``): past it, its waiters fail with
:class:`CollectionTimeout` instead of holding their scrape slots (see ``SharedCollection``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

from .aggregate.counts import Counts, count_by_owner, count_totals
from .model.kinds import tables_for
from .model.stage import Stage, StageTimer
from .model.table import Table
from .netns.discover import own_inode
from .netns.read import EveryNamespace, NamespaceRead, merge
from .owners import scan as owners
from .owners.cache import OwnerCache
from .owners.pool import shared_pool
from .owners.procfs_check import owner_scan_blocked
from .port_views import NamespaceViews, Views, ViewsResult, merge_stages, wants_detail
from .settings.config import DEFAULT_COLLECTION_TIMEOUT, Config
from .sources.select import TableReader

log = logging.getLogger(__name__)


@dataclass
class Collection:
    """Everything one scrape reports; built fresh for every scrape."""

    config: Config
    counts: Counts
    stages: list[Stage] = field(default_factory=list)
    source_of: dict[Table, str] = field(default_factory=dict)
    fallback: bool = False
    owner_scan: owners.OwnerScan | None = None  # None: no per-process breakdown, or the owner scan failed
    views: ViewsResult | None = None  # listeners, ports, ephemeral (port_views.py), when enabled
    namespaces: list[NamespaceRead] | None = None  # network_namespaces: all (exporter/exposition/namespaces.py)

    @property
    def ok(self) -> bool:
        return all(stage.success for stage in self.stages)


class Pipeline:
    """Runs collections for one config; remembers only which tables already logged a fallback."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tables = tables_for(config.kinds)
        self._views = Views(config)
        self._sources = TableReader(config.source, config.procfs, self.tables, *wants_detail(config))
        # What the owner scan learned about idle processes, reused only once re-validated (owners/cache.py).
        self._owner_cache = OwnerCache()
        # Scan worker processes, one pool per exporter process (owners/pool.py); None: scan in-process.
        self._owner_pool = shared_pool() if config.per_process.enabled else None
        self._every: EveryNamespace | None = None  # network_namespaces: all (sources/every_netns.py)
        self._ns_views: NamespaceViews | None = None
        if config.network_namespaces == "all":
            # each other namespace's views, computed inside it by the setns workers (port_views.py)
            self._ns_views = NamespaceViews(config) if self._views.enabled else None
            self._every = EveryNamespace(config.source, config.procfs, self.tables, own_inode(config.procfs),
                                         pod_logs=config.pod_logs, detail=wants_detail(config),
                                         views=self._ns_views)

    def collect(self) -> Collection:
        config, stages = self.config, list[Stage]()
        owner_job = None
        if config.per_process.enabled:  # begun first: the workers read /proc/PID/fd during the dump
            owner_job = owners.begin_scan(config.procfs, self._owner_cache, self._owner_pool)
        try:
            tables, source_of, fallback = self._sources.read(stages)
            # The exporter's own namespace; in all mode every other one's come with its read, below.
            views = self._views.collect(tables, source_of, stages) if self._views.enabled else None
            served: set[Table] | dict[Table, str] = source_of
            namespaces = None
            if self._every is not None:
                own = self._every.own_read(tables, source_of, stages)  # read above, as in own mode
                own.views = views
                namespaces = [own, *self._every.read(stages)]
                tables, served = merge(own, namespaces[1:])
                if self._ns_views is not None:
                    merge_stages(stages, [ns.view_stages for ns in namespaces[1:]])
                    self._ns_views.prune({ns.inode for ns in namespaces[1:] if ns.result != "vanished"})
                for ns in namespaces:
                    ns.counts = {k: n for k, n in count_totals(ns.tables, ns.served).items() if n}
                    ns.tables = []
        except BaseException:
            if owner_job is not None:
                owner_job.abandon()
            raise
        counts = Counts(totals=count_totals(tables, served))
        scan = None
        if owner_job is not None:
            timer = StageTimer(stages, "owners")
            wanted = set(chain.from_iterable(st.inodes for st in tables))
            wanted.discard(0)
            # An empty or unmounted procfs is a failed stage, not "every socket unowned" (owners/procfs_check.py).
            problem = owner_scan_blocked(config.procfs)
            if problem is None:
                try:
                    scan = owner_job.finish(wanted)
                    if wanted and not scan.scanned_pids:  # (finish consumed the placed ones)
                        problem = f"no fd table under {config.procfs} could be read"
                except OSError as exc:  # /proc itself unreadable
                    problem = str(exc)
            else:
                owner_job.abandon()
            if problem is None and scan is not None:
                by_owner = count_by_owner(tables, scan.owner, scan.comm, config.per_process.labels,
                                          config.per_process.max_owners)
                by_owner.totals = counts.totals
                counts = by_owner
                scan.owner = {}  # counted: 100k entries need not live on through the exposition
            else:  # totals stand; the breakdown and the scan's gauges are absent (owner_scan None)
                scan, timer.success = None, False
                log.error("owner scan of %s failed: %s", config.procfs, problem)
            timer.done()
        return Collection(config=config, counts=counts, stages=stages, source_of=source_of,
                          fallback=fallback, owner_scan=scan, views=views, namespaces=namespaces)


class CollectionTimeout(Exception):
    """A scrape gave up on a collection past its deadline; the server answers it with an error."""


class _Flight:
    def __init__(self, deadline: float) -> None:
        self.done = threading.Event()
        self.result: Collection | BaseException | None = None
        self.deadline = deadline  # time.monotonic() by which it should have finished


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
    """Single-flight with a deadline: concurrent ``get()`` calls share the collection in flight.

    Each flight carries its own result, so a waiter can never pick up a later flight's result.

    The deadline (``deadline`` seconds from a flight's start, ``collection.timeout``): a waiter gives
    up when the flight it joined is not done by then and raises :class:`CollectionTimeout`, so a
    collection that hangs (a read of /proc stuck on a hung mount, a netlink socket that never
    answers) holds each scrape's thread for at most the deadline, not for ever: without it the
    sixteen scrape slots fill with waiters and the exporter answers nothing but 503s, reload
    included, until a restart. Every give-up is counted (``timeouts``, exported as
    ``socket_exporter_collection_timeouts_total``).

    Why a flight past its deadline is not replaced by a new one: the new one would have to run on
    another thread (this one's thread is the stuck one, and one collect thread is the design, see
    _CollectThread), a ``Pipeline`` keeps state (owner cache, fallback log) that is not made for two
    collections at once, and what stopped the first (the same mount, the same process, the same
    kernel) would most likely stop the second: a persistent hang would add one stuck thread per
    scrape. So while the flight is past its deadline, ``get()`` fails *at once*, holding no slot,
    visibly (the scrape fails, ``up`` goes to 0); when the stuck collection returns, the next scrape
    starts a fresh one. A reload that changes the config gets a new state with its own
    SharedCollection and thread, which is also the way out of a collection stuck for good.
    """

    _counter_lock = threading.Lock()
    #: Scrapes failed by a deadline, process-wide (across reloads: each state has its own instance).
    timeouts = 0

    def __init__(self, collect: Callable[[], Collection], deadline: float = DEFAULT_COLLECTION_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._collect = collect
        self._deadline = deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: _Flight | None = None
        self._thread: _CollectThread | None = None

    def get(self) -> Collection:
        """The collection in flight, or a new one, run on this object's collect thread (_CollectThread).

        Raises CollectionTimeout past the deadline (class docstring)."""
        with self._lock:
            flight, now = self._inflight, self._clock()
            if flight is not None and now >= flight.deadline:
                overdue = now - flight.deadline + self._deadline
                self._count()
                raise CollectionTimeout(f"the collection in flight has run {overdue:.0f} s, past its "
                                        f"{self._deadline:g} s deadline; failing scrapes at once until it returns")
            if flight is None:
                flight = self._inflight = _Flight(now + self._deadline)
                if self._thread is None:
                    self._thread = _CollectThread()
                    weakref.finalize(self, self._thread.stop)
                self._thread.submit(lambda: self._run(flight))
        if not flight.done.wait(max(0.0, flight.deadline - self._clock())):
            self._count()
            raise CollectionTimeout(f"the collection did not finish within its {self._deadline:g} s deadline")
        result = flight.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    @classmethod
    def _count(cls) -> None:
        with cls._counter_lock:
            cls.timeouts += 1

    def _run(self, flight: _Flight) -> None:
        try:
            flight.result = self._collect()
        except BaseException as exc:  # handed to every waiter, which re-raises it
            flight.result = exc
        finally:
            with self._lock:
                self._inflight = None
            flight.done.set()
