"""What both /proc/net parsers share: the header check, the error naming the line, the plain inet parser.

:mod:`.procfs` (the unix parser and the reads) and :mod:`.procfs_inet` (the detail columns) both
build on these; the inet line format is described in :mod:`.procfs`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from ..model.table import KNOWN_TCP_STATES, SocketTable, SourceError, Table


class ProcParseError(SourceError):
    """A /proc/net line that is not in the kernel's format. Never skipped: counts would be wrong."""

    def __init__(self, path: str, lineno: int, line: bytes, reason: str) -> None:
        self.path, self.lineno, self.line, self.reason = path, lineno, line, reason
        super().__init__(f"{path} line {lineno}: {reason}: {line[:200]!r}")


def skip_header(lines: Iterable[bytes], first_word: bytes, path: str) -> Iterator[bytes]:
    """Check the header so that feeding the wrong file fails loudly, then yield the data lines."""
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise ProcParseError(path, 1, b"", "empty file, expected a header")
    if header.split(None, 1)[:1] != [first_word]:
        raise ProcParseError(path, 1, header, f"header does not start with {first_word.decode()!r}")
    return it


def parse_inet_lines(lines: Iterable[bytes], table: Table, *, path: str | None = None) -> SocketTable:
    """Parse the lines of ``/proc/net/{tcp,tcp6,udp,udp6}`` (header included) into one table.

    ``path`` only names the file in errors (default ``/proc/net/<table.value>``).

    >>> h = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt  uid  timeout inode"
    >>> row = b"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 42986 1"
    >>> t = parse_inet_lines([h, row], Table.TCP4)
    >>> list(t.states), list(t.inodes)
    ([10], [42986])
    """
    if table is Table.UNIX:
        raise ValueError("parse_inet_lines cannot parse /proc/net/unix: use parse_unix_lines")
    src = path or f"/proc/net/{table.value}"
    states = bytearray()
    inodes: array[int] = array("I")
    put_state, put_inode = states.append, inodes.append
    line = b""
    try:
        for line in skip_header(lines, b"sl", src):
            fields = line.split(None, 10)  # st is field 3, inode field 9; the rest stays unsplit
            put_inode(int(fields[9]))
            put_state(int(fields[3], 16))
    except (IndexError, ValueError, OverflowError) as exc:
        # Each good line appended one entry to both columns, so the bad line's number is free.
        lineno = min(len(states), len(inodes)) + 2
        reason = "too few fields" if isinstance(exc, IndexError) else f"bad st or inode ({exc})"
        raise ProcParseError(src, lineno, line, reason) from None
    if table.has_tcp_states and states.translate(None, KNOWN_TCP_STATES):  # a state we cannot name
        i = next(i for i, st in enumerate(states) if st not in KNOWN_TCP_STATES)
        raise ProcParseError(src, i + 2, b"", f"unknown TCP state {states[i]:#04x}")
    return SocketTable(table, table.sock_types[0], bytes(states), inodes)
