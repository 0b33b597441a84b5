"""Find every network namespace on the host: the ones processes are in, and the named ones.

A network namespace is known by the inode of its nsfs file: ``/proc/PID/ns/net`` of every process
in it, and the bind mount ``/run/netns/NAME`` that ``ip netns add`` makes, all stat to the same
inode (what ``stat -L -c %i /proc/PID/ns/net`` prints). So discovery is one ``stat`` per pid,
deduplicated by inode, plus one per entry of ``/run/netns``::

    /proc/1/ns/net      -> 4026531840   (the host's)
    /proc/4242/ns/net   -> 4026532301   (a pod's pause process)
    /proc/4300/ns/net   -> 4026532301   (a container of the same pod: same namespace)
    /run/netns/blue     -> 4026532410   (named, maybe with no process in it)
    /run/netns/new      -> 1466515      (not nsfs: the empty file `ip netns add` mounts onto, not yet
                                         mounted, or already unmounted by `ip netns del`: skipped)

gives three namespaces; 4026532301 remembers pids [4242, 4300] (ascending, so the first is the
oldest-numbered process, usually the pod's sandbox) for /proc fallback reads and identity labels.

Why keep several pids: the one we pick may exit before we read through it; the next one in the
same namespace is as good. Why check the inode after opening: a pid can exit and be reused by a
process in another namespace between discovery and read; :func:`open_netns` compares the opened
file's inode with the expected one and skips a pid that moved.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

RUN_NETNS = "/run/netns"
_GONE = {errno.ENOENT, errno.ESRCH}
_DENIED = {errno.EACCES, errno.EPERM}


@dataclass
class Namespace:
    inode: int
    pids: list[int] = field(default_factory=list)
    path: str | None = None  # a named namespace's bind mount, e.g. /run/netns/blue
    dev: int = 0  # st_dev of the nsfs, to tell the bind mount from the empty file under it


@dataclass
class Discovery:
    namespaces: dict[int, Namespace]
    denied_pids: int = 0  # /proc/PID/ns/net not stat-able: without CAP_SYS_PTRACE, others' processes


def discover(procfs: str, run_netns: str = RUN_NETNS) -> Discovery:
    """Every namespace a process or a ``run_netns`` entry is in, keyed by inode (module docstring)."""
    found: dict[int, Namespace] = {}
    denied = 0
    pids = sorted(int(n) for n in os.listdir(procfs) if n.isascii() and n.isdigit())
    for pid in pids:
        try:
            inode = os.stat(f"{procfs}/{pid}/ns/net").st_ino
        except OSError as exc:
            if exc.errno in _DENIED:
                denied += 1
            continue  # exited (ENOENT/ESRCH), a kernel thread (no ns), or denied: counted
        ns = found.get(inode)
        if ns is None:
            ns = found[inode] = Namespace(inode)
        ns.pids.append(pid)
    try:
        names = sorted(os.listdir(run_netns))
        nsfs = os.stat(f"{procfs}/self/ns/net").st_dev
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        names = []
    for name in names:
        path = f"{run_netns}/{name}"
        try:
            st = os.stat(path)
        except OSError:
            continue  # deleted meanwhile
        if st.st_dev != nsfs:
            continue  # not (or no longer) a namespace: `ip netns add` mounts onto an empty file it made
        inode = st.st_ino
        ns = found.setdefault(inode, Namespace(inode))
        if ns.path is None:
            ns.path, ns.dev = path, st.st_dev
    return Discovery(found, denied)


def own_inode(procfs: str = "/proc") -> int:
    """The namespace of this process (its thread-group leader): the one ``own`` mode reads."""
    return os.stat(f"{procfs}/self/ns/net").st_ino


def pid_in(procfs: str, pid: int, inode: int) -> bool:
    """True while ``pid`` is still in namespace ``inode`` (it may have exited or been reused)."""
    try:
        return os.stat(f"{procfs}/{pid}/ns/net").st_ino == inode
    except OSError:
        return False


def alive(procfs: str, ns: Namespace) -> bool:
    """True while a process or the name still holds ``ns`` (after a failed read: vanished or not?)."""
    if any(pid_in(procfs, pid, ns.inode) for pid in ns.pids):
        return True
    try:
        st = os.stat(ns.path) if ns.path is not None else None
    except OSError:
        return False
    return st is not None and (st.st_ino, st.st_dev) == (ns.inode, ns.dev)


class NamespaceGone(Exception):
    """No path to the namespace opens any more: every process left it and no name holds it."""


class NamespaceDenied(Exception):
    """The namespace exists but we may not open it (no CAP_SYS_PTRACE over its processes)."""


def open_netns(procfs: str, ns: Namespace) -> tuple[int, int | None]:
    """An open fd on namespace ``ns`` (checked to be that inode) and the pid it came through (None:
    through its name). Raises NamespaceGone or NamespaceDenied."""
    denied = False
    candidates: list[tuple[str, int | None]] = [(f"{procfs}/{pid}/ns/net", pid) for pid in ns.pids]
    if ns.path is not None:
        candidates.append((ns.path, None))
    for path, pid in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            denied = denied or exc.errno in _DENIED
            continue
        st = os.fstat(fd)
        if st.st_ino == ns.inode and (pid is not None or st.st_dev == ns.dev):
            return fd, pid
        os.close(fd)  # the pid was reused by a process in another namespace
    if denied:
        raise NamespaceDenied(f"netns {ns.inode}: permission denied")
    raise NamespaceGone(f"netns {ns.inode}: no process or name holds it any more")
