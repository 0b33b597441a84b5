"""Accept queues and SYN drops per listening port: pure aggregation of ListenTables, and the drops counter.

* ``socket_listen_queue_length`` / ``_limit`` sum ``rqueue`` (the accept queue: connections the
  kernel completed and the application has not ``accept()``ed) and the backlog over the listeners of
  one (table, port): an SO_REUSEPORT group is one service. A full queue holds limit + 1 (the kernel
  tests ``sk_ack_backlog > sk_max_ack_backlog``), so "length >= limit" is saturation.
* ``socket_listen_drops_total`` must be a Prometheus counter that never decreases while the exporter
  runs, but the kernel's ``sk_drops`` lives and dies with each listening socket: a restarted service
  starts again at 0, and one member of a reuseport group closing takes its drops with it.
  :class:`DropsCounter` therefore follows each listener by its identity (socket cookie) and adds the
  increase of each one it saw before, and the whole count of each one it did not (a new listener's
  drops all happened since it was created). Worked example: port 80's listener A at 7 drops, then A
  at 9 (+2), then A gone and B at 1 (+1): the counter reads 7, 9, 10. Totals of a port with no
  listener are kept, so a listener coming back continues from its old value; at most one entry per
  (scope, table, port) exists, bounded by the port space. One counter serves the whole process
  (``exporter.pipeline.views.DROPS_COUNTER``), so a config reload does not start it over.
"""

from __future__ import annotations

import heapq
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat

from ..model.table import ListenTable, Table

#: table -> port -> value: ints inside (an Enum in every key would hash in Python, per listener).
PortValues = dict[Table, dict[int, int]]


@dataclass
class ListenQueues:
    length: PortValues = field(default_factory=dict)
    limit: PortValues = field(default_factory=dict)  # only tables whose source knows the backlog
    folded: int = 0  # listening (table, port) pairs beyond the cap, not exported


def _sum_by_port(ports: array[int], values: array[int], into: dict[int, int]) -> None:
    if not into and len(set(ports)) == len(ports):  # no SO_REUSEPORT group: one C-level pass
        into.update(zip(ports, values, strict=True))
        return
    get = into.get
    for port, n in zip(ports, values, strict=True):
        into[port] = get(port, 0) + n


def listen_queues(tables: Iterable[ListenTable]) -> ListenQueues:
    """Sum accept queue lengths and limits per (table, port)."""
    out = ListenQueues()
    for lt in tables:
        _sum_by_port(lt.sports, lt.rqueue, out.length.setdefault(lt.table, {}))
        if lt.limits is not None:
            _sum_by_port(lt.sports, lt.limits, out.limit.setdefault(lt.table, {}))
    return out


def cap_listeners(queues: ListenQueues, drops: PortValues, max_ports: int) -> PortValues:
    """Keep the ``max_ports`` listening ports most at risk; drop the rest from ``queues``; return the kept drops.

    Why a cap: series grow with listening ports, and a host can listen on thousands (a proxy per
    tenant, a test rig). Why this order: the alert must see every saturated or dropping listener,
    so full queues come first, then ports that ever dropped (their total only grows, so they stay),
    then the longest queues, then the lowest port numbers: on a quiet host the kept set is stable
    and holds the well-known services. Folded ports are counted, not summed into an ``other``
    series: a drops counter over a changing set of ports could decrease.

    >>> t = Table.TCP4
    >>> q = ListenQueues({t: {80: 0, 8080: 9, 22: 0}}, {t: {80: 128, 8080: 8, 22: 128}})
    >>> cap_listeners(q, {t: {80: 0, 8080: 4, 22: 0}}, 2)  # 8080 is full and dropping; then port 22
    {<Table.TCP4: 'tcp'>: {8080: 4, 22: 0}}
    >>> sorted(q.length[t]), q.folded
    ([22, 8080], 1)
    """
    total = sum(map(len, queues.length.values()))
    if total <= max_ports:
        return drops
    risky: list[tuple[bool, int, int, int, str]] = []  # full or dropping: few, ranked in Python
    calm: list[tuple[int, str]] = []  # the rest: by port, compared in C
    for table, lengths in queues.length.items():
        limits, dropped = queues.limit.get(table, {}), drops.get(table, {})
        full = {p for p, n in lengths.items() if n and n >= limits.get(p, n + 1)}
        hot = full | {p for p, d in dropped.items() if d and p in lengths}
        risky += [(p not in full, -dropped.get(p, 0), -lengths[p], p, table.value) for p in hot]
        calm += zip([p for p in lengths if p not in hot], repeat(table.value))
    chosen = [(port, name) for *_, port, name in sorted(risky)[:max_ports]]
    chosen += heapq.nsmallest(max_ports - len(chosen), calm)
    kept: dict[str, set[int]] = {}
    for port, table_name in chosen:
        kept.setdefault(table_name, set()).add(port)
    queues.folded = total - len(chosen)

    def keep(values: PortValues) -> PortValues:
        out: PortValues = {}
        for table, by_port in values.items():
            mine = kept.get(table.value, set())
            out[table] = {p: n for p, n in by_port.items() if p in mine}
        return out

    queues.length, queues.limit = keep(queues.length), keep(queues.limit)
    return keep(drops)


class DropsCounter:
    """Monotonic SYN-drop totals per (scope, table, port) over listeners that come and go (module docstring).

    ``scope`` names the network namespace (empty for the exporter's own), so two namespaces' listeners
    on the same port never mix.

    >>> from array import array
    >>> def lt(ident, drops): return ListenTable(Table.TCP4, array("H", [80]), array("I", [0]),
    ...                                          array("I", [3]), array("I", [drops]), array("Q", [ident]))
    >>> c = DropsCounter()
    >>> [c.update("", [lt(1, 7)]), c.update("", [lt(1, 9)]), c.update("", [lt(2, 1)])]
    [{<Table.TCP4: 'tcp'>: {80: 7}}, {<Table.TCP4: 'tcp'>: {80: 9}}, {<Table.TCP4: 'tcp'>: {80: 10}}]
    >>> c.update("4026532", [lt(3, 5)]); c.retain(set()); c.update("4026532", [lt(3, 5)])  # namespace gone
    {<Table.TCP4: 'tcp'>: {80: 5}}
    {<Table.TCP4: 'tcp'>: {80: 5}}
    >>> c.update("", [lt(2, 1)])  # the own scope is never forgotten
    {<Table.TCP4: 'tcp'>: {80: 10}}
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, Table], dict[int, int]] = {}  # listener id -> drops last seen
        self._total: dict[tuple[str, Table], dict[int, int]] = {}  # port -> total
        self._lock = threading.Lock()  # two pipelines can collect at once while a reload swaps them

    def update(self, scope: str, tables: Iterable[ListenTable]) -> PortValues:
        """Account this scrape's listeners of ``scope``; return the totals of the ports listening now.

        Tables whose drops are unknown (None) are skipped and keep their state.
        """
        with self._lock:
            return self._update(scope, tables)

    def retain(self, scopes: set[str]) -> None:
        """Forget every scope but the own one ("") and ``scopes``: their namespaces are gone."""
        with self._lock:
            for key in [k for k in self._total if k[0] and k[0] not in scopes]:
                self._total.pop(key, None)
                self._last.pop(key, None)

    def _update(self, scope: str, tables: Iterable[ListenTable]) -> PortValues:
        out: PortValues = {}
        for lt in tables:
            if lt.drops is None:
                continue
            last = self._last.get((scope, lt.table), {})
            total = self._total.setdefault((scope, lt.table), {})
            seen = dict(zip(lt.ids, lt.drops, strict=True))
            port_of = dict(zip(lt.ids, lt.sports, strict=True))
            # Only listeners that are new or dropped more since last time (a set difference in C).
            for ident, drops in seen.items() - last.items():
                before = last.get(ident)
                added = drops - before if before is not None and drops >= before else drops
                total[port_of[ident]] = total.get(port_of[ident], 0) + added
            out[lt.table] = {port: total.get(port, 0) for port in port_of.values()}
            self._last[(scope, lt.table)] = seen
        return out
