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

from ..model.table import SocketTable, Table, status_name

INBOUND, OUTBOUND, OTHER = "inbound", "outbound", "other"
LISTEN = 10
_IS_LISTEN = bytes(int(i == LISTEN) for i in range(256))
_SHIFT = 1 << 16
_OTHER_OUT, _OTHER_IN = -1, -2  # folded keys: outside the port space

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
    >>> from exporter.model.table import InetColumns
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
    # Everything per socket stays in ints (an Enum in a dict key hashes in Python, slowly), and the
    # ports are folded before counting by state, so the per-(port, state) counts are few.
    size: Counter[int] = Counter()
    keyed: list[tuple[SocketTable, list[int]]] = []
    for st in tcp:
        assert st.inet is not None
        keys = list(map(max, map(inbound_key.__getitem__, st.inet.sports), st.inet.dports))
        size.update(keys)
        keyed.append((st, keys))
    label = _fold(size, set(always), max_ports)
    folded_key = list(range(2 * _SHIFT))  # key -> the key it is counted under: itself, or its "other"
    for key, (_direction, port_label) in label.items():
        if port_label == OTHER:
            folded_key[key] = _OTHER_IN if key >= _SHIFT else _OTHER_OUT
    names = {**label, _OTHER_IN: (INBOUND, OTHER), _OTHER_OUT: (OUTBOUND, OTHER)}
    counts = PortCounts(folded=sum(1 for v in label.values() if v[1] == OTHER))
    for st, keys in keyed:
        inet, table = st.inet, st.table
        assert inet is not None
        keys = list(map(folded_key.__getitem__, keys))
        raw = Counter(zip(keys, st.states, strict=True))
        rx = dict.fromkeys({key for key, state in raw if state != LISTEN}, 0)  # 0 when empty, not absent
        tx = dict(rx)
        busy = map(or_, inet.rqueue, inet.wqueue)
        for key, state, r, w in compress(zip(keys, st.states, inet.rqueue, inet.wqueue, strict=True), busy):
            if state != LISTEN:
                rx[key] += r
                tx[key] += w
        status = {state: status_name(table, state) for state in {state for _, state in raw}}
        for (key, state), n in raw.items():
            conn = (*names[key], table, status[state])
            counts.connections[conn] = counts.connections.get(conn, 0) + n
        for src, dst in ((rx, counts.receive_bytes), (tx, counts.send_bytes)):
            for key, n in src.items():
                dst[(*names[key], table)] = n
    return counts


def _fold(size: Counter[int], always: set[int], max_ports: int) -> dict[int, tuple[str, str]]:
    """Map each key to (direction, port label): kept ports by name, the rest to ``other``.

    Busiest first; ties go to inbound, then to the lower port, so the kept set is stable. Sorting by
    count is one C-level ``most_common``; only the keys tied at the cut are ordered in Python.
    """
    pinned = [key for key in size if key % _SHIFT in always]
    ranked = [(key, n) for key, n in size.most_common() if key % _SHIFT not in always]
    kept = set(pinned)
    if len(ranked) <= max_ports:
        kept.update(key for key, _ in ranked)
    elif max_ports:
        cut = ranked[max_ports - 1][1]
        kept.update(key for key, n in ranked if n > cut)
        tied = sorted((key for key, n in ranked if n == cut), key=lambda k: (-(k // _SHIFT), k % _SHIFT))
        kept.update(tied[: max_ports - (len(kept) - len(pinned))])
    return {key: (INBOUND if key >= _SHIFT else OUTBOUND, str(key % _SHIFT) if key in kept else OTHER)
            for key in size}
