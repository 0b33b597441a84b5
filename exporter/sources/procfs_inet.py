"""The /proc fallback's detail columns: ports, queues and addresses of ``/proc/net/{tcp,tcp6,...}``.

Parsed only when a view that needs them is on (the plain parser in :mod:`.procfs` takes two fields a
line). What /proc gives and what it does not (``net/ipv4/tcp_ipv4.c`` get_tcp4_sock)::

      sl  local_address rem_address   st tx_queue rx_queue ...
       0: 0100007F:1F90 00000000:0000 0A 00000000:00000004 ...

* addresses: each 32-bit word printed as ``%08X`` of its in-memory value (``0100007F`` is 127.0.0.1
  on a little-endian host), so ``int(word, 16)`` is the same number the netlink columns hold;
* ports: ``%04X`` in host order (``1F90`` = 8080);
* ``tx_queue:rx_queue``: for a connected socket the bytes not acknowledged / not read, as
  ``idiag_wqueue``/``idiag_rqueue``; for LISTEN, rx_queue is the accept queue length and tx_queue 0.
  The backlog (the accept queue's limit) and the drop counter are not printed anywhere in /proc/net:
  the listeners view reports them as unavailable over this source.
"""

from __future__ import annotations

import socket
from array import array
from collections.abc import Iterable
from itertools import compress

from ..model.table import InetColumns, ListenTable, SocketTable, Table
from .procfs_lines import ProcParseError, parse_inet_lines, skip_header

LISTEN = 10


def parse_inet_detail_lines(lines: Iterable[bytes], table: Table, *, path: str | None = None) -> SocketTable:
    """Like :func:`~.procfs_lines.parse_inet_lines`, with :class:`~exporter.model.table.InetColumns` filled.

    >>> h = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt  uid  timeout inode"
    >>> row = b"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000004 00:00000000 00000000  0  0 42986 1"
    >>> t = parse_inet_detail_lines([h, row], Table.TCP4)
    >>> t.inet is not None and (t.inet.sports.tolist(), t.inet.rqueue.tolist(), hex(t.inet.src[0][0]))
    ([8080], [4], '0x100007f')
    """
    src = path or f"/proc/net/{table.value}"
    lines = list(lines)
    plain = parse_inet_lines(lines, table, path=src)  # states and inodes exactly as without detail
    width = 1 if table.family == socket.AF_INET else 4
    sports, dports, rq, wq = array("H"), array("H"), array("I"), array("I")
    srcw: list[array[int]] = [array("I") for _ in range(width)]
    dstw: list[array[int]] = [array("I") for _ in range(width)]
    lineno = 1
    for line in skip_header(lines, b"sl", src):
        lineno += 1
        try:
            local, remote, _st, queues = line.split(None, 5)[1:5]
            laddr, lport = local.split(b":")
            raddr, rport = remote.split(b":")
            tx, rx = queues.split(b":")
            if len(laddr) != 8 * width or len(raddr) != 8 * width:
                raise ValueError("address width")
            sports.append(int(lport, 16))
            dports.append(int(rport, 16))
            wq.append(int(tx, 16))
            rq.append(int(rx, 16))
            for k in range(width):
                srcw[k].append(int(laddr[8 * k : 8 * k + 8], 16))
                dstw[k].append(int(raddr[8 * k : 8 * k + 8], 16))
        except (ValueError, OverflowError) as exc:
            raise ProcParseError(src, lineno, line, f"bad address, port or queue ({exc})") from None
    plain.inet = InetColumns(sports, dports, rq, wq, tuple(srcw), tuple(dstw))
    return plain


def listeners_of(st: SocketTable) -> ListenTable:
    """The LISTEN rows of a detailed /proc table: accept queue length only (module docstring)."""
    if st.inet is None:
        raise ValueError(f"{st.table.name}: listeners_of needs the detail columns")
    pick = st.states.translate(_IS_LISTEN)
    return ListenTable(st.table, array("H", compress(st.inet.sports, pick)),
                       array("I", compress(st.inet.rqueue, pick)), None, None,
                       array("Q", compress(st.inodes, pick)))


_IS_LISTEN = bytes(int(i == LISTEN) for i in range(256))
