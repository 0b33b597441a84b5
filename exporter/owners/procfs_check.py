"""Can the owner scan see any process in ``--path.procfs``? If not, the ``owners`` stage fails.

Why: the scan lists ``{procfs}`` and reads each ``PID/fd``. An empty directory (a ``/host/proc``
volume that was never mounted), a wrong path, or a procfs where no fd table is readable all give a
scan that finds nothing, and "nothing found" would put every socket in ``pid="unowned"`` and report
success: a failure dressed up as data. So the pipeline asks one question first, every scrape:

    does the procfs list at least one process whose fd table we can open?

The exporter itself is such a process whenever it can see its own processes there, and then the
check costs one ``open``: the kernel resolves ``{procfs}/self`` in the pid namespace *of that procfs
mount*, so in a container with ``--path.procfs=/host/proc`` (the host's procfs, where our pid is
another number) ``/host/proc/self`` is still us, under our host pid. When ``self`` does not resolve
(a fixture or copied tree, or the procfs of a pid namespace we are not in) any listed pid whose
``fd`` directory opens will do; the walk stops at the first.

Why not "self is found" alone: a fixture tree has no ``self``, and in a procfs of a pid namespace
that does not hold us, a root exporter still reads real fd tables. Why not "the scan found at least
one process" alone: the scan does not run when no socket has an inode to look for (no sockets, or
every table failed), and stops early once every inode is placed, so it cannot tell an empty procfs
from nothing to do. (The pipeline checks that too, when the scan ran: see Pipeline.collect.)
"""

from __future__ import annotations

import os


def _opens(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    os.close(fd)
    return True


def owner_scan_blocked(procfs: str) -> str | None:
    """None when ``procfs`` lists a process whose fd table we can open, else why not, in one line.

    >>> import tempfile
    >>> owner_scan_blocked("/proc") is None
    True
    >>> owner_scan_blocked("/nonexistent/proc")
    'cannot list /nonexistent/proc: No such file or directory'
    >>> with tempfile.TemporaryDirectory() as empty:
    ...     owner_scan_blocked(empty).endswith("lists no process whose fd table can be read (empty or unmounted?)")
    True
    """
    if _opens(f"{procfs}/self/fd"):
        return None
    try:
        with os.scandir(procfs) as entries:
            for entry in entries:
                if entry.name.isascii() and entry.name.isdigit() and _opens(f"{entry.path}/fd"):
                    return None
    except OSError as exc:
        return f"cannot list {procfs}: {exc.strerror or exc}"
    return f"{procfs} lists no process whose fd table can be read (empty or unmounted?)"
