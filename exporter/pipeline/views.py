"""The views (listeners, ports, ephemeral; ``--collector.<name>`` on the command line) of one collection.

Their I/O, stages and error handling.

Pure counting lives in :mod:`exporter.aggregate.listeners`, :mod:`exporter.aggregate.ports` and
:mod:`exporter.aggregate.ephemeral`;
this module reads what they need beyond the socket tables (the listeners' own dump with drop counters,
the ephemeral range sysctls), times each as a stage and decides what is *unavailable* rather than 0:

* over netlink, listeners come from a LISTEN-only dump with INET_DIAG_SKMEMINFO (stage ``listeners``);
  a kernel older than 4.7 sends no drop counter, so drops are unavailable (reason ``kernel``);
* over /proc, listeners are the LISTEN rows of /proc/net/tcp*: the accept queue length is there, the
  backlog and the drops are not (reason ``proc``). Each unavailable (metric, table) is exported as
  ``socket_metric_unavailable 1`` and logged once, and the metric's series are absent, never 0.
* a table that failed to read is in neither view: its series are absent, as in ``socket_connections``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..aggregate.ephemeral import EphemeralUse, ephemeral_use
from ..aggregate.listeners import DropsCounter, ListenQueues, PortValues, cap_listeners, listen_queues
from ..aggregate.ports import PortCounts, count_ports
from ..model.stage import Stage, StageTimer
from ..model.table import ListenTable, SocketTable, SourceError, Table
from ..model.tags import Source
from ..settings.config import Config
from ..sources import netlink
from ..sources.procfs_inet import listeners_of
from ..sources.sysctl import read_range

log = logging.getLogger(__name__)
QUEUE_LIMIT, DROPS = "socket_listen_queue_limit", "socket_listen_drops_total"
RANGE_SIZE, MAX_IN_USE = "socket_ephemeral_port_range_size", "socket_ephemeral_ports_max_in_use"


@dataclass
class ViewsResult:
    listeners: ListenQueues | None = None
    drops: PortValues = field(default_factory=dict)
    #: (metric, table, reason): metrics the source could not give for that table this scrape.
    unavailable: list[tuple[str, Table, str]] = field(default_factory=list)
    ports: PortCounts | None = None
    ephemeral: EphemeralUse | None = None


def wants_detail(config: Config) -> tuple[bool, bool]:
    """(decode inet detail over netlink, parse it from /proc): only what the enabled views need."""
    counted = config.ports.enabled or config.ephemeral.enabled
    return counted, counted or config.listeners.enabled


#: One per process, not per config: a reload builds a new Pipeline, and the drops counter must not
#: start over (it would decrease). Shared by concurrent pipelines, it stays right: each update adds
#: what changed since the previous one, whoever made it.
DROPS_COUNTER = DropsCounter()


class Views:
    """The views of one config; what they log once is remembered here, the drops counter process-wide."""

    def __init__(self, config: Config, scope: str = "", drops: DropsCounter = DROPS_COUNTER,
                 logged: set[tuple[str, Table, str]] | None = None) -> None:
        self.config, self.scope = config, scope
        self._drops = drops
        self._logged = set[tuple[str, Table, str]]() if logged is None else logged

    def collect(self, tables: Sequence[SocketTable], source_of: Mapping[Table, str],
                stages: list[Stage], sysctls: bool = True) -> ViewsResult:
        """This namespace's views. ``sysctls`` False: the calling thread is not in the tables' namespace
        (read through /proc/PID/net), so its ephemeral range cannot be read: unavailable, not ours."""
        c, out = self.config, ViewsResult()
        tcp = [st for st in tables if st.table.has_tcp_states and st.table in source_of]
        if c.listeners.enabled:
            self._listeners(tcp, source_of, stages, out)
        if c.ports.enabled:
            out.ports = count_ports(tcp, c.ports.always, c.ports.max_ports)
        if c.ephemeral.enabled and tcp and not sysctls:
            for metric in (RANGE_SIZE, MAX_IN_USE):
                for st in tcp:
                    self._unavailable(out, metric, st.table, "proc")
        elif c.ephemeral.enabled and tcp:
            timer = StageTimer(stages, "ephemeral")
            try:
                low, high, reserved = read_range(c.procfs)
                out.ephemeral = ephemeral_use(tcp, low, high, reserved, c.ephemeral.top)
            except (OSError, ValueError) as exc:
                timer.success = False
                log.error("ephemeral port range unreadable under %s: %s", c.procfs, exc)
            timer.done()
        return out

    def _listeners(self, tcp: Sequence[SocketTable], source_of: Mapping[Table, str], stages: list[Stage],
                   out: ViewsResult) -> None:
        timer, read = StageTimer(stages, "listeners"), list[ListenTable]()
        for st in tcp:
            if source_of[st.table] == Source.PROC:
                read.append(listeners_of(st))
                continue
            try:
                read.append(netlink.read_listeners(st.table))
            except (SourceError, OSError) as exc:
                timer.success = False
                log.error("listener dump failed for %s: %s", st.table.value, exc)
        timer.done()
        for lt in read:
            reason = "proc" if source_of[lt.table] == Source.PROC else "kernel"
            if lt.limits is None:
                self._unavailable(out, QUEUE_LIMIT, lt.table, reason)
            if lt.drops is None:
                self._unavailable(out, DROPS, lt.table, reason)
        out.listeners = listen_queues(read)
        out.drops = cap_listeners(out.listeners, self._drops.update(self.scope, read), self.config.listeners.max_ports)

    def _unavailable(self, out: ViewsResult, metric: str, table: Table, reason: str) -> None:
        item = (metric, table, reason)
        out.unavailable.append(item)
        if item not in self._logged:  # once per process life: it will not change by itself
            self._logged.add(item)
            log.warning("%s unavailable for %s%s: the %s source does not provide it", metric, table.value,
                        f" in netns {self.scope}" if self.scope else "",
                        "/proc" if reason == "proc" else "kernel's (< 4.7) netlink")


class NamespaceViews:
    """The views of every namespace a collection reads, the exporter's own included: ONE path for all.

    A scope names the namespace: "" for the exporter's own (``network_namespaces: own`` knows no
    other), its inode for another one (``all``), whose views are computed on the setns worker thread
    inside it (exporter/netns/read.py), so its listener dump and its ephemeral sysctls are its own.
    Each call returns that namespace's stages apart, folded into the scrape's by :func:`merge_stages`.
    A namespace no longer live is forgotten, its drop totals too (a reused inode must not inherit them).
    """

    def __init__(self, config: Config, drops: DropsCounter = DROPS_COUNTER) -> None:
        self.config, self._drops = config, drops
        self._views: dict[str, Views] = {}
        # what is logged once: once for the own namespace, once for all the others together
        self._logged = {True: set[tuple[str, Table, str]](), False: set[tuple[str, Table, str]]()}

    @property
    def enabled(self) -> bool:
        c = self.config
        return bool(c.listeners.enabled or c.ports.enabled or c.ephemeral.enabled)

    def __call__(self, scope: str, tables: Sequence[SocketTable], source_of: Mapping[Table, str],
                 sysctls: bool = True) -> tuple[ViewsResult, list[Stage]]:
        """One namespace's views; ``sysctls`` as in :meth:`Views.collect`."""
        views = self._views.get(scope)
        if views is None:  # dict writes are atomic: two worker threads never share a namespace
            views = self._views[scope] = Views(self.config, scope, self._drops, self._logged[scope == ""])
        stages: list[Stage] = []
        return views.collect(tables, source_of, stages, sysctls), stages

    def prune(self, live: set[int]) -> None:
        """Forget every other namespace but the ``live`` inodes (the own one stays)."""
        scopes = {str(i) for i in live}
        for scope in [s for s in self._views if s and s not in scopes]:
            del self._views[scope]
        self._drops.retain(scopes)


def merge_stages(stages: list[Stage], more: Sequence[Sequence[Stage]]) -> None:
    """Fold every namespace's view stages into one stage per name: failed if any failed, times summed."""
    for group in more:
        for st in group:
            mine = next((s for s in stages if s.name == st.name), None)
            if mine is None:
                stages.append(Stage(st.name, st.success, st.seconds))
            else:
                mine.success, mine.seconds = mine.success and st.success, mine.seconds + st.seconds
