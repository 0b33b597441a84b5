"""Count TCP sockets per service port and direction, with a bounded number of ports. Pure, columnar.

The rule (a socket is one of the two ends of a connection, and its service is the port that was
listened on):

* ``inbound``, keyed by the socket's **local** port, when some TCP socket in the same tables listens
  on that port (LISTEN sockets themselves, their SYN_RECV requests and accepted connections);
* ``outbound``, keyed by the **remote** port, otherwise (this host's clients of that service).

Worked example: a listener on :80 and one client on this host connected to it from :40000 give
inbound/80 {LISTEN 1, ESTABLISHED 1} and outbound/80 {ESTABLISHED 1}: the two ends of one connection.
A socket bound but never connected (remote port 0) is outbound/0.

Bounded: every port in ``always`` is kept, then the busiest (direction, port) pairs up to
``max_ports``; the rest are summed into port ``other`` of their direction, so per (table, status)
the ports always sum exactly to the table's count. Queue bytes (``idiag_rqueue``/``wqueue`` of
non-LISTEN sockets: for LISTEN they are the accept queue, which the listeners view reports) follow
the same fold.

How it stays columnar: ``key = max(inbound_key[sport], dport)`` where ``inbound_key[p]`` is
``p + 65536`` for a listened port and 0 otherwise, computed with ``map`` over the port columns (C
loops), then one ``Counter`` over (state, key) pairs, whose distinct values are few.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import or_

from .model import SocketTable, Table, status_name

INBOUND, OUTBOUND, OTHER = "inbound", "outbound", "other"
LISTEN = 10
_IS_LISTEN = bytes(int(i == LISTEN) for i in range(256))
_SHIFT = 1 << 16

#: (direction, port label, table, psutil status) -> sockets
ConnKey = tuple[str, str, Table, str]
#: (direction, port label, table) -> bytes
QueueKey = tuple[str, str, Table]


@dataclass
class PortCounts:
    connections: dict[ConnKey, int] = field(default_factory=dict)
    receive_bytes: dict[QueueKey, int] = field(default_factory=dict)
    send_bytes: dict[QueueKey, int] = field(default_factory=dict)
    folded: int = 0  # (direction, port) pairs summed into "other"


def listening_ports(tables: Iterable[SocketTable]) -> set[int]:
    """Local ports of the LISTEN sockets in ``tables`` (which must carry inet columns)."""
    ports: set[int] = set()
    for st in tables:
        if st.inet is not None and st.table.has_tcp_states:
            ports.update(compress(st.inet.sports, st.states.translate(_IS_LISTEN)))
    return ports


def count_ports(tables: Sequence[SocketTable], always: Iterable[int] = (), max_ports: int = 20) -> PortCounts:
    """Count the TCP tables among ``tables`` by (direction, port, status); see the module docstring.

    >>> from array import array
    >>> from exporter.model import InetColumns
    >>> i = InetColumns(array("H", [80, 80, 40000]), array("H", [0, 40000, 80]), array("I", [0, 5, 0]),
    ...                 array("I", [0, 0, 0]), (array("I", [1, 1, 1]),), (array("I", [0, 1, 1]),))
    >>> t = SocketTable(Table.TCP4, 1, b"\\x0a\\x01\\x01", array("I", [1, 2, 3]), i)
    >>> c = count_ports([t])
    >>> sorted((d, p, s, n) for (d, p, _, s), n in c.connections.items())
    [('inbound', '80', 'ESTABLISHED', 1), ('inbound', '80', 'LISTEN', 1), ('outbound', '80', 'ESTABLISHED', 1)]
    >>> c.receive_bytes
    {('inbound', '80', <Table.TCP4: 'tcp'>): 5, ('outbound', '80', <Table.TCP4: 'tcp'>): 0}
    """
    tcp = [st for st in tables if st.table.has_tcp_states and st.inet is not None]
    listened = listening_ports(tcp)
    inbound_key = [0] * _SHIFT
    for port in listened:
        inbound_key[port] = port + _SHIFT
    raw: Counter[tuple[int, Table, int]] = Counter()  # (key, table, state)
    rx: Counter[tuple[int, Table]] = Counter()
    tx: Counter[tuple[int, Table]] = Counter()
    for st in tcp:
        inet = st.inet
        assert inet is not None
        keys = list(map(max, map(inbound_key.__getitem__, inet.sports), inet.dports))
        for (state, key), n in Counter(zip(st.states, keys, strict=True)).items():
            raw[(key, st.table, state)] += n
        busy = map(or_, inet.rqueue, inet.wqueue)
        for state, key, r, w in compress(zip(st.states, keys, inet.rqueue, inet.wqueue, strict=True), busy):
            if state != LISTEN:
                rx[(key, st.table)] += r
                tx[(key, st.table)] += w
    for key, table, state in raw:  # a port with connections has queue series, 0 when empty
        if state != LISTEN:
            rx[(key, table)] += 0
            tx[(key, table)] += 0
    label = _fold(raw, set(always), max_ports)
    counts = PortCounts(folded=sum(1 for v in label.values() if v[1] == OTHER))
    for (key, table, state), n in raw.items():
        conn = (*label[key], table, status_name(table, state))
        counts.connections[conn] = counts.connections.get(conn, 0) + n
    for src, dst in ((rx, counts.receive_bytes), (tx, counts.send_bytes)):
        for (key, table), n in src.items():
            qkey = (*label[key], table)
            dst[qkey] = dst.get(qkey, 0) + n
    return counts


def _fold(raw: Counter[tuple[int, Table, int]], always: set[int], max_ports: int) -> dict[int, tuple[str, str]]:
    """Map each key to (direction, port label): kept ports by name, the rest to ``other``."""
    size: Counter[int] = Counter()
    for (key, _table, _state), n in raw.items():
        size[key] += n
    named = {key: (INBOUND, str(key - _SHIFT)) if key >= _SHIFT else (OUTBOUND, str(key)) for key in size}
    pinned = {key for key in size if key % _SHIFT in always}
    rest = sorted((k for k in size if k not in pinned), key=lambda k: (-size[k], -k // _SHIFT, k % _SHIFT))
    kept = pinned | set(rest[:max_ports])
    return {key: name if key in kept else (name[0], OTHER) for key, name in named.items()}
