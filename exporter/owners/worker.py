"""A scan worker process: reads the fd tables of the pids it is sent, answers with packed inode arrays.

Run by exporter/owners/pool.py as ``python -I -S -c ...`` (a fresh interpreter, not a fork of the
exporter: see that module for why). It imports only exporter/owners/read.py and the owner cache's key
reader, keeps no state between requests, and talks over its stdin/stdout pipes:

* request: ``u32 length`` + payload: ``u8 want_key, u8 0, u16 len`` + procfs path, ``u32 n``, then n
  x (``i32 pid, i32 fds, u32 keylen`` + expected key; keylen 0xFFFFFFFF = none);
* answer: ``u32 length`` + payload: ``u32 n``, then n x (``i32 pid, u8 status, u8 unchanged, u8 itemsize,
  u32 scanned_fds, u32 vanished_fds, f64 since, u32 keylen, u32 inodes`` + key + the inode array's
  raw bytes), all little-endian except the inode bytes, which are native (both ends are one host).

Why raw arrays and not pickle: 100k inodes are 400 KB as an ``array('I')``, written and read in one
piece; pickling a dict of 100k entries costs more than the readlinks it saves.

It exits when its stdin reaches EOF, which is how the exporter's death reaches it (the kernel closes
the exporter's end of the pipe, even on SIGKILL). No ``PR_SET_PDEATHSIG``: it fires when the *thread*
that started the child ends, and workers are respawned from the exporter's collect thread, which a
config reload replaces. As a second guard, an idle worker checks every second that its parent is
still the process that started it.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import time
from array import array

from .read import STATUSES, TYPE_CHECKING, ProcessRead, read_process

if TYPE_CHECKING:
    from collections.abc import Iterable

LENGTH = struct.Struct("<I")
REQUEST_HEAD = struct.Struct("<BBH")
TASK = struct.Struct("<iiI")
RESULT = struct.Struct("<iBBBIIdII")
NO_KEY = 0xFFFFFFFF
Task = tuple[int, int, bytes | None]  # pid, fd count, expected cache key


def encode_request(procfs: str, want_key: bool, tasks: Iterable[Task]) -> bytes:
    path = os.fsencode(procfs)
    parts, tasks = [REQUEST_HEAD.pack(want_key, 0, len(path)), path, b""], list(tasks)
    parts[2] = LENGTH.pack(len(tasks))
    for pid, fds, key in tasks:
        parts.append(TASK.pack(pid, fds, NO_KEY if key is None else len(key)))
        if key is not None:
            parts.append(key)
    payload = b"".join(parts)
    return LENGTH.pack(len(payload)) + payload


def decode_request(payload: bytes) -> tuple[str, bool, list[Task]]:
    want_key, _, size = REQUEST_HEAD.unpack_from(payload)
    pos = REQUEST_HEAD.size
    procfs = os.fsdecode(payload[pos : pos + size])
    pos += size
    (n,) = LENGTH.unpack_from(payload, pos)
    pos += LENGTH.size
    tasks: list[Task] = []
    for _ in range(n):
        pid, fds, keylen = TASK.unpack_from(payload, pos)
        pos += TASK.size
        key = None
        if keylen != NO_KEY:
            key, pos = payload[pos : pos + keylen], pos + keylen
        tasks.append((pid, fds, key))
    return procfs, bool(want_key), tasks


def encode_results(results: list[ProcessRead]) -> bytes:
    parts = [LENGTH.pack(len(results))]
    for r in results:
        key = r.key or b""
        parts.append(RESULT.pack(r.pid, STATUSES.index(r.status), r.unchanged, r.sockets.itemsize,
                                 r.scanned_fds, r.vanished_fds, r.since, NO_KEY if r.key is None else len(key),
                                 len(r.sockets)))
        parts.append(key)
        parts.append(r.sockets.tobytes())
    payload = b"".join(parts)
    return LENGTH.pack(len(payload)) + payload


def decode_results(payload: bytes) -> list[ProcessRead]:
    (n,) = LENGTH.unpack_from(payload)
    pos, out = LENGTH.size, []
    view = memoryview(payload)
    for _ in range(n):
        pid, status, unchanged, itemsize, scanned, vanished, since, keylen, count = RESULT.unpack_from(payload, pos)
        pos += RESULT.size
        key = None
        if keylen != NO_KEY:
            key, pos = payload[pos : pos + keylen], pos + keylen
        sockets = array("I" if itemsize == 4 else "Q")
        sockets.frombytes(view[pos : pos + count * itemsize])
        pos += count * itemsize
        out.append(ProcessRead(pid, STATUSES[status], sockets, bool(unchanged), key, since, scanned, vanished))
    return out


def read_exactly(fd: int, size: int, deadline: float | None = None) -> bytes | None:
    """``size`` bytes from ``fd``, or None at EOF (the other end is gone); with a ``deadline``
    (time.monotonic()), TimeoutError once it passes."""
    chunks, left = [], size
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not poller.poll(wait * 1000):
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(rfd: int, wfd: int, parent: int) -> None:
    """Answer requests until EOF on ``rfd`` or until ``parent`` is no longer our parent."""
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    while True:
        if not poller.poll(1000):
            if os.getppid() != parent:
                return
            continue
        head = read_exactly(rfd, LENGTH.size)
        payload = read_exactly(rfd, LENGTH.unpack(head)[0]) if head else None
        if payload is None:
            return
        procfs, want_key, tasks = decode_request(payload)
        write_all(wfd, encode_results([_read(procfs, want_key, task) for task in tasks]))


def _read(procfs: str, want_key: bool, task: Task) -> ProcessRead:
    pid, fds, key = task
    try:
        return read_process(procfs, pid, fds, want_key=want_key, expected=key)
    except OSError:  # not vanished/denied: the exporter reads it again and reports what it gets
        return ProcessRead(pid, "failed")


def main() -> None:
    """Entry point in the worker process: ``sys.argv[1]`` is the exporter's pid."""
    try:  # (no contextlib.suppress: every module imported here is resident in every worker)
        with open("/proc/self/comm", "w") as f:
            f.write("socket-owners")  # what ps and top show; the exporter's own stays
    except OSError:
        pass
    try:
        serve(sys.stdin.fileno(), sys.stdout.fileno(), int(sys.argv[1]))
    except (BrokenPipeError, KeyboardInterrupt):  # the exporter is gone, or Ctrl-C reached its group
        return
