"""The decoder's optional detail columns (ports, addresses, queues) and the listeners' dump, on recorded
and hand-built dumps. Pure: no root. pyroute2's message classes are the independent reference; the
listener dumps' golden lines came from ``ss -tmln`` when recorded (make_fixtures.py listen).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model.table import SocketTable, Table
from exporter.sources.listen_wire import decode_listen_dump
from exporter.sources.netlink_wire import NetlinkDumpError, decode_inet_dump
from tests.netlink_reference import Detail, decode_detail_with_pyroute2, decode_listeners_with_pyroute2
from tests.test_netlink_decode import FIXTURES, RECORDED, gen, messages

INET = [Table.TCP4, Table.TCP6, Table.UDP4, Table.UDP6]
LISTEN = {t: FIXTURES / f"{t.name.lower()}-listen.bin" for t in (Table.TCP4, Table.TCP6)}


def details(t: SocketTable) -> list[Detail]:
    """The decoded detail rows in pyroute2's shape (addresses as text)."""
    inet = t.inet
    assert inet is not None
    fam = t.table.family

    def text(words: tuple[int, ...]) -> str:
        return socket.inet_ntop(fam, b"".join(w.to_bytes(4, sys.byteorder) for w in words))

    return [
        (sp, dp, text(src), text(dst), rq, wq)
        for sp, dp, src, dst, rq, wq in zip(inet.sports, inet.dports, zip(*inet.src, strict=True),
                                            zip(*inet.dst, strict=True), inet.rqueue, inet.wqueue, strict=True)
    ]


@pytest.mark.parametrize("table", INET, ids=lambda t: t.name)
def test_recorded_detail_matches_pyroute2_reference(table: Table) -> None:
    blob = RECORDED[table].read_bytes()
    ref = decode_detail_with_pyroute2(blob)
    assert ref and any(row[0] for row in ref), "fixture holds bound sockets"
    assert details(decode_inet_dump([blob], table, detail=True)) == ref


@pytest.mark.parametrize("table", INET, ids=lambda t: t.name)
def test_detail_leaves_the_plain_columns_alone(table: Table) -> None:
    blob = RECORDED[table].read_bytes()
    plain, rich = decode_inet_dump([blob], table), decode_inet_dump([blob], table, detail=True)
    assert plain.inet is None and rich.inet is not None
    assert (plain.states, plain.inodes) == (rich.states, rich.inodes)


@pytest.mark.parametrize("table", INET, ids=lambda t: t.name)
def test_detail_does_not_depend_on_chunk_boundaries(table: Table) -> None:
    """Whole blob (strided copy where uniform), one message per recv (loop), runs of equal length."""
    blob = RECORDED[table].read_bytes()
    whole = details(decode_inet_dump([blob], table, detail=True))
    per_message = messages(blob)
    runs = [b"".join(g) for _, g in itertools.groupby(per_message, key=len)]
    assert details(decode_inet_dump(per_message, table, detail=True)) == whole
    assert details(decode_inet_dump(runs, table, detail=True)) == whole


def rich_msg(family: int, state: int, i: int) -> bytes:
    """An inet diag message with distinct ports, addresses and queues derived from ``i``."""
    sock_id = struct.pack(">HH", 1024 + i % 60000, 80 + i % 7) + struct.pack(">4I", i, i + 1, i + 2, i + 3)
    sock_id += struct.pack(">4I", ~i & 0xFFFFFFFF, 7, 8, 9) + struct.pack("=IQ", 1, i)
    body = struct.pack("=BBBB", family, state, 0, 0) + sock_id + struct.pack("=IIIII", 0, i * 3, i * 5, 0, i)
    return gen.nlmsg(gen.SOCK_DIAG_BY_FAMILY, body)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_strided_and_loop_paths_agree_on_uniform_chunks(family: int) -> None:
    table = Table.TCP4 if family == socket.AF_INET else Table.TCP6
    msgs = [rich_msg(family, 1 + i % 11, i) for i in range(1500)]
    blob = b"".join(msgs) + gen.done()
    ref = decode_detail_with_pyroute2(blob)
    assert details(decode_inet_dump([blob], table, detail=True)) == ref  # strided
    assert details(decode_inet_dump([*msgs, gen.done()], table, detail=True)) == ref  # loop


def listen_expected(table: Table) -> list[str]:
    lines = (FIXTURES / f"{table.name.lower()}-listen.expected").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("table", list(LISTEN), ids=lambda t: t.name)
def test_recorded_listener_dump_matches_ss_golden_and_pyroute2(table: Table) -> None:
    blob = LISTEN[table].read_bytes()
    t = decode_listen_dump([blob], table)
    assert t.limits is not None and t.drops is not None
    rows = list(zip(t.sports, t.ids, t.rqueue, t.limits, t.drops, strict=True))
    assert sorted(f"{table.name} {p} {q} {w} {d}" for p, _, q, w, d in rows) == listen_expected(table)
    assert [(p, i, q, w, d) for p, i, q, w, d in rows] == decode_listeners_with_pyroute2(blob)
    assert any(q == w + 1 and d > 0 for _, _, q, w, d in rows), "fixture holds a full, dropping listener"


def listen_msg(port: int, attrs: bytes, state: int = 10) -> bytes:
    sock_id = struct.pack(">HH", port, 0) + bytes(32) + struct.pack("=IQ", 0, port)
    body = struct.pack("=BBBB", socket.AF_INET, state, 0, 0) + sock_id + struct.pack("=IIIII", 0, 1, 5, 0, 9)
    return gen.nlmsg(gen.SOCK_DIAG_BY_FAMILY, body + attrs)


def rta(rtype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), rtype) + payload
    return raw + bytes(-len(raw) % 4)


def test_many_listeners_decode_strided_as_pyroute2_does() -> None:
    """A chunk of equal-length listener messages (the strided path), then the same one by one."""
    attrs = [rta(8, b"\x00") + rta(15, struct.pack("=I", i)) + rta(7, struct.pack("=9I", *range(8), i * 3))
             for i in range(300)]
    msgs = [listen_msg(1000 + i, a) for i, a in enumerate(attrs)]
    blob = b"".join(msgs) + gen.done()
    ref = decode_listeners_with_pyroute2(blob)
    for chunks in ([blob], [*msgs, gen.done()]):
        t = decode_listen_dump(chunks, Table.TCP4)
        assert t.drops is not None and t.limits is not None
        assert list(zip(t.sports, t.ids, t.rqueue, t.limits, t.drops, strict=True)) == ref
    # same length, but one message holds another attribute where the others hold SKMEMINFO
    odd = listen_msg(99, rta(8, b"\x00") + rta(15, b"\x00" * 4) + rta(9, bytes(36)))
    t = decode_listen_dump([b"".join(msgs[:100]) + odd + b"".join(msgs[100:]) + gen.done()], Table.TCP4)
    assert t.drops is None and len(t.sports) == 301  # that listener has no drops: the column is unknown


def test_listener_without_skmeminfo_has_unknown_drops() -> None:
    """A kernel older than 4.7 sends 8 meminfo words (no drops): the column is unknown, not 0."""
    old = listen_msg(80, rta(8, b"\x00") + rta(7, bytes(32)))
    t = decode_listen_dump([old + gen.done()], Table.TCP4)
    assert t.drops is None and t.sports.tolist() == [80] and t.limits is not None and t.limits.tolist() == [5]
    new = listen_msg(81, rta(7, struct.pack("=9I", *range(8), 42)))
    assert decode_listen_dump([new + gen.done()], Table.TCP4).drops == array("I", [42])


@pytest.mark.parametrize("bad", [
    listen_msg(80, struct.pack("=HH", 2, 7)),  # rtattr shorter than its header
    listen_msg(80, struct.pack("=HH", 200, 7)),  # rtattr past the message
    listen_msg(80, b"", state=1),  # not LISTEN in a LISTEN-only dump
    gen.inet_msg(socket.AF_INET6, 10, 1),  # wrong family
], ids=["short-rta", "long-rta", "not-listen", "wrong-family"])
def test_bad_listener_messages_raise_typed_errors(bad: bytes) -> None:
    with pytest.raises(NetlinkDumpError):
        decode_listen_dump([bad + gen.done()], Table.TCP4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4), st.integers(0, 400))
def test_mutated_listener_dumps_never_escape_the_typed_error(edits: list[tuple[int, int]], cut: int) -> None:
    blob = bytearray(LISTEN[Table.TCP4].read_bytes())
    for off, value in edits:
        blob[off % len(blob)] = value
    with contextlib.suppress(NetlinkDumpError):
        decode_listen_dump([bytes(blob[: len(blob) - cut % len(blob)])], Table.TCP4)
