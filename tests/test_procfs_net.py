"""The /proc/net parsers over real captured lines (tests/fixtures/procfs), plus one live check vs psutil."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.model.kinds import TABLE_ORDER
from exporter.model.table import SourceError, SourceUnavailable, Table, status_name
from exporter.owners.scan import scan_owners
from exporter.sources.procfs import parse_unix_lines, read_tables
from exporter.sources.procfs_lines import ProcParseError, parse_inet_lines
from tests._golden import CASES, PROCFS_FIXTURES, assert_golden, render_case
from tests._require import require_module

BASIC = PROCFS_FIXTURES / "basic"
TCP_HEADER = (BASIC / "net" / "tcp").read_bytes().split(b"\n", 1)[0]  # the kernel's, trailing blanks too
TCP_ROW = b"%4d: 0100007F:1F90 00000000:0000 %02X 00000000:00000000 00:00000000 00000000     0        0 %d 1"
UNIX_HEADER = b"Num       RefCount Protocol Flags    Type St Inode Path"
UNIX_ROW = b"00000000ef148b2d: 00000002 00000000 00010000 %s 01 %d"


def lines_of(name: str, root: Path = BASIC) -> list[bytes]:
    return (root / "net" / name).read_bytes().splitlines()


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    assert_golden(case, render_case(PROCFS_FIXTURES / case))


def test_basic_tcp_has_every_state_proc_can_show() -> None:
    t = parse_inet_lines(lines_of("tcp"), Table.TCP4)
    assert set(t.states) == {1, 2, 3, 4, 5, 6, 8, 9, 10, 11}  # 7 CLOSE: never listed for TCP
    by_state = {status_name(Table.TCP4, s) for s, i in zip(t.states, t.inodes, strict=True) if i == 0}
    assert by_state == {"TIME_WAIT", "SYN_RECV", "ESTABLISHED"}  # the last: not yet accept()ed


def test_unix_types_and_newline_in_path() -> None:
    stream, dgram, seqpacket = parse_unix_lines(lines_of("unix"))
    assert (stream.sock_type, dgram.sock_type, seqpacket.sock_type) == (
        socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)
    assert (len(stream), len(dgram), len(seqpacket)) == (4, 1, 1)  # "odd name\nsecond line" is ONE
    assert all(t.table is Table.UNIX for t in (stream, dgram, seqpacket))


def test_header_only_gives_empty_tables() -> None:
    assert len(parse_inet_lines([TCP_HEADER], Table.UDP6)) == 0
    assert [len(t) for t in parse_unix_lines([UNIX_HEADER])] == [0, 0, 0]


@pytest.mark.parametrize(("row", "reason"), [
    (b"   0: 0100007F:1F90 00000000:0000 0A", "too few fields"),
    (TCP_ROW.replace(b"%02X", b"ZZ") % (0, 5), "bad st or inode"),
    (TCP_ROW.replace(b"%02X", b"1FF") % (0, 5), "bad st or inode"),  # does not fit a byte
    (TCP_ROW % (0, 0x0A, 2**32), "bad st or inode"),  # inodes are 32-bit
    (TCP_ROW % (0, 0x0A, -1), "bad st or inode"),
    (TCP_ROW % (0, 0x0E, 5), "unknown TCP state 0x0e"),
    (b"", "too few fields"),
])
def test_malformed_inet_line_names_file_and_line(row: bytes, reason: str) -> None:
    good = TCP_ROW % (0, 0x0A, 11)
    with pytest.raises(ProcParseError) as err:
        parse_inet_lines([TCP_HEADER, good, good, row, good], Table.TCP6, path="/x/net/tcp6")
    assert isinstance(err.value, SourceError)
    assert (err.value.path, err.value.lineno) == ("/x/net/tcp6", 4)
    assert str(err.value).startswith("/x/net/tcp6 line 4: ") and reason in str(err.value)


def test_udp_states_are_not_checked_against_tcp() -> None:
    assert list(parse_inet_lines([TCP_HEADER, TCP_ROW % (0, 0x0E, 5)], Table.UDP4).states) == [0x0E]


@pytest.mark.parametrize("lines", [[], [UNIX_HEADER], [b"garbage header"]])
def test_bad_or_missing_header_is_line_1(lines: list[bytes]) -> None:
    if lines == [UNIX_HEADER]:  # a unix file fed to the inet parser
        lines = [UNIX_HEADER, UNIX_ROW % (b"0001", 5)]
    with pytest.raises(ProcParseError, match=r"^/proc/net/tcp line 1: "):
        parse_inet_lines(lines, Table.TCP4)


def test_inet_parser_refuses_unix() -> None:
    with pytest.raises(ValueError, match="parse_unix_lines"):
        parse_inet_lines([UNIX_HEADER], Table.UNIX)


@pytest.mark.parametrize("row", [
    UNIX_ROW % (b"0003", 5),  # SOCK_RAW: not a unix type
    UNIX_ROW % (b"0001", 2**32),
    b"00000000ef148b2d 00000002 00000000 00010000 0001 01 5",  # Num without ':'
    b"stray continuation",  # the previous entry has no path, so this cannot be part of one
])
def test_malformed_unix_line(row: bytes) -> None:
    with pytest.raises(ProcParseError, match=r"^/p/net/unix line 3: not a unix socket entry"):
        parse_unix_lines([UNIX_HEADER, UNIX_ROW % (b"0002", 4), row], path="/p/net/unix")


def test_unix_path_continuation_only_after_a_path() -> None:
    lines = [UNIX_HEADER, UNIX_ROW % (b"0001", 4) + b" /run/a", b"", b"b 0001 01 99 still path",
             UNIX_ROW % (b"0005", 6)]
    assert [list(t.inodes) for t in parse_unix_lines(lines)] == [[4], [], [6]]


def test_read_tables_order_and_bare_cr_in_unix_path(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    for name in ("tcp", "udp6"):
        (tmp_path / "net" / name).write_bytes(BASIC.joinpath("net", name).read_bytes())
    (tmp_path / "net" / "unix").write_bytes(UNIX_HEADER + b"\n" + UNIX_ROW % (b"0002", 7) + b" @a\rb\n")
    got = read_tables(str(tmp_path), [Table.UDP6, Table.UNIX, Table.TCP4])
    assert [(t.table, t.sock_type) for t in got] == [
        (Table.UDP6, socket.SOCK_DGRAM), (Table.UNIX, socket.SOCK_STREAM), (Table.UNIX, socket.SOCK_DGRAM),
        (Table.UNIX, socket.SOCK_SEQPACKET), (Table.TCP4, socket.SOCK_STREAM)]
    assert list(got[2].inodes) == [7]


def test_read_tables_missing_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    with pytest.raises(SourceUnavailable, match=f"{tmp_path}/net/tcp6: missing"):
        read_tables(str(tmp_path), [Table.TCP6])
    (tmp_path / "net" / "udp").mkdir()  # unreadable as a file: an error, but not "unavailable"
    with pytest.raises(SourceError, match=f"{tmp_path}/net/udp: cannot read") as err:
        read_tables(str(tmp_path), [Table.UDP4])
    assert not isinstance(err.value, SourceUnavailable)


@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 10, 11]), st.integers(0, 2**32 - 1))))
def test_kernel_formatted_rows_round_trip(rows: list[tuple[int, int]]) -> None:
    lines = [TCP_HEADER] + [TCP_ROW % (i, s, ino) for i, (s, ino) in enumerate(rows)]
    t = parse_inet_lines(lines, Table.TCP4)
    assert (list(t.states), list(t.inodes)) == ([s for s, _ in rows], [ino for _, ino in rows])


def test_100k_lines_parse_fast() -> None:
    """Budget ~0.1 s (measured ~0.06-0.08 s); the bound is loose to survive slow CI runners."""
    body = lines_of("tcp")[1:]
    tcp = [TCP_HEADER] + [body[i % len(body)] for i in range(100_000)]
    unix_body = lines_of("unix")[1:]
    unix = [UNIX_HEADER] + [unix_body[i % len(unix_body)] for i in range(100_000)]
    start = time.perf_counter()
    assert len(parse_inet_lines(tcp, Table.TCP4)) == 100_000
    assert sum(map(len, parse_unix_lines(unix))) > 80_000
    assert time.perf_counter() - start < 1.0


def test_live_proc_agrees_with_psutil_for_our_sockets(tmp_path: Path) -> None:
    """Sockets of this process as read_tables('/proc') + scan_owners see them, vs psutil's view."""
    require_module("psutil")
    import psutil  # type: ignore[import-untyped,unused-ignore]

    server = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    seqpacket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    seqpacket.bind(str(tmp_path / "s.sock"))
    client = socket.create_connection(server.getsockname())
    kept = [server, udp, seqpacket, client, server.accept()[0], *socket.socketpair(),
            *socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)]
    if socket.has_ipv6:
        kept.append(socket.create_server(("::1", 0), family=socket.AF_INET6))
    try:
        tables = read_tables("/proc", TABLE_ORDER)
        scan = scan_owners("/proc", {i for t in tables for i in t.inodes})
        ours = {i: (t.family, t.sock_type, status_name(t.table, s))
                for t in tables for s, i in zip(t.states, t.inodes, strict=True)
                if scan.owner.get(i) == os.getpid()}
        theirs = {os.fstat(c.fd).st_ino: (c.family, c.type, c.status)
                  for c in psutil.net_connections("all") if c.pid == os.getpid()}
        assert {os.fstat(s.fileno()).st_ino for s in kept} <= set(ours)
        assert ours == theirs
    finally:
        for s in kept:
            s.close()
