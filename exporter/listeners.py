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
  (scope, table, port) exists, bounded by the port space.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .model import ListenTable, Table

PortKey = tuple[Table, int]


@dataclass
class ListenQueues:
    length: dict[PortKey, int] = field(default_factory=dict)
    limit: dict[PortKey, int] = field(default_factory=dict)  # only tables whose source knows the backlog


def listen_queues(tables: Iterable[ListenTable]) -> ListenQueues:
    """Sum accept queue lengths and limits per (table, port)."""
    out = ListenQueues()
    for lt in tables:
        for port, n in zip(lt.sports, lt.rqueue, strict=True):
            out.length[(lt.table, port)] = out.length.get((lt.table, port), 0) + n
        if lt.limits is not None:
            for port, n in zip(lt.sports, lt.limits, strict=True):
                out.limit[(lt.table, port)] = out.limit.get((lt.table, port), 0) + n
    return out


class DropsCounter:
    """Monotonic SYN-drop totals per (scope, table, port) over listeners that come and go (module docstring).

    ``scope`` names the network namespace (empty for the exporter's own), so two namespaces' listeners
    on the same port never mix.

    >>> from array import array
    >>> def lt(ident, drops): return ListenTable(Table.TCP4, array("H", [80]), array("I", [0]),
    ...                                          array("I", [3]), array("I", [drops]), array("Q", [ident]))
    >>> c = DropsCounter()
    >>> [c.update("", [lt(1, 7)]), c.update("", [lt(1, 9)]), c.update("", [lt(2, 1)])]
    [{(<Table.TCP4: 'tcp'>, 80): 7}, {(<Table.TCP4: 'tcp'>, 80): 9}, {(<Table.TCP4: 'tcp'>, 80): 10}]
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, Table], dict[int, int]] = {}  # listener id -> drops last seen
        self._total: dict[tuple[str, Table, int], int] = {}

    def update(self, scope: str, tables: Iterable[ListenTable]) -> dict[PortKey, int]:
        """Account this scrape's listeners of ``scope``; return the totals of the ports listening now.

        Tables whose drops are unknown (None) are skipped and keep their state.
        """
        out: dict[PortKey, int] = {}
        for lt in tables:
            if lt.drops is None:
                continue
            last = self._last.get((scope, lt.table), {})
            seen: dict[int, int] = {}
            for port, ident, drops in zip(lt.sports, lt.ids, lt.drops, strict=True):
                before = last.get(ident)
                added = drops - before if before is not None and drops >= before else drops
                key = (scope, lt.table, port)
                self._total[key] = self._total.get(key, 0) + added
                seen[ident] = drops
                out[(lt.table, port)] = self._total[key]
            self._last[(scope, lt.table)] = seen
        return out
