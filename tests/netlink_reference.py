"""Test-only netlink plumbing: record a raw dump, and decode one with pyroute2 as the reference.

These lived in the product's netlink source; they are for fixtures and for holding the lean
``struct`` decoder (exporter/sources/netlink_wire.py) to an independent one, so they live here.
"""

from __future__ import annotations

import socket

from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY, MarshalDiag

from exporter.model.table import Table
from exporter.sources import netlink


def record_dump(table: Table) -> bytes:
    """The raw messages of one successful dump of ``table``, concatenated: for test fixtures."""
    keep: list[bytes] = []
    netlink._dump_retrying(table, keep)
    return b"".join(keep)


def decode_with_pyroute2(data: bytes) -> list[tuple[int, int, int, int]]:
    """Reference decoding by pyroute2 (slow): (family, udiag_type or 0, state, inode) for each
    SOCK_DIAG_BY_FAMILY message in ``data``. Control messages and errors are skipped."""
    rows: list[tuple[int, int, int, int]] = []
    for msg in MarshalDiag().parse(data):
        if msg["header"]["type"] != SOCK_DIAG_BY_FAMILY:
            continue
        if msg.get("udiag_family") == socket.AF_UNIX:
            rows.append((int(socket.AF_UNIX), msg["udiag_type"], msg["udiag_state"], msg["udiag_ino"]))
        else:
            rows.append((msg["idiag_family"], 0, msg["idiag_state"], msg["idiag_inode"]))
    return rows


def record_listen_dump(table: Table) -> bytes:
    """The raw messages of one LISTEN-only dump with INET_DIAG_SKMEMINFO (the listeners view's request)."""
    from exporter.sources.listen_wire import decode_listen_dump

    keep: list[bytes] = []
    with netlink._open(table) as sock:
        decode_listen_dump(netlink._copying(netlink._chunks(sock, table, netlink.listen_request(table)), keep), table)
    return b"".join(keep)


#: One socket's detail as pyroute2 decodes it: (sport, dport, src, dst, rqueue, wqueue), addresses as text.
Detail = tuple[int, int, str, str, int, int]


def decode_detail_with_pyroute2(data: bytes) -> list[Detail]:
    """Reference decoding of ports, addresses and queues of every inet diag message in ``data``."""
    return [
        (msg["idiag_sport"], msg["idiag_dport"], msg["idiag_src"], msg["idiag_dst"], msg["idiag_rqueue"],
         msg["idiag_wqueue"])
        for msg in MarshalDiag().parse(data)
        if msg["header"]["type"] == SOCK_DIAG_BY_FAMILY
    ]


def decode_listeners_with_pyroute2(data: bytes) -> list[tuple[int, int, int, int, int | None]]:
    """(sport, cookie, rqueue, wqueue, SK_MEMINFO_DROPS or None) per message: pyroute2 prints
    INET_DIAG_SKMEMINFO as colon-separated hex bytes, read here as host-order u32s."""
    rows: list[tuple[int, int, int, int, int | None]] = []
    for msg in MarshalDiag().parse(data):
        if msg["header"]["type"] != SOCK_DIAG_BY_FAMILY:
            continue
        mem = msg.get_attr("INET_DIAG_SKMEMINFO")
        words = memoryview(bytes.fromhex(mem.replace(":", ""))).cast("I") if mem else None
        drops = words[8] if words is not None and len(words) > 8 else None
        rows.append((msg["idiag_sport"], msg["idiag_cookie"], msg["idiag_rqueue"], msg["idiag_wqueue"], drops))
    return rows
