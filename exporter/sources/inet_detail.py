"""Turn the kept bytes of inet_diag messages into :class:`~exporter.model.table.InetColumns`, by strided slicing.

Why a fixed-width record first: the decoder (:mod:`.netlink_wire`) copies bytes 20..80 of every
message it keeps (``struct inet_diag_sockid`` plus ``idiag_expires``, ``idiag_rqueue``,
``idiag_wqueue``), in one strided copy per word for a uniform recv chunk or one slice per message
otherwise. Every column is then one strided slice of that buffer, whatever path produced it::

    record word  bytes    field (include/uapi/linux/inet_diag.h)   worked example, 127.0.0.1:40000 -> :80
     0           0..4     idiag_sport, idiag_dport (big endian)    9c 40 00 50
     1..4        4..20    idiag_src[4] (IPv4 uses word 1)          7f 00 00 01 ...
     5..8        20..36   idiag_dst[4]                             7f 00 00 01 ...
     9..11       36..48   idiag_if, idiag_cookie[2]
     12..14      48..60   idiag_expires, idiag_rqueue, idiag_wqueue
"""

from __future__ import annotations

import socket
import sys
from array import array

from ..model.table import InetColumns

DETAIL_AT, DETAIL_LEN = 20, 60  # message offset and length of the kept bytes
DETAIL_WORDS = DETAIL_LEN // 4
_RQUEUE, _WQUEUE = 13, 14
#: The record words :func:`inet_columns` reads, per family: a strided chunk copies only these.
COLUMN_WORDS: dict[int, tuple[int, ...]] = {
    socket.AF_INET: (0, 1, 5, _RQUEUE, _WQUEUE),
    socket.AF_INET6: (0, 1, 2, 3, 4, 5, 6, 7, 8, _RQUEUE, _WQUEUE),
}


def inet_columns(records: bytes | bytearray, family: int) -> InetColumns:
    """Columns from ``DETAIL_LEN``-byte records (module docstring).

    >>> rec = bytes.fromhex("9c400050" "7f000001" + "00" * 12 + "7f000001" + "00" * 24)
    >>> rec += bytes.fromhex("00000000" "05000000" "07000000")  # expires, rqueue 5, wqueue 7 (little endian)
    >>> c = inet_columns(rec, socket.AF_INET)
    >>> c.sports.tolist(), c.dports.tolist(), c.rqueue.tolist(), c.wqueue.tolist()
    ([40000], [80], [5], [7])
    >>> socket.inet_ntop(socket.AF_INET, c.src[0].tobytes())
    '127.0.0.1'
    """
    if len(records) % DETAIL_LEN:
        raise ValueError(f"inet detail of {len(records)} bytes is not a multiple of {DETAIL_LEN}")
    words = memoryview(records).cast("I")
    ports = array("H", words[0::DETAIL_WORDS].tobytes())  # sport, dport, sport, ... big endian
    if sys.byteorder == "little":
        ports.byteswap()
    width = 1 if family == socket.AF_INET else 4
    return InetColumns(
        sports=ports[0::2],
        dports=ports[1::2],
        rqueue=array("I", words[_RQUEUE::DETAIL_WORDS].tobytes()),
        wqueue=array("I", words[_WQUEUE::DETAIL_WORDS].tobytes()),
        src=tuple(array("I", words[1 + k :: DETAIL_WORDS].tobytes()) for k in range(width)),
        dst=tuple(array("I", words[5 + k :: DETAIL_WORDS].tobytes()) for k in range(width)),
    )


def empty_columns(family: int) -> InetColumns:
    """Columns of an empty table."""
    return inet_columns(b"", family)
