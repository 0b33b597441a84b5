"""psutil's connection kinds and which kernel tables each one reads.

The meanings are psutil's ``_common.conn_tmap``/``_pslinux.Connections.tmap`` exactly: a kind is a set
of tables, and the config's ``kinds:`` list selects the union. ``all`` is tcp4+tcp6+udp4+udp6+unix, so
it is not the same as ``inet`` plus raw or other protocols: psutil knows none.

>>> sorted(t.name for t in tables_for(["inet4", "unix"]))
['TCP4', 'UDP4', 'UNIX']
"""

from __future__ import annotations

from collections.abc import Iterable

from .table import STATUS_NONE, TCP_STATUSES, Table

KINDS: dict[str, frozenset[Table]] = {
    "all": frozenset(Table),
    "tcp": frozenset({Table.TCP4, Table.TCP6}),
    "tcp4": frozenset({Table.TCP4}),
    "tcp6": frozenset({Table.TCP6}),
    "udp": frozenset({Table.UDP4, Table.UDP6}),
    "udp4": frozenset({Table.UDP4}),
    "udp6": frozenset({Table.UDP6}),
    "inet": frozenset({Table.TCP4, Table.TCP6, Table.UDP4, Table.UDP6}),
    "inet4": frozenset({Table.TCP4, Table.UDP4}),
    "inet6": frozenset({Table.TCP6, Table.UDP6}),
    "unix": frozenset({Table.UNIX}),
}

#: Tables in a fixed order, so output and dumps are deterministic.
TABLE_ORDER: tuple[Table, ...] = (Table.TCP4, Table.TCP6, Table.UDP4, Table.UDP6, Table.UNIX)


def tables_for(kinds: Iterable[str]) -> tuple[Table, ...]:
    """The tables a list of kinds reads, in TABLE_ORDER. Unknown kinds raise KeyError."""
    wanted: set[Table] = set()
    for kind in kinds:
        wanted |= KINDS[kind]
    return tuple(t for t in TABLE_ORDER if t in wanted)


def possible_series(tables: Iterable[Table]) -> list[tuple[Table, int, str]]:
    """Every (table, socket type, status) the tables can produce: exported even when zero."""
    series: list[tuple[Table, int, str]] = []
    for table in tables:
        statuses = TCP_STATUSES if table.has_tcp_states else (STATUS_NONE,)
        series.extend((table, sock_type, status) for sock_type in table.sock_types for status in statuses)
    return series
