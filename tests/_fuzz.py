"""Building blocks for tests/test_fuzz_parsers.py: a hang guard, and netlink dumps with their oracle.

Why an oracle: random bytes almost never get past the first header check, so they say little about
DONE-with-errno, NLMSG_ERROR, DUMP_INTR or bad lengths deep in a dump. :func:`dump` builds dumps from
messages whose lengths, flags, families and errnos are drawn to be wrong in every way the kernel or
a bug could make them, and :func:`reference` (a plain, slow walk of netlink(7)'s rules) says what the
decoder must return for them: the exact rows, or which typed error with which errno.
"""

from __future__ import annotations

import signal
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hypothesis import strategies as st

from exporter.model.table import Table
from exporter.sources.netlink_wire import NetlinkDumpError, NetlinkDumpInterrupted, decode_inet_dump, decode_unix_dump
from tests.test_netlink_decode import gen

INTR, DONE, ERROR, NOOP, DIAG = 0x10, 3, 2, 1, 20


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` in the code under test eats it."""


@contextmanager
def bounded(seconds: float = 5.0) -> Iterator[None]:
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s: a loop that does not advance?")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


Outcome = tuple[str, int | None] | list[tuple[int, int, int]]  # ("error"|"interrupted", errno) or rows


def reference(chunks: list[bytes], table: Table) -> Outcome:
    """netlink(7) read literally: each recv holds whole messages at NLMSG_ALIGN'ed offsets."""
    unix, rows = table is Table.UNIX, []
    min_len = 16 + (16 if unix else 72)
    for chunk in chunks:
        off, n = 0, len(chunk)
        while off < n:
            if n - off < 16:
                return ("error", None)
            length, mtype, flags = struct.unpack_from("=IHH", chunk, off)
            if length < 16 or off + length > n:
                return ("error", None)
            if flags & INTR:
                return ("interrupted", None)
            err = struct.unpack_from("=i", chunk, off + 16)[0] if length >= 20 else 0
            if mtype == DONE:
                if err:
                    return ("error", abs(err))
                if unix and any(t not in (1, 2, 5) for t, _, _ in rows):
                    return ("error", None)
                return sorted(rows, key=lambda row: row[0])  # UNIX: one table per type, in type order
            if mtype == ERROR and (length < 20 or err):
                return ("error", abs(err) if length >= 20 else None)
            if mtype == DIAG:
                if length < min_len or chunk[off + 16] != (socket.AF_UNIX if unix else table.family):
                    return ("error", None)
                at = (17, 18, 20) if unix else (16, 17, 84)
                rows.append((chunk[off + at[0]] if unix else 0, chunk[off + at[1]],
                             struct.unpack_from("=I", chunk, off + at[2])[0]))
            elif mtype not in (ERROR, NOOP):
                return ("error", None)
            off += (length + 3) & ~3
    return ("error", None)  # no NLMSG_DONE


def decoded(chunks: list[bytes], table: Table) -> Outcome:
    try:
        with bounded():
            if table is Table.UNIX:
                got = decode_unix_dump(chunks)
                return [(t.sock_type, s, i) for t in got for s, i in zip(t.states, t.inodes, strict=True)]
            one = decode_inet_dump(chunks, table)
            return [(0, s, i) for s, i in zip(one.states, one.inodes, strict=True)]
    except NetlinkDumpInterrupted as exc:
        return ("interrupted", exc.errno)
    except NetlinkDumpError as exc:
        return ("error", exc.errno)


ERRNOS = st.sampled_from([0, 0, -2, -22, -95, -(2**31), 2**31 - 1, 1])
LENGTHS = st.sampled_from([0, 1, 15, 16, 19, 20, 40, 87, 88, 89, 4096, 2**32 - 1])


@st.composite
def message(draw: st.DrawFn, table: Table, sane: bool) -> bytes:
    """One message; ``sane=False`` lets every field go wrong (family, type, flags, errno, length)."""
    kind = draw(st.sampled_from(["data"] * 6 + ["error", "noop"] + ([] if sane else ["done", "other"])))
    flags = gen.NLM_F_MULTI | (INTR if not sane and draw(st.integers(0, 4)) == 0 else 0)
    wild = (lambda strategy, usual: usual) if sane else (lambda strategy, usual: draw(strategy))
    if kind == "data":
        if table is Table.UNIX:
            body = struct.pack("=BBBxIQ", wild(st.sampled_from([socket.AF_INET, 0]), socket.AF_UNIX),
                               draw(st.sampled_from([1, 2, 5])) if sane else draw(st.sampled_from([0, 3, 1])),
                               draw(st.integers(0, 255)), draw(st.integers(0, 2**32 - 1)), 0)
        else:
            family = wild(st.sampled_from([socket.AF_INET6 + socket.AF_INET - table.family, 0]), table.family)
            body = struct.pack("=BB", family, draw(st.integers(0, 255))) + bytes(66) + struct.pack(
                "=I", draw(st.integers(0, 2**32 - 1)))
        # rtattrs with any rta_len, sane or not: the decoder must skip them by nlmsg_len alone
        for rta_len, rta_type in draw(st.lists(st.tuples(st.sampled_from([0, 3, 4, 8, 9, 65535]),
                                                         st.integers(0, 20)), max_size=3)):
            body += struct.pack("=HH", rta_len, rta_type) + bytes(4)
        mtype = DIAG
    elif kind in ("done", "error"):
        mtype = DONE if kind == "done" else ERROR
        body = struct.pack("=i", wild(ERRNOS, 0))[: wild(st.sampled_from([0, 4]), 4)]
        body += bytes(draw(st.sampled_from([0, 16])))
    else:
        mtype = NOOP if kind == "noop" else draw(st.sampled_from([0, 4, 16, 19, 21, 0xFFFF]))
        body = draw(st.binary(max_size=24))
    return gen.nlmsg(mtype, body, flags, length=None if sane else draw(st.one_of(st.none(), LENGTHS)))


@st.composite
def dump(draw: st.DrawFn, table: Table) -> list[bytes]:
    """Messages ended by DONE (or not), in recv-sized chunks of whole messages. Either all sane, or
    one message gone wrong among sane ones, or every message free to go wrong."""
    mode = draw(st.sampled_from(["sane", "one_bad", "one_bad", "chaos"]))
    msgs = draw(st.lists(message(table, sane=mode != "chaos"), max_size=12))
    if mode == "one_bad":
        msgs.insert(draw(st.integers(0, len(msgs))), draw(message(table, sane=False)))
    if mode == "sane" or draw(st.booleans()) or not msgs:
        msgs.append(gen.done(0 if mode == "sane" else draw(ERRNOS)))
    cuts = sorted(draw(st.sets(st.integers(1, len(msgs)), max_size=4)) | {len(msgs)})
    return [b"".join(msgs[a:b]) for a, b in zip([0, *cuts], cuts, strict=False) if a < b]
