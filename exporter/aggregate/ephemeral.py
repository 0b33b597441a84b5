"""Ephemeral-port pressure: how many local ports of the range each (local, remote, remote port) uses.

Why per tuple: Linux picks a local port for ``connect()`` so that the 4-tuple is unique
(``__inet_hash_connect``), so one local port serves many destinations, and what runs out is the
range *per* (local address, remote address, remote port). TIME_WAIT holds its port too, and is
counted; sockets on a port that has a listener are not (accepted connections: their port was bound,
not picked by ``connect()``, even when the listener's port lies in the range). Worked example: range
32768-60999 with 100 ports reserved inside it gives a range size of 28132; 28000 sockets (any state
but LISTEN) from 10.0.0.1 to 10.0.0.2:5432 on local ports in that range give max in use 28000, which
is what the "ephemeral ports running out" alert compares.

The range and the reserved ports come from the sysctls (exporter/sources/sysctl.py reads them).

Columnar: a 64 KiB table says which local ports are in the usable range; sockets are selected with
``itertools.compress`` and counted with one ``Counter`` over address/port columns (no object per socket
beyond the counting key).
"""

from __future__ import annotations

import heapq
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress

from ..model.table import SocketTable, Table
from .ports import listening_ports

#: (table, local address, remote address, remote port) -> local ports in use
Tuple = tuple[Table, str, str, int]


@dataclass
class EphemeralUse:
    range_size: int
    max_in_use: int = 0
    top: list[tuple[Tuple, int]] = field(default_factory=list)


def ephemeral_use(tables: Sequence[SocketTable], low: int, high: int, reserved: set[int], top: int) -> EphemeralUse:
    """Count local ports in the usable range per (local address, remote address, remote port).

    >>> from array import array
    >>> from exporter.model.table import InetColumns
    >>> ports = array("H", [40000, 40001, 80])
    >>> i = InetColumns(ports, array("H", [5432, 5432, 0]), array("I", [0] * 3), array("I", [0] * 3),
    ...                 (array("I", [0x0100007F] * 3),), (array("I", [0x0100007F] * 3),))
    >>> u = ephemeral_use([SocketTable(Table.TCP4, 1, b"\\x06\\x01\\x0a", array("I", [0, 1, 2]), i)],
    ...                   32768, 60999, {40001}, 5)
    >>> u.range_size, u.max_in_use, u.top
    (28231, 1, [((<Table.TCP4: 'tcp'>, '127.0.0.1', '127.0.0.1', 5432), 1)])
    """
    usable = bytearray(65536)
    usable[low : high + 1] = b"\x01" * (high - low + 1)
    for port in reserved:
        if low <= port <= high:
            usable[port] = 0
    use = EphemeralUse(range_size=sum(usable))
    for port in listening_ports(tables):  # inbound: a listener's port was bound, not picked by connect()
        usable[port] = 0
    found: Counter[tuple[Table, tuple[int, ...]]] = Counter()
    for st in tables:
        inet = st.inet
        if inet is None or not st.table.has_tcp_states:
            continue
        keys = compress(zip(*inet.src, *inet.dst, inet.dports, strict=True), map(usable.__getitem__, inet.sports))
        for key, n in Counter(keys).items():
            if key[-1]:  # remote port 0: LISTEN or bound-only, not a connection
                found[(st.table, key)] = n
    if found:
        use.max_in_use = max(found.values())
    ranked = heapq.nsmallest(top, found.items(), key=lambda kv: (-kv[1], kv[0][0].value, kv[0][1]))
    use.top = [(_named(table, key), n) for (table, key), n in ranked]
    return use


def _named(table: Table, key: tuple[int, ...]) -> Tuple:
    width = (len(key) - 1) // 2
    return (table, _address(table, key[:width]), _address(table, key[width : 2 * width]), key[-1])


def _address(table: Table, words: Sequence[int]) -> str:
    raw = b"".join(w.to_bytes(4, sys.byteorder) for w in words)
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
