"""The one record type that flows from the sources (netlink, procfs) to the aggregator.

Why columns and not one object per socket: a busy host holds 100k sockets, and building a Python
object per socket costs more than the kernel takes to dump them. A source therefore hands over one
``SocketTable`` per kernel table and socket type, holding two parallel columns:

* ``states``: one byte per socket, the kernel's state number from ``include/net/tcp_states.h``
  (1 ESTABLISHED ... 11 CLOSING, 12 NEW_SYN_RECV, 13 BOUND_INACTIVE). Sources store what the kernel
  said; turning it into psutil's status string happens once, in :func:`status_name`.
* ``inodes``: the socket's inode number (0 when the kernel has no ``struct socket`` for it, as for
  TIME_WAIT, SYN_RECV request sockets and orphaned sockets). The owner lookup maps inode -> pid.

Worked example: two IPv4 TCP sockets, one LISTEN (inode 1234) and one TIME_WAIT, arrive as
``SocketTable(Table.TCP4, SOCK_STREAM, states=b"\\x0a\\x06", inodes=array("I", [1234, 0]))``.
"""

from __future__ import annotations

import enum
import socket
from array import array
from dataclasses import dataclass, field

# Kernel TCP states (include/net/tcp_states.h) -> psutil's CONN_* strings.
# NEW_SYN_RECV (12) is how the kernel stores request sockets: psutil and ss call them SYN_RECV.
# BOUND_INACTIVE (13) is a bound, never-listened socket: netlink shows it, /proc/net/tcp does not.
TCP_STATUS: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN_RECV",
    13: "CLOSE",
}
#: The kernel state numbers :data:`TCP_STATUS` knows, as bytes (for ``bytes.translate``).
KNOWN_TCP_STATES = bytes(sorted(TCP_STATUS))
#: psutil's status strings for TCP, in psutil's order, without duplicates.
TCP_STATUSES: tuple[str, ...] = tuple(dict.fromkeys(TCP_STATUS.values()))
#: psutil's CONN_NONE: the status of every UDP and UNIX socket.
STATUS_NONE = "NONE"


class Table(enum.Enum):
    """A kernel socket table, as psutil's kinds name them (``/proc/net/<name>``)."""

    TCP4 = "tcp"
    TCP6 = "tcp6"
    UDP4 = "udp"
    UDP6 = "udp6"
    UNIX = "unix"

    @property
    def family(self) -> int:
        return _TABLE_FAMILY[self]

    @property
    def sock_types(self) -> tuple[int, ...]:
        """Socket types this table can hold (UNIX holds three)."""
        return _TABLE_TYPES[self]

    @property
    def has_tcp_states(self) -> bool:
        """True when the kernel state is meaningful to psutil (inet stream sockets)."""
        return self in (Table.TCP4, Table.TCP6)


_TABLE_FAMILY = {
    Table.TCP4: socket.AF_INET,
    Table.TCP6: socket.AF_INET6,
    Table.UDP4: socket.AF_INET,
    Table.UDP6: socket.AF_INET6,
    Table.UNIX: socket.AF_UNIX,
}
_TABLE_TYPES = {
    Table.TCP4: (socket.SOCK_STREAM,),
    Table.TCP6: (socket.SOCK_STREAM,),
    Table.UDP4: (socket.SOCK_DGRAM,),
    Table.UDP6: (socket.SOCK_DGRAM,),
    Table.UNIX: (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET),
}


def _empty_inodes() -> array[int]:
    return array("I")


@dataclass(slots=True)
class InetColumns:
    """Per-socket detail of an inet table, parallel to its ``states``: still columns, no object per socket.

    ``sports``/``dports`` are host-order port numbers; ``rqueue``/``wqueue`` are ``idiag_rqueue`` /
    ``idiag_wqueue`` (for LISTEN: accept queue length and backlog; otherwise bytes not yet read by the
    application / not yet acknowledged by the peer). ``src``/``dst`` are the addresses as columns of
    32-bit words in network byte order, one column for IPv4 and four for IPv6: socket ``i`` of a TCP6
    table has local address ``b"".join(w[i].to_bytes(4, sys.byteorder) for w in src)``. Worked example,
    one IPv4 socket 127.0.0.1:40000 -> 127.0.0.1:80: sports [40000], dports [80],
    src (array("I", [0x0100007F]),) on a little-endian host.
    """

    sports: array[int]
    dports: array[int]
    rqueue: array[int]
    wqueue: array[int]
    src: tuple[array[int], ...]
    dst: tuple[array[int], ...]

    def __len__(self) -> int:
        return len(self.sports)


@dataclass(slots=True)
class SocketTable:
    """All sockets of one table and one socket type, as parallel columns (see module docstring).

    ``inet`` holds the optional per-socket ports, queues and addresses (:class:`InetColumns`), decoded
    only when a view that needs them (listeners, ports, ephemeral) is enabled; None otherwise.
    """

    table: Table
    sock_type: int
    states: bytes = b""
    inodes: array[int] = field(default_factory=_empty_inodes)
    inet: InetColumns | None = None

    def __post_init__(self) -> None:
        if len(self.states) != len(self.inodes):
            raise ValueError(f"{self.table.name}: {len(self.states)} states but {len(self.inodes)} inodes")
        if self.inet is not None and len(self.inet) != len(self.states):
            raise ValueError(f"{self.table.name}: {len(self.states)} states but {len(self.inet)} inet rows")

    def __len__(self) -> int:
        return len(self.states)

    @property
    def family(self) -> int:
        return self.table.family


@dataclass(slots=True)
class ListenTable:
    """The LISTEN sockets of one TCP table, as columns: what the listeners view needs and no more.

    ``rqueue`` is the accept queue length, ``limits`` the backlog (None when the source cannot tell:
    /proc/net/tcp prints no backlog), ``drops`` SK_MEMINFO_DROPS per listener (None when unknown:
    /proc, or a kernel older than 4.7), ``ids`` a per-listener identity (the socket cookie over
    netlink) that lets the drops counter tell a restarted listener from the same one.
    """

    table: Table
    sports: array[int]
    rqueue: array[int]
    limits: array[int] | None
    drops: array[int] | None
    ids: array[int]


def status_name(table: Table, state: int) -> str:
    """psutil's status for a kernel state: TCP names for inet stream sockets, NONE for everything else.

    >>> status_name(Table.TCP4, 10), status_name(Table.UDP4, 7), status_name(Table.UNIX, 10)
    ('LISTEN', 'NONE', 'NONE')
    """
    if not table.has_tcp_states:
        return STATUS_NONE
    try:
        return TCP_STATUS[state]
    except KeyError:
        raise ValueError(f"{table.name}: unknown TCP state {state}") from None


def unknown_tcp_state(st: SocketTable) -> int | None:
    """The first TCP state in ``st`` that :data:`TCP_STATUS` does not know, or None (always for non-TCP).

    Why the sources check this, not the aggregator: a newer kernel may add a state (13 BOUND_INACTIVE
    came with 6.10), and a number we cannot name must fail the one table that holds it, visibly, not
    the whole scrape (:func:`status_name` raises) nor be counted under a guessed status. The check
    runs in C (``bytes.translate`` deletes the known states; anything left is unknown).

    >>> from array import array
    >>> unknown_tcp_state(SocketTable(Table.TCP4, socket.SOCK_STREAM, b"\\x0a\\x0e", array("I", [1, 2])))
    14
    >>> unknown_tcp_state(SocketTable(Table.UDP4, socket.SOCK_DGRAM, b"\\x0e", array("I", [1]))) is None
    True
    """
    if not st.table.has_tcp_states:
        return None
    unknown = st.states.translate(None, KNOWN_TCP_STATES)
    return unknown[0] if unknown else None


FAMILY_LABEL: dict[int, str] = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6", socket.AF_UNIX: "AF_UNIX"}
TYPE_LABEL: dict[int, str] = {
    socket.SOCK_STREAM: "SOCK_STREAM",
    socket.SOCK_DGRAM: "SOCK_DGRAM",
    socket.SOCK_SEQPACKET: "SOCK_SEQPACKET",
}


class SourceError(Exception):
    """A source could not read a table. Never turned into "0 sockets": the stage fails visibly."""


class SourceUnavailable(SourceError):
    """The source does not work here at all (netlink refused, module missing): ``auto`` falls back."""
