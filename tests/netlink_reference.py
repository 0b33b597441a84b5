"""Test-only netlink plumbing: record a raw dump, and decode one with pyroute2 as the reference.

These lived in the product's netlink source; they are for fixtures and for holding the lean
``struct`` decoder (exporter/sources/netlink_wire.py) to an independent one, so they live here.
"""

from __future__ import annotations

import socket

from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY, MarshalDiag

from exporter.model import Table
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
