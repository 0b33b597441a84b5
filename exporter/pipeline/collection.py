"""One collection: read the socket tables, find owners, count, compute the views. I/O and timing live here.

Stages, each timed and reported as success/failure (node_exporter style):

* ``netlink``: sock_diag dump of every configured table (exporter.sources.netlink).
* ``proc``: /proc/net/* for tables netlink could not serve (or all of them with ``source: proc``).
* ``namespaces``: every other network namespace, with ``network_namespaces: all`` (exporter/netns/read.py).
* ``listeners``, ``ephemeral``: the views, when on (exporter/pipeline/views.py), one stage each over
  every namespace read.
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
stage (exporter/sources/select.py). Concurrent scrapes share one collection: exporter/pipeline/single_flight.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import chain

from ..aggregate.counts import Counts, count_by_owner, count_totals
from ..model.kinds import tables_for
from ..model.stage import Stage, StageTimer
from ..model.table import Table
from ..model.tags import Result, Source
from ..netns.discover import own_inode
from ..netns.read import EveryNamespace, NamespaceRead, merge
from ..owners import scan as owners
from ..owners.cache import OwnerCache
from ..owners.pool import shared_pool
from ..owners.procfs_check import owner_scan_blocked
from ..settings.config import Config
from ..sources.select import TableReader
from .views import NamespaceViews, ViewsResult, merge_stages, wants_detail

log = logging.getLogger(__name__)
#: The scope of the exporter's own namespace in the views (pipeline/views.py NamespaceViews).
OWN = ""


@dataclass
class Collection:
    """Everything one scrape reports; built fresh for every scrape."""

    config: Config
    counts: Counts
    stages: list[Stage] = field(default_factory=list)
    source_of: dict[Table, Source] = field(default_factory=dict)
    fallback: bool = False
    owner_scan: owners.OwnerScan | None = None  # None: no per-process breakdown, or the owner scan failed
    views: ViewsResult | None = None  # the own namespace's listeners, ports, ephemeral, when enabled
    namespaces: list[NamespaceRead] | None = None  # network_namespaces: all (exporter/exposition/namespaces.py)
    #: network_namespaces: all: each namespace's views by inode, the own one's included
    namespace_views: dict[int, ViewsResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(stage.success for stage in self.stages)


ViewsOut = tuple[ViewsResult, list[Stage]]


class Pipeline:
    """Runs collections for one config; remembers only which tables already logged a fallback."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tables = tables_for(config.kinds)
        self._views = NamespaceViews(config)
        self._sources = TableReader(config.source, config.procfs, self.tables, *wants_detail(config))
        # What the owner scan learned about idle processes, reused only once re-validated (owners/cache.py).
        self._owner_cache = OwnerCache()
        # Scan worker processes, one pool per exporter process (owners/pool.py); None: scan in-process.
        self._owner_pool = shared_pool() if config.per_process.enabled else None
        self._every: EveryNamespace[ViewsOut] | None = None  # network_namespaces: all (netns/read.py)
        if config.network_namespaces == "all":
            inside = self._namespace_views if self._views.enabled else None
            self._every = EveryNamespace(config.source, config.procfs, self.tables, own_inode(config.procfs),
                                         pod_logs=config.pod_logs, detail=wants_detail(config), inside=inside)

    def _namespace_views(self, read: NamespaceRead, in_namespace: bool) -> ViewsOut:
        """Another namespace's views, on the thread that read it (in it, if ``in_namespace``)."""
        return self._views(str(read.inode), read.tables, read.source_of, in_namespace)

    def collect(self) -> Collection:
        config, stages = self.config, list[Stage]()
        owner_job = None
        if config.per_process.enabled:  # begun first: the workers read /proc/PID/fd during the dump
            owner_job = owners.begin_scan(config.procfs, self._owner_cache, self._owner_pool)
        try:
            tables, source_of, fallback = self._sources.read(stages)
            views = None
            if self._views.enabled:  # the own namespace's: this thread is in it
                views, view_stages = self._views(OWN, tables, source_of)
                merge_stages(stages, [view_stages])
            served: set[Table] | dict[Table, Source] = source_of
            namespaces, namespace_views = None, {}
            if self._every is not None:
                own = self._every.own_read(tables, source_of, stages)  # read above, as in own mode
                others, theirs = self._every.read(stages)
                namespaces = [own, *others]
                tables, served = merge(own, others)
                merge_stages(stages, [theirs[ns.inode][1] for ns in others if ns.inode in theirs])
                namespace_views = {inode: out[0] for inode, out in theirs.items()}
                if views is not None:
                    namespace_views[own.inode] = views
                    self._views.prune({ns.inode for ns in others if ns.result != Result.VANISHED})
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
        return Collection(config=config, counts=counts, stages=stages, source_of=source_of, fallback=fallback,
                          owner_scan=scan, views=views, namespaces=namespaces, namespace_views=namespace_views)
