"""The /proc fallback source: parse ``/proc/net/{tcp,tcp6,udp,udp6,unix}`` into SocketTables.

Why /proc at all: when sock_diag netlink is refused (old kernel, seccomp, missing module), these
files are what psutil itself reads, so they give psutil's numbers by construction. Why the parsers
are pure functions over byte lines: the golden fixtures and property tests feed them directly, and
the only I/O (:func:`read_tables`) stays one small function. Why columns: 100k sockets must parse in
~0.1 s, so each line is split once and two ints are taken; no object is built per socket.

Inet format (proc(5), ``net/ipv4/tcp_ipv4.c`` get_tcp4_sock, ``udp.c`` udp4_format_sock)::

      sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
       0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42986 1 ...

Field 3 ``st`` is the kernel state in hex (0A = LISTEN), field 9 the inode in decimal; tcp6/udp6
only have longer addresses. Quirks worth knowing:

* TIME_WAIT entries and SYN_RECV request sockets (printed as 03, kernel NEW_SYN_RECV) have inode 0,
  and so does an established child not yet accept()ed: no ``struct socket`` exists for them.
* Bound-only TCP sockets (and closed ones) are in no listed hash: state 07 never appears for TCP.
  For UDP, 07 means unbound-peer and 01 connected; psutil reports NONE for both.
* The files show the network namespace of the *reading* process (``/proc/net`` is a symlink to
  ``/proc/self/net``), so the exporter counts the namespace it runs in.

Unix format (proc(5), ``net/unix/af_unix.c`` unix_seq_show)::

    Num       RefCount Protocol Flags    Type St Inode Path
    00000000ef148b2d: 00000002 00000000 00010000 0001 01 44034 /run/app.sock

``Type`` is 0001 SOCK_STREAM, 0002 SOCK_DGRAM or 0005 SOCK_SEQPACKET; ``St`` is the socket's
SS_* state (kept as is: psutil reports NONE for unix). The path is printed raw, so a path holding a
newline continues on the next line(s); see :func:`parse_unix_lines` for how that is handled.

Line numbers in errors are 1-based file lines (the header is line 1), as ``sed -n Np`` counts.
"""

from __future__ import annotations

import socket
from array import array
from collections.abc import Iterable, Sequence

from ..model.table import SocketTable, SourceError, SourceUnavailable, Table
from .procfs_inet import parse_inet_detail_lines
from .procfs_lines import ProcParseError, parse_inet_lines, skip_header

#: /proc/net/unix ``Type`` column (``%04X`` of the socket type) -> index into the returned tables.
_UNIX_TYPES: dict[bytes, int] = {b"0001": 0, b"0002": 1, b"0005": 2}
_UNIX_SOCK_TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)


def parse_unix_lines(lines: Iterable[bytes], *, path: str = "/proc/net/unix") -> list[SocketTable]:
    """Parse ``/proc/net/unix`` into three tables: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET (maybe empty).

    A socket path may contain a newline, and the kernel prints it raw, so the entry spills onto
    the next line(s) (psutil issue #766). A line that does not parse is therefore accepted as path
    continuation *only* right after an entry that has a path; anywhere else it is an error. (An
    unprivileged user can thus fake an entry by binding a path that contains a well-formed line:
    the format cannot tell, psutil counts it too, and it adds at most one socket per such path.)

    >>> rows = [b"Num       RefCount Protocol Flags    Type St Inode Path",
    ...         b"00000000ef148b2d: 00000002 00000000 00010000 0001 01 44034 /run/a b",
    ...         b"c.sock", b"00000000b906cca1: 00000002 00000000 00000000 0002 01 44037"]
    >>> [list(t.inodes) for t in parse_unix_lines(rows)]
    [[44034], [44037], []]
    """
    states = [bytearray(), bytearray(), bytearray()]
    inodes: list[array[int]] = [array("I"), array("I"), array("I")]
    types = _UNIX_TYPES
    in_path = False  # the previous entry had a path, so an unparsable line may be its continuation
    lineno = 1
    for line in skip_header(lines, b"Num", path):
        lineno += 1
        fields = line.split(None, 7)  # Num RefCount Protocol Flags Type St Inode [Path with spaces]
        try:
            kind = types[fields[4]]
            if fields[0][-1] != 58:  # b":"
                raise ValueError
            inodes[kind].append(int(fields[6]))  # OverflowError unless 0 <= inode < 2**32
            try:
                states[kind].append(int(fields[5], 16))  # ValueError unless 0 <= st < 256
            except ValueError:
                inodes[kind].pop()
                raise
        except (IndexError, KeyError, ValueError, OverflowError):
            if in_path:
                continue
            reason = "not a unix socket entry (Num: ... Type St Inode)"
            raise ProcParseError(path, lineno, line, reason) from None
        in_path = len(fields) == 8
    return [
        SocketTable(Table.UNIX, sock_type, bytes(states[i]), inodes[i])
        for i, sock_type in enumerate(_UNIX_SOCK_TYPES)
    ]


def read_tables(procfs: str, tables: Sequence[Table], detail: bool = False) -> list[SocketTable]:
    """Read ``{procfs}/net/<table>`` for each table, in order (UNIX yields three tables).

    ``detail`` adds the inet tables' ports, queues and addresses (:mod:`.procfs_inet`).

    A missing file raises :class:`SourceUnavailable` (this source cannot work here: /proc not
    mounted, or IPv6 disabled with ``ipv6.disable=1`` for tcp6/udp6). psutil silently treats a
    missing tcp6/udp6 as empty; whether to do that is the caller's decision, not the reader's.
    Any other read failure raises :class:`SourceError`; both name the path.
    """
    out: list[SocketTable] = []
    for table in tables:
        path = f"{procfs}/net/{table.value}"
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as exc:
            raise SourceUnavailable(f"{path}: missing ({exc.strerror})") from exc
        except OSError as exc:
            raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        lines = data.split(b"\n")  # not splitlines(): a unix path may hold a bare \r
        if lines[-1] == b"":
            lines.pop()
        if table is Table.UNIX:
            out.extend(parse_unix_lines(lines, path=path))
        elif detail:
            out.append(parse_inet_detail_lines(lines, table, path=path))
        else:
            out.append(parse_inet_lines(lines, table, path=path))
    return out
