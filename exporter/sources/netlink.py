"""The sock_diag netlink source: dump each kernel socket table and decode it into columns.

The only module that imports pyroute2. The work is split on purpose:

* pyroute2 supplies what is easy to get wrong and never hot: the constants (NETLINK_SOCK_DIAG,
  SOCK_DIAG_BY_FAMILY, NLM_F_*), the request layout (its ``inet_diag_req`` / ``unix_diag_req``
  classes, encoded once per table and cached); off the hot path, its message classes are the
  reference decoder the tests hold the lean one to on recorded dumps (tests/netlink_reference.py).
* the bulk dump goes over a stdlib ``socket.socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG)`` and is
  decoded by :mod:`exporter.sources.netlink_wire` with ``struct``. pyroute2's ``DiagSocket.get_sock_stats``
  builds an object per message and per attribute (tens of times slower and heavier, see the
  performance chapter), hides kernel errors (a dump answered with an errno comes back as an empty tuple: its
  MarshalDiag picks the message class by the byte at offset 16, so NLMSG_DONE(-ENOENT) is just another
  message) and leaks fds when one instance is shared across threads.

One netlink socket per dump, never shared: a dump that failed or was interrupted leaves messages
queued, and concurrent scrapes would interleave. Opening one costs microseconds.

Interrupted dumps (``NLM_F_DUMP_INTR``: the table changed while the kernel walked it) are retried
INTERRUPTED_RETRIES times. If the last attempt is interrupted too, its result is published anyway
and counted (``socket_netlink_dump_interrupted_total``, a Counter declared here, exposed by exposition/health.py):
on a host whose socket table never holds still, a count that may be off by the few sockets that
moved mid-dump is worth more than a failed scrape every time, and the counter says it happened.

What the kernel returns, measured on Linux 6.18 in a fresh netns (``idiag_states`` is a bit mask
of ``1 << state``; include/uapi/linux/inet_diag.h, include/net/tcp_states.h)::

    socket                          dumped when the mask has       reported idiag_state  inode
    bound, no listen/connect        bit 13 TCP_BOUND_INACTIVE      7 CLOSE               set
    request socket (SYN_RECV)       bit 3 SYN_RECV or bit 12       3 SYN_RECV            0
    TIME_WAIT                       bit 6                          6 TIME_WAIT           0

Bound-only sockets sit only in the bind hash; since kernel 6.10 inet_diag walks it when bit 13 is
asked for (bit 7 CLOSE alone returns nothing). /proc/net/tcp never lists them, nor does ss 6.1,
whose mask stops at bit 11: that is the one documented difference from psutil's counts. Request
sockets are stored as 12 NEW_SYN_RECV; inet_diag reports them as 3, as /proc/net/tcp does. We ask
for :data:`ALL_STATES` (every bit: kernels ignore bits they do not know) so every socket is seen.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence

import pyroute2
from prometheus_client import Counter
from pyroute2.netlink import NETLINK_SOCK_DIAG, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY, inet_diag_req, unix_diag_req

from ..model.table import ListenTable, SocketTable, SourceUnavailable, Table
from .listen_wire import INET_DIAG_SKMEMINFO, LISTEN_STATE, decode_listen_dump
from .netlink_wire import (
    NLM_F_DUMP_INTR,
    NLMSG_HDRLEN,
    NetlinkDumpError,
    NetlinkDumpInterrupted,
    decode_inet_dump,
    decode_unix_dump,
)

log = logging.getLogger(__name__)

PYROUTE2_VERSION: str = str(getattr(pyroute2, "__version__", "unknown"))
ALL_STATES = 0xFFFFFFFF
#: A dump skb holds at most ~32 KiB (netlink_dump caps max_recvmsg_len); 64 KiB never truncates.
RECV_BUFFER = 1 << 16
#: SO_RCVBUF asked for, best effort: headroom should a kernel queue several dump skbs ahead. 6.18
#: fills one skb per recvmsg, so it measured no faster (60k sockets: 68 ms either way) but costs nothing.
SO_RCVBUF_WANTED = 1 << 21
DUMP_TIMEOUT_S = 10.0
INTERRUPTED_RETRIES = 3
_REFUSED = {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EACCES, errno.EPERM}
_NO_DIAG_MODULE = {errno.ENOENT, errno.EOPNOTSUPP}
_PROTOCOL: dict[int, int] = {socket.SOCK_STREAM: socket.IPPROTO_TCP, socket.SOCK_DGRAM: socket.IPPROTO_UDP}


NETLINK_DUMP_RETRIES = Counter(
    "socket_netlink_dump_retries",
    "sock_diag dumps retried because the kernel flagged them interrupted (NLM_F_DUMP_INTR: the table "
    "changed mid-dump).", ["table"], registry=None)
NETLINK_DUMP_INTERRUPTED = Counter(
    "socket_netlink_dump_interrupted",
    "sock_diag dumps still interrupted after every retry and published anyway: that table's counts may "
    "be off by the sockets that changed mid-dump.", ["table"], registry=None)


def expose_tables(tables: Iterable[Table]) -> None:
    """Export the netlink counters of ``tables`` from now on, at zero until something happens.

    >>> expose_tables([Table.UDP6])
    >>> from prometheus_client import CollectorRegistry
    >>> registry = CollectorRegistry()
    >>> registry.register(NETLINK_DUMP_RETRIES)
    >>> registry.get_sample_value("socket_netlink_dump_retries_total", {"table": "udp6"}) is not None
    True
    """
    for table in tables:
        NETLINK_DUMP_RETRIES.labels(table.value)
        NETLINK_DUMP_INTERRUPTED.labels(table.value)


@functools.cache
def diag_request(table: Table) -> bytes:
    """The SOCK_DIAG_BY_FAMILY dump request for ``table``, encoded by pyroute2 once.

    inet (72 bytes): nlmsghdr, then sdiag_family, sdiag_protocol, idiag_ext=0, pad, idiag_states
    (u32 at offset 20), a zeroed inet_diag_sockid. unix (40 bytes): nlmsghdr, sdiag_family,
    sdiag_protocol=0, pad, udiag_states (offset 20), udiag_ino=0, udiag_show=0 (no attributes), cookie.
    """
    req = unix_diag_req() if table is Table.UNIX else inet_diag_req()
    if table is Table.UNIX:
        req["udiag_states"] = ALL_STATES
    else:
        req["sdiag_protocol"] = _PROTOCOL[table.sock_types[0]]
        req["idiag_states"] = ALL_STATES
    req["sdiag_family"] = table.family
    req["header"]["type"] = SOCK_DIAG_BY_FAMILY
    req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    req["header"]["sequence_number"] = 1
    req.encode()
    return bytes(req.data)


@functools.cache
def listen_request(table: Table) -> bytes:
    """The dump request for the LISTEN sockets of a TCP table with INET_DIAG_SKMEMINFO (listen_wire.py)."""
    req = inet_diag_req()
    req["sdiag_family"] = table.family
    req["sdiag_protocol"] = socket.IPPROTO_TCP
    req["idiag_states"] = 1 << LISTEN_STATE
    req["idiag_ext"] = 1 << (INET_DIAG_SKMEMINFO - 1)
    req["header"]["type"] = SOCK_DIAG_BY_FAMILY
    req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    req["header"]["sequence_number"] = 1
    req.encode()
    return bytes(req.data)


def _open(table: Table) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    except OSError as exc:
        if exc.errno in _REFUSED:
            raise SourceUnavailable(f"{table.name}: netlink sock_diag socket refused: {exc}") from exc
        raise NetlinkDumpError(f"{table.name}: cannot open netlink socket: {exc}", exc.errno) from exc
    with contextlib.suppress(OSError):  # best effort: the kernel caps it at net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SO_RCVBUF_WANTED)
    sock.settimeout(DUMP_TIMEOUT_S)
    return sock


def _chunks(sock: socket.socket, table: Table, request: bytes | None = None) -> Iterator[memoryview]:
    """Send the request, then yield each recv's bytes (valid until the next one: the buffer is reused)."""
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    try:
        sock.sendto(request or diag_request(table), (0, 0))
        while True:
            # MSG_TRUNC makes recv_into return the datagram's real length, so truncation shows.
            size = sock.recv_into(buf, 0, socket.MSG_TRUNC)
            if size > len(buf):
                raise NetlinkDumpError(f"{table.name}: netlink message of {size} bytes > {len(buf)} buffer")
            if size == 0:
                raise NetlinkDumpError(f"{table.name}: empty read from the netlink socket")
            yield view[:size]
    except TimeoutError as exc:
        raise NetlinkDumpError(f"{table.name}: no answer in {DUMP_TIMEOUT_S} s") from exc
    except OSError as exc:
        if exc.errno in _REFUSED:
            raise SourceUnavailable(f"{table.name}: netlink sock_diag refused: {exc}") from exc
        raise NetlinkDumpError(f"{table.name}: netlink I/O failed: {exc}", exc.errno) from exc


def _dump(table: Table, keep: list[bytes] | None = None, intr: list[bool] | None = None,
          detail: bool = False) -> list[SocketTable]:
    """One dump of ``table`` on a fresh socket; ``keep`` collects the raw chunks (for recording).

    With ``intr`` given, an interrupted dump is decoded instead of raising, and ``intr`` gets True.
    """
    with _open(table) as sock:
        chunks: Iterator[memoryview] = _chunks(sock, table)
        if keep is not None:
            chunks = _copying(chunks, keep)
        if intr is not None:
            chunks = _accepting_interrupted(chunks, intr)
        try:
            if table is Table.UNIX:
                return decode_unix_dump(chunks)
            return [decode_inet_dump(chunks, table, detail)]
        except NetlinkDumpInterrupted:
            raise
        except NetlinkDumpError as exc:
            if exc.errno in _NO_DIAG_MODULE:
                raise SourceUnavailable(f"{table.name}: kernel has no sock_diag for it: {exc}") from exc
            raise


def _copying(chunks: Iterator[memoryview], keep: list[bytes]) -> Iterator[memoryview]:
    for chunk in chunks:
        keep.append(chunk.tobytes())
        yield chunk


_HDR = struct.Struct("=IHH")  # nlmsg_len, nlmsg_type, nlmsg_flags


def _accepting_interrupted(chunks: Iterator[memoryview], intr: list[bool]) -> Iterator[memoryview]:
    """Clear NLM_F_DUMP_INTR in every message header (noting it in ``intr``) so the decoder keeps going.

    Runs only on the last attempt, so the per-message walk costs nothing in the common case. A header
    whose length makes no sense ends the walk: the decoder then meets it and raises its typed error.
    """
    for chunk in chunks:
        off, n, out = 0, len(chunk), chunk
        while off + NLMSG_HDRLEN <= n:
            length, _, flags = _HDR.unpack_from(out, off)
            if length < NLMSG_HDRLEN:
                break
            if flags & NLM_F_DUMP_INTR:
                if out is chunk:
                    out = memoryview(bytearray(chunk))
                struct.pack_into("=H", out, off + 6, flags & ~NLM_F_DUMP_INTR)
                intr[:] = [True]
            off += (length + 3) & ~3
        yield out


def _dump_retrying(table: Table, keep: list[bytes] | None = None, detail: bool = False) -> list[SocketTable]:
    for _ in range(INTERRUPTED_RETRIES):
        if keep is not None:
            keep.clear()
        try:
            return _dump(table, keep, detail=detail)
        except NetlinkDumpInterrupted:
            NETLINK_DUMP_RETRIES.labels(table.value).inc()
    if keep is not None:
        keep.clear()
    intr: list[bool] = []
    result = _dump(table, keep, intr, detail)
    if intr:
        NETLINK_DUMP_INTERRUPTED.labels(table.value).inc()
        log.warning("%s: netlink dump interrupted %d times in a row (socket table changing fast); publishing "
                    "the last one, which may be off by the sockets that changed", table.name,
                    INTERRUPTED_RETRIES + 1)
    return result


def read_tables(tables: Sequence[Table], detail: bool = False) -> list[SocketTable]:
    """Dump ``tables`` in order; UNIX yields three tables (STREAM, DGRAM, SEQPACKET).

    ``detail`` adds the inet tables' ports, queues and addresses (:class:`~exporter.model.table.InetColumns`).

    Raises SourceUnavailable when netlink or a table's diag module is missing here, NetlinkDumpError
    (a SourceError) for other kernel errors. An interrupted dump is retried, then published (see the
    module docstring).
    """
    out: list[SocketTable] = []
    for table in tables:
        out.extend(_dump_retrying(table, detail=detail))
    return out


def read_listeners(table: Table) -> ListenTable:
    """The LISTEN sockets of a TCP table with their drop counters (exporter/sources/listen_wire.py).

    An interrupted dump is retried like the bulk ones; if every attempt is interrupted, it raises:
    listeners are few, so a dump that never holds still is an error worth seeing, not a near-count.
    """
    for attempt in range(INTERRUPTED_RETRIES + 1):
        with _open(table) as sock:
            try:
                return decode_listen_dump(_chunks(sock, table, listen_request(table)), table)
            except NetlinkDumpInterrupted:
                if attempt == INTERRUPTED_RETRIES:
                    raise
            except NetlinkDumpError as exc:
                if exc.errno in _NO_DIAG_MODULE:
                    raise SourceUnavailable(f"{table.name}: kernel has no sock_diag for it: {exc}") from exc
                raise
    raise AssertionError("unreachable")
