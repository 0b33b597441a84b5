"""Reuse what the last owner scan read from a process's fd table, when that table provably did not change.

Why: the owner scan costs one ``readlink`` per open fd of every process it visits, kernel time
that no Python trick removes: 100k socket fds cost a good fraction of a CPU-second, and a host with
hundreds of processes pays again for fds that are not even sockets. Most of those processes are
often idle between two scrapes, and a process that did not run cannot have changed its fd table.
(When they all run, the scan is parallel instead: exporter/owners/pool.py.)

How that is decided, per process, from a few small files (cheaper than its fds when it holds many):

* ``/proc/PID/fd`` ``st_size`` is its number of open fds (Linux >= 6.2; without it the cache is off);
* ``/proc/PID/task/TID/schedstat`` of every thread: nanoseconds run and number of times scheduled.
  A thread that ran at all since the last read has a larger value in one of them, since the kernel
  brings them up to date when the thread leaves the CPU, at every scheduler tick while it runs
  (<= 10 ms) and, on a nohz_full CPU, at least once a second (``sched_tick_remote``).

The key (fd count, then tid + schedstat line per thread) is read BEFORE the fds are listed. If, at
least MIN_AGE seconds later, the same key is read again, no thread of the process has run in between
(a new or exited thread changes the tid list; a reused pid brings a new thread whose run time would
have to match to the nanosecond), so the socket inodes listed then are still exactly its sockets, and
the scan uses them instead of readlink-ing every fd. MIN_AGE (2 s) covers the tick delay above; a
scrape sooner than that reads the process again (keeping the older entry if nothing changed, so
scrapes every second still hit). Every entry is dropped after MAX_AGE (+ a per-pid spread so they do
not expire together): the one way a table changes while its process sleeps is another process
sharing it (``clone(CLONE_FILES)`` without ``CLONE_THREAD``, which is rare), and that bounds how
long such a change can go unseen. All of a process's socket inodes are kept, not only the wanted ones
(a socket it holds may enter the dump later), as an ``array('I')``: 4 bytes per socket.

A process with few fds (< MIN_FDS) or many threads (more than one per 8 fds) is simply read: its
key would cost about as much as its fds. The cache never decides ownership on its own: the scan
still walks pids in ascending order and takes the first holder, so cached and fresh answers agree.
A key may be read in a scan worker process (exporter/owners/worker.py): CLOCK_MONOTONIC is
system-wide, so its times compare with the exporter's.
"""

from __future__ import annotations

import os
from array import array

MIN_FDS = 32
FDS_PER_THREAD = 8
MIN_AGE = 2.0
MAX_AGE = 60.0
MAX_AGE_SPREAD = 30.0


class Entry:
    """One process as a full read found it: the key read before listing, and its socket inodes.
    (Not a dataclass: a scan worker imports this module, and dataclasses costs it megabytes.)"""

    __slots__ = ("fds", "key", "since", "sockets")

    def __init__(self, key: bytes, fds: int, sockets: array[int], since: float) -> None:
        self.key = key
        self.fds = fds
        self.sockets = sockets  # every socket inode it held, in fd order
        self.since = since  # monotonic time this key was first read with these sockets


def read_key(task_dir: str, fds: int) -> bytes | None:
    """The process's key (module docstring), or None when it is not worth caching or not readable.

    >>> read_key("/nonexistent/task", 100) is None
    True
    """
    if fds < MIN_FDS:
        return None
    try:
        tids = sorted(os.listdir(task_dir))
        if len(tids) > max(1, fds // FDS_PER_THREAD):
            return None
        parts = [str(fds).encode()]
        for tid in tids:
            with open(f"{task_dir}/{tid}/schedstat", "rb", buffering=0) as f:
                parts.append(tid.encode() + b":" + f.read())
    except OSError:  # vanished, denied, or a kernel without schedstat: just read the fds
        return None
    return b" ".join(parts)


class OwnerCache:
    """Entries by pid, for one procfs. Used by one scan at a time (the collection is single-flight);
    were two scans to overlap, each entry is still replaced whole, key and sockets together."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}

    def usable(self, pid: int, fds: int, now: float) -> Entry | None:
        """The entry worth validating for ``pid`` (old enough, not expired, same fd count), if any."""
        entry = self.entries.get(pid)
        if entry is None or entry.fds != fds:
            return None
        age = now - entry.since
        if age < MIN_AGE or age > MAX_AGE + pid % MAX_AGE_SPREAD:
            return None
        return entry

    def store(self, pid: int, key: bytes | None, fds: int, sockets: array[int], since: float) -> None:
        """Remember a full read; an unchanged young entry keeps its age so that it can reach MIN_AGE."""
        if key is None:
            self.entries.pop(pid, None)
            return
        old = self.entries.get(pid)
        if old is not None and old.key == key and old.sockets == sockets and since - old.since < MIN_AGE:
            return
        self.entries[pid] = Entry(key, fds, sockets, since)

    def prune(self, live: set[int]) -> None:
        """Forget processes that are gone (their pid may come back as another process)."""
        for pid in self.entries.keys() - live:
            del self.entries[pid]
