"""Decode the listeners' sock_diag dump (LISTEN sockets with INET_DIAG_SKMEMINFO) into a ListenTable.

Why a second, separate dump: the drop counter lives in an attribute, ``INET_DIAG_SKMEMINFO``, that the
kernel only adds when asked (``idiag_ext`` bit ``1 << (7 - 1)``); asking for it in the bulk dump would
add 44 bytes to each of 100k messages. Asked with ``idiag_states = 1 << 10`` (LISTEN only), it costs
one small message per listener. Listeners are few, so each message is walked with ``struct``; the
result is still columns.

A LISTEN message with the attribute (Linux 6.18), after the 72-byte ``inet_diag_msg``::

    offset  bytes        field
    88      2c 00 07 00  rtattr len 44, type 7 INET_DIAG_SKMEMINFO
    92      u32 x 9      rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc, wmem_queued, optmem,
                         backlog, drops (SK_MEMINFO_DROPS = 8, Linux >= 4.7; what ``ss -tmln`` shows as dN)

Other attributes (INET_DIAG_SHUTDOWN, _SOCKOPT, ...) are skipped by their length.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections.abc import Iterable

from ..model import ListenTable, Table
from .netlink_wire import NLM_F_DUMP_INTR, SOCK_DIAG_BY_FAMILY, Chunk, NetlinkDumpError, _Dump

INET_DIAG_SKMEMINFO = 7  # include/uapi/linux/inet_diag.h
SK_MEMINFO_DROPS = 8  # include/uapi/linux/sock_diag.h
LISTEN_STATE = 10
_MSG = struct.Struct("=IHH8xBBxxHH36xQ4xII8x")  # len type flags | fam state | ports | cookie | rq wq
_RTA = struct.Struct("=HH")
_MIN = 16 + 72


class _ListenDump(_Dump):
    __slots__ = ("has_drops", "listen")

    def __init__(self, table: Table) -> None:
        super().__init__(table.name, table.family)
        self.listen = ListenTable(table, array("H"), array("I"), array("I"), array("I"), array("Q"))
        self.has_drops = True

    def run_listen(self, chunks: Iterable[Chunk]) -> ListenTable:
        for chunk in chunks:
            buf = memoryview(chunk).cast("B")
            off, n = 0, len(buf)
            while off < n:
                off = self._message(buf, off) if n - off >= _MIN else self._control(buf, off, _MIN)
            if self.done:
                if not self.has_drops:
                    self.listen.drops = None
                return self.listen
        raise NetlinkDumpError(f"{self.name}: listener dump ended without NLMSG_DONE")

    def _message(self, buf: memoryview, off: int) -> int:
        length: int
        length, mtype, flags, fam, state, sport, _dport, cookie, rq, wq = _MSG.unpack_from(buf, off)
        if mtype != SOCK_DIAG_BY_FAMILY or length < _MIN or off + length > len(buf) or fam != self.family:
            return self._control(buf, off, _MIN)
        if flags & NLM_F_DUMP_INTR:
            return self._control(buf, off, _MIN)  # raises NetlinkDumpInterrupted
        if state != LISTEN_STATE:
            raise NetlinkDumpError(f"{self.name}: state {state} in a LISTEN-only dump")
        rows = self.listen
        rows.sports.append(socket.ntohs(sport))
        rows.ids.append(cookie)
        rows.rqueue.append(rq)
        assert rows.limits is not None and rows.drops is not None
        rows.limits.append(wq)
        rows.drops.append(self._drops(buf, off + _MIN, off + length))
        return off + ((length + 3) & ~3)

    def _drops(self, buf: memoryview, at: int, end: int) -> int:
        while at + _RTA.size <= end:
            rta_len, rta_type = _RTA.unpack_from(buf, at)
            if rta_len < _RTA.size or at + rta_len > end:
                raise NetlinkDumpError(f"{self.name}: bad rtattr length {rta_len} in a listener message")
            if rta_type == INET_DIAG_SKMEMINFO and rta_len >= _RTA.size + 4 * (SK_MEMINFO_DROPS + 1):
                return int(struct.unpack_from("=I", buf, at + _RTA.size + 4 * SK_MEMINFO_DROPS)[0])
            at += (rta_len + 3) & ~3
        self.has_drops = False  # kernel < 4.7: no drops field; the whole column becomes unknown
        return 0


def decode_listen_dump(chunks: Iterable[Chunk], table: Table) -> ListenTable:
    """Decode a LISTEN-only TCP dump asked with INET_DIAG_SKMEMINFO (module docstring)."""
    if not table.has_tcp_states:
        raise ValueError(f"decode_listen_dump: {table.name} has no listeners")
    return _ListenDump(table).run_listen(chunks)
