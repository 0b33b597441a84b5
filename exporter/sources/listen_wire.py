"""Decode the listeners' sock_diag dump (LISTEN sockets with INET_DIAG_SKMEMINFO) into a ListenTable.

Why a second, separate dump: the drop counter lives in an attribute, ``INET_DIAG_SKMEMINFO``, that the
kernel only adds when asked (``idiag_ext`` bit ``1 << (7 - 1)``); asking for it in the bulk dump would
add 44 bytes to each of 100k messages. Asked with ``idiag_states = 1 << 10`` (LISTEN only), it costs
one message per listener.

A LISTEN message with the attribute (Linux 6.18), after the 72-byte ``inet_diag_msg``::

    offset  bytes        field
    88      05 00 08 00  rtattr len 5, type 8 INET_DIAG_SHUTDOWN (+ 3 bytes of padding); others follow
    ...     2c 00 07 00  rtattr len 44, type 7 INET_DIAG_SKMEMINFO, then u32 x 9: rmem_alloc, rcvbuf,
                         wmem_alloc, sndbuf, fwd_alloc, wmem_queued, optmem, backlog, drops
                         (SK_MEMINFO_DROPS = 8, Linux >= 4.7; what ``ss -tmln`` shows as dN)

Columnar like the bulk decoder: a recv chunk of equal-length messages (the usual case: every listener
gets the same attributes) goes through :meth:`_Dump._strided` for the fixed fields, and the drops
column is one more strided slice once every message is checked to hold the SKMEMINFO header at the
same offset; anything else is walked message by message. A host can listen on thousands of ports.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable

from ..model.table import ListenTable, Table
from .inet_detail import DETAIL_AT, DETAIL_LEN, DETAIL_WORDS
from .netlink_wire import NLM_F_DUMP_INTR, SOCK_DIAG_BY_FAMILY, Chunk, NetlinkDumpError, _Dump

INET_DIAG_SKMEMINFO = 7  # include/uapi/linux/inet_diag.h
SK_MEMINFO_DROPS = 8  # include/uapi/linux/sock_diag.h
LISTEN_STATE = 10
_HEAD = struct.Struct("=IHH8xBB66xI")  # len, type, flags | family, state | inode (as netlink_wire._INET)
_RTA = struct.Struct("=HH")
_MIN = 16 + 72
_MEMINFO_MIN = _RTA.size + 4 * (SK_MEMINFO_DROPS + 1)
_COOKIE, _RQUEUE, _WQUEUE = 10, 13, 14  # words of the kept record (inet_detail.py)


class _ListenDump(_Dump):
    __slots__ = ("drops", "has_drops")

    def __init__(self, table: Table) -> None:
        super().__init__(table.name, table.family, True, (0, _COOKIE, _COOKIE + 1, _RQUEUE, _WQUEUE))
        self.drops = array("I")
        self.has_drops = True

    def run_listen(self, chunks: Iterable[Chunk]) -> None:
        for chunk in chunks:
            buf = memoryview(chunk).cast("B")
            n = len(buf)
            off = self._strided(buf, _MIN, 16, 17, 84)
            if off:
                self._strided_drops(buf, off)
            while off < n:
                off = self._message(buf, off) if n - off >= _MIN else self._control(buf, off, _MIN)
            if self.done:
                return
        raise NetlinkDumpError(f"{self.name}: listener dump ended without NLMSG_DONE")

    def _strided_drops(self, buf: memoryview, end: int) -> None:
        """Drops of the ``end // length`` equal-length messages ``_strided`` just took."""
        length: int = _HEAD.unpack_from(buf, 0)[0]
        chain: list[int] = []
        at = self._meminfo_at(buf, 0, length, chain)
        words, step, count = buf[:end].cast("I"), length // 4, end // length
        # Verified, not assumed: every message has the same rtattr headers (lengths, types) at the
        # same offsets, so its SKMEMINFO payload sits where the first message's does.
        if at is not None and all(h % 4 == 0 and words[h // 4 :: step].tobytes() == words[h // 4 : h // 4 + 1]
                                  .tobytes() * count for h in chain):
            self.drops.frombytes(words[at // 4 + 1 + SK_MEMINFO_DROPS :: step].tobytes())
            return
        for off in range(0, end, length):  # attributes differ between messages: one at a time
            self.drops.append(self._drops_of(buf, off, off + length))

    def _message(self, buf: memoryview, off: int) -> int:
        length: int
        length, mtype, flags, fam, state, inode = _HEAD.unpack_from(buf, off)
        if mtype != SOCK_DIAG_BY_FAMILY or flags & NLM_F_DUMP_INTR or length < _MIN or off + length > len(buf) \
                or fam != self.family:
            return self._control(buf, off, _MIN)
        self.states.append(state)
        self.inodes.append(inode)
        assert self.detail is not None
        self.detail += buf[off + DETAIL_AT : off + DETAIL_AT + DETAIL_LEN]
        self.drops.append(self._drops_of(buf, off, off + length))
        return off + ((length + 3) & ~3)

    def _meminfo_at(self, buf: memoryview, off: int, end: int, chain: list[int] | None = None) -> int | None:
        """Offset (from ``off``) of the SKMEMINFO rtattr of the message at ``off``, None when absent;
        ``chain`` gets the offsets of the rtattr headers walked to reach it."""
        at = off + _MIN
        while at + _RTA.size <= end:
            rta_len, rta_type = _RTA.unpack_from(buf, at)
            if rta_len < _RTA.size or at + rta_len > end:
                raise NetlinkDumpError(f"{self.name}: bad rtattr length {rta_len} in a listener message")
            if chain is not None:
                chain.append(at - off)
            if rta_type == INET_DIAG_SKMEMINFO and rta_len >= _MEMINFO_MIN:
                return at - off
            at += (rta_len + 3) & ~3
        return None

    def _drops_of(self, buf: memoryview, off: int, end: int) -> int:
        at = self._meminfo_at(buf, off, end)
        if at is None:
            self.has_drops = False  # kernel < 4.7: no drops field; the whole column becomes unknown
            return 0
        return int(struct.unpack_from("=I", buf, off + at + _RTA.size + 4 * SK_MEMINFO_DROPS)[0])

    def table(self, table: Table) -> ListenTable:
        if self.states.count(LISTEN_STATE) != len(self.states):
            bad = next(s for s in self.states if s != LISTEN_STATE)
            raise NetlinkDumpError(f"{self.name}: state {bad} in a LISTEN-only dump")
        assert self.detail is not None
        words = memoryview(self.detail).cast("I")
        ports = array("H", words[0::DETAIL_WORDS].tobytes())
        if sys.byteorder == "little":
            ports.byteswap()
        cookies = array("I", bytes(8 * len(self.states)))
        cookies[0::2] = array("I", words[_COOKIE::DETAIL_WORDS].tobytes())
        cookies[1::2] = array("I", words[_COOKIE + 1 :: DETAIL_WORDS].tobytes())
        return ListenTable(table, ports[0::2], array("I", words[_RQUEUE::DETAIL_WORDS].tobytes()),
                           array("I", words[_WQUEUE::DETAIL_WORDS].tobytes()),
                           self.drops if self.has_drops else None, array("Q", cookies.tobytes()))


def decode_listen_dump(chunks: Iterable[Chunk], table: Table) -> ListenTable:
    """Decode a LISTEN-only TCP dump asked with INET_DIAG_SKMEMINFO (module docstring)."""
    if not table.has_tcp_states:
        raise ValueError(f"decode_listen_dump: {table.name} has no listeners")
    dump = _ListenDump(table)
    dump.run_listen(chunks)
    return dump.table(table)
