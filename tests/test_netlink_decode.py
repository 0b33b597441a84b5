"""The lean sock_diag decoder on recorded and hand-built dumps. Pure: no root, no netlink socket.

Recorded dumps (tests/fixtures/netlink/<table>.bin) come from a namespace holding a known socket mix;
their ``.expected`` golden lines were checked against ``ss`` when recorded (make_fixtures.py).
pyroute2's own message classes (``decode_with_pyroute2``) are the independent reference decoder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import socket
import struct
import time
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model.table import SocketTable, Table
from exporter.sources.netlink_wire import (
    Chunk,
    NetlinkDumpError,
    NetlinkDumpInterrupted,
    decode_inet_dump,
    decode_unix_dump,
)
from tests.netlink_reference import decode_with_pyroute2

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "netlink"
RECORDED = {t: FIXTURES / f"{t.name.lower()}.bin" for t in Table}
CORRUPT = sorted(p.stem for p in FIXTURES.glob("bad-*.bin"))


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def decode(chunks: Iterable[Chunk], table: Table) -> list[SocketTable]:
    return decode_unix_dump(chunks) if table is Table.UNIX else [decode_inet_dump(chunks, table)]


def messages(blob: bytes) -> list[bytes]:
    """Split a well-formed dump at message boundaries (test-side walk, independent of the decoder)."""
    out, off = [], 0
    while off < len(blob):
        length = struct.unpack_from("=I", blob, off)[0]
        out.append(blob[off : off + ((length + 3) & ~3)])
        off += (length + 3) & ~3
    return out


def columns(tables: list[SocketTable]) -> list[tuple[int, bytes, list[int]]]:
    return [(t.sock_type, bytes(t.states), t.inodes.tolist()) for t in tables]


@pytest.mark.parametrize("table", list(Table), ids=lambda t: t.name)
def test_recorded_dump_matches_golden(table: Table) -> None:
    expected = [
        line
        for line in (FIXTURES / f"{table.name.lower()}.expected").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert gen.summary(decode([RECORDED[table].read_bytes()], table)) == expected


@pytest.mark.parametrize("table", list(Table), ids=lambda t: t.name)
def test_recorded_dump_matches_pyroute2_reference(table: Table) -> None:
    blob = RECORDED[table].read_bytes()
    rows = decode_with_pyroute2(blob)
    assert rows, "fixture holds sockets"
    for t in decode([blob], table):
        kind = t.sock_type if table is Table.UNIX else 0
        ref = [(state, inode) for fam, typ, state, inode in rows if typ == kind and fam == table.family]
        assert list(zip(t.states, t.inodes, strict=True)) == ref, t.sock_type


@pytest.mark.parametrize("table", list(Table), ids=lambda t: t.name)
def test_chunk_boundaries_do_not_matter(table: Table) -> None:
    """One blob (strided path where uniform), one message per recv (loop path), runs of equal length."""
    blob = RECORDED[table].read_bytes()
    whole = columns(decode([blob], table))
    per_message = messages(blob)
    runs = [b"".join(g) for _, g in itertools.groupby(per_message, key=len)]
    assert columns(decode(per_message, table)) == whole
    assert columns(decode(runs, table)) == whole
    assert columns(decode([memoryview(bytearray(blob))], table)) == whole  # what recv_into hands over


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_dump_raises_typed_error(name: str) -> None:
    blob = (FIXTURES / f"{name}.bin").read_bytes()
    assert blob == gen.corrupt_dumps()[name][0], "fixture out of date: run make_fixtures.py corrupt"
    _, cls_name, errno_text = (FIXTURES / f"{name}.expected").read_text().split()
    table = Table.UNIX if name.startswith("bad-unix") else Table.TCP4
    with pytest.raises(NetlinkDumpError) as info:
        decode([blob], table)
    assert type(info.value).__name__ == cls_name
    assert f"errno={info.value.errno}" == errno_text
    assert table.name in str(info.value)


def test_every_corrupt_case_has_a_fixture() -> None:
    assert sorted(gen.corrupt_dumps()) == CORRUPT


@pytest.mark.parametrize("table", [Table.TCP4, Table.UNIX], ids=lambda t: t.name)
def test_every_truncation_of_a_real_dump_raises(table: Table) -> None:
    blob = RECORDED[table].read_bytes()
    for cut in range(len(blob)):
        with pytest.raises(NetlinkDumpError):
            decode([blob[:cut]], table)


def test_pyroute2_hides_kernel_errors_we_raise() -> None:
    """Why the reference decoder is not the source: errors vanish there instead of raising."""
    assert decode_with_pyroute2((FIXTURES / "bad-tcp4-done-errno.bin").read_bytes()) == []
    assert decode_with_pyroute2((FIXTURES / "bad-tcp4-error.bin").read_bytes()) == [(2, 0, 10, 1234)]


def _uniform_inet(n: int, family: int = socket.AF_INET) -> tuple[bytes, bytes, list[int]]:
    states = bytes((i % 11) + 1 for i in range(n))
    inodes = [(i * 7919) % 2**32 for i in range(n)]
    blob = b"".join(gen.inet_msg(family, s, i) for s, i in zip(states, inodes, strict=True))
    return blob, states, inodes


def test_strided_path_on_uniform_chunks() -> None:
    blob, states, inodes = _uniform_inet(1000)
    got = decode_inet_dump([blob, gen.done()], Table.TCP4)
    assert (got.states, got.inodes) == (states, array("I", inodes))
    assert decode_inet_dump([blob + gen.done()], Table.TCP4).states == states  # DONE in the same chunk


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (gen.inet_msg(socket.AF_INET, 1, 1, gen.NLM_F_MULTI | gen.NLM_F_DUMP_INTR), NetlinkDumpInterrupted),
        (gen.inet_msg(socket.AF_INET6, 1, 1), NetlinkDumpError),
        (gen.nlmsg(gen.SOCK_DIAG_BY_FAMILY, bytes(72), length=0), NetlinkDumpError),
    ],
    ids=["dump-intr", "wrong-family", "zero-length"],
)
def test_strided_path_verifies_every_message(bad: bytes, error: type[NetlinkDumpError]) -> None:
    blob, _, _ = _uniform_inet(500)
    cut = 88 * 250  # replace message 250 of 500, same length
    with pytest.raises(error):
        decode_inet_dump([blob[:cut] + bad + blob[cut + 88 :] + gen.done()], Table.TCP4)


def test_mixed_lengths_fall_back_to_the_loop() -> None:
    blob, states, inodes = _uniform_inet(300)
    odd = gen.inet_msg(socket.AF_INET, 6, 0, attrs=bytes(8))  # a longer message in the middle
    got = decode_inet_dump([blob[: 88 * 100] + odd + blob[88 * 100 :] + gen.done()], Table.TCP4)
    assert got.states == states[:100] + b"\x06" + states[100:]
    assert got.inodes.tolist() == [*inodes[:100], 0, *inodes[100:]]


def test_unix_split_by_type_keeps_order() -> None:
    types = [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET]
    rows = [(types[i % 3 if i % 5 else 0], 1 + i % 10, 100 + i) for i in range(600)]
    blob = b"".join(gen.unix_msg(*row) for row in rows) + gen.done()
    for t in decode_unix_dump([blob]):
        want = [(s, i) for typ, s, i in rows if typ == t.sock_type]
        assert list(zip(t.states, t.inodes, strict=True)) == want
    assert [len(t) for t in decode_unix_dump([gen.done()])] == [0, 0, 0]


def test_decoding_stops_pulling_chunks_at_done() -> None:
    def chunks() -> Iterator[bytes]:
        yield gen.inet_msg(socket.AF_INET, 10, 1) + gen.done()
        raise AssertionError("read past NLMSG_DONE")

    assert len(decode_inet_dump(chunks(), Table.TCP4)) == 1


def test_error_ack_and_noop_are_skipped() -> None:
    blob = gen.nlmsg(1, b"") + gen.error(0) + gen.inet_msg(socket.AF_INET, 1, 2) + gen.done()
    assert decode_inet_dump([blob], Table.TCP4).states == b"\x01"


def test_unix_table_is_refused_by_the_inet_decoder() -> None:
    with pytest.raises(ValueError):
        decode_inet_dump([gen.done()], Table.UNIX)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(list(Table)),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 2000),
)
def test_mutated_dumps_never_hang_nor_escape_the_typed_error(
    table: Table, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(RECORDED[table].read_bytes())
    for off, value in edits:
        blob[off % len(blob)] = value
    with contextlib.suppress(NetlinkDumpError):
        decode([bytes(blob[: len(blob) - cut % 64])], table)


def test_100k_sockets_decode_fast() -> None:
    """Measured 35 ms on the loop path (mixed lengths in every chunk, the slow case); bound is loose."""
    tw = gen.inet_msg(socket.AF_INET, 6, 0)
    full = gen.inet_msg(socket.AF_INET, 1, 42, attrs=bytes(36))
    chunk = (full * 9 + tw) * 25  # ~32 KiB, like one recv
    chunks = [chunk] * 400 + [gen.done()]
    start = time.perf_counter()
    got = decode_inet_dump(chunks, Table.TCP4)
    elapsed = time.perf_counter() - start
    assert len(got) == 100_000
    assert elapsed < 0.5, f"{elapsed:.3f} s for 100k sockets"
