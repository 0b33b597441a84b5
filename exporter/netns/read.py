"""``network_namespaces: all``: read the socket tables of every network namespace on the host.

Per namespace found by :mod:`.discover` (the exporter's own is read by the caller, as in ``own``
mode), in this order of preference:

1. ``netlink``: a :mod:`.setns` worker thread enters the namespace and runs the usual
   :class:`~exporter.sources.select.TableReader` there (so ``source: auto`` still falls back per table to
   ``/proc/PID/net/*`` of a process inside when sock_diag is refused), then returns home;
2. ``proc``: when ``setns`` is refused (no CAP_SYS_ADMIN) or with ``source: proc``,
   ``/proc/PID/net/{tcp,...}`` of a process inside, which shows that process's namespace and needs
   no capability beyond reading /proc. Logged once;
3. ``vanished``: no process and no name holds it any more (it died between discovery and read):
   left out, not a failure, no series;
4. ``denied``: it exists but neither way is allowed: the scrape's ``namespaces`` stage fails, since
   the node's totals then miss its sockets; ``failed``: a read error inside it, the same.

Before dumping, a reader reads the namespace's O(1) ``sockstat`` counters and skips the tables they
prove empty (exporter/netns/sockstat.py): every TCP dump walks the host-wide hash, so a skipped one
saves as much as the whole host holds.

Why read identity here: the namespace's lowest pid is at hand, and its ``/proc/PID/cgroup`` names
the pod or container (exporter/netns/identity.py). A non-empty one is cached per (namespace, pid):
a process does not change pods (an empty one is read again: the runtime may not have moved it yet).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..model.stage import Stage, StageTimer
from ..model.table import SocketTable, SourceError, SourceUnavailable, Table
from ..model.tags import Result, Source
from ..sources import procfs
from ..sources.select import TableReader
from . import sockstat
from .discover import Namespace, NamespaceDenied, NamespaceGone, alive, discover, open_netns, pid_in
from .identity import HOST, Identity, parse_cgroup, parse_pod_log_dirs
from .setns import Job, NetnsWorkers, SetnsDenied

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The reading thread's own view of /proc/net: after setns, the namespace it entered.
THREAD_NET = "/proc/thread-self/net"
POD_LOGS = "/var/log/pods"


@dataclass
class NamespaceRead:
    """One namespace's tables this scrape, how they were read and who lives there."""

    inode: int
    result: Result
    identity: Identity = HOST
    pod: tuple[str, str] = ("", "")  # (Kubernetes namespace, pod name) from /var/log/pods, if there
    tables: list[SocketTable] = field(default_factory=list)
    served: list[Table] = field(default_factory=list)
    source_of: dict[Table, Source] = field(default_factory=dict)  # the source that served each table read
    own: bool = False
    error: str = ""
    skipped: int = 0  # tables not dumped because sockstat proved them empty (netns/sockstat.py)
    #: (table, socket type, status) -> sockets, non-zero only; filled once counted, tables then dropped
    counts: dict[tuple[Table, int, str], int] = field(default_factory=dict)


class EveryNamespace(Generic[T]):
    """Reads every other namespace each scrape; keeps only caches keyed by live namespaces.

    ``inside`` (the pipeline's views) runs on the thread that read a namespace, right after the read,
    given the read and whether that thread is in the namespace (setns) or read it from outside
    (/proc/PID/net); its results come back beside the reads, keyed by inode.
    """

    def __init__(self, source: str, procfs_root: str, tables: Sequence[Table], own_inode: int,
                 threads: int = 2, pod_logs: str = POD_LOGS, detail: tuple[bool, bool] = (False, False),
                 inside: Callable[[NamespaceRead, bool], T] | None = None) -> None:
        self.source, self.procfs, self.tables = source, procfs_root, tuple(tables)
        self.own_inode, self.pod_logs = own_inode, pod_logs
        self.detail, self.inside = detail, inside  # inet detail columns for the views (pipeline/views.py)
        self._inside: dict[int, T] = {}
        self.workers = NetnsWorkers(threads)
        self._readers: dict[int, TableReader] = {}  # per namespace: fallbacks are logged once each
        self._identity: dict[tuple[int, int], Identity] = {}
        self._setns_denied_logged = False
        weakref.finalize(self, self.workers.close)  # a reload builds a new reader: stop the old threads

    def own_read(self, tables: list[SocketTable], source_of: dict[Table, Source], stages: list[Stage]) -> NamespaceRead:
        """Our own namespace, read by the caller's TableReader exactly as in ``own`` mode."""
        result = _result(all(s.success for s in stages), source_of)
        return NamespaceRead(self.own_inode, result, tables=tables, served=list(source_of), source_of=source_of,
                             own=True)

    def read(self, stages: list[Stage]) -> tuple[list[NamespaceRead], dict[int, T]]:
        """Every namespace but our own, read, and what ``inside`` returned for each; the ``namespaces``
        stage fails on denied or failed ones."""
        timer = StageTimer(stages, "namespaces")
        self._inside = {}
        found = discover(self.procfs).namespaces
        found.pop(self.own_inode, None)
        self._prune(found)
        pods = self._pod_names()
        jobs: list[Job[NamespaceRead]] = []
        fds: list[int] = []
        pending: list[Namespace] = []
        out: list[NamespaceRead] = []
        for ns in found.values():
            if self.source == Source.PROC:
                jobs.append(Job(None, lambda ns=ns: self._read_proc(ns)))  # type: ignore[misc]
                pending.append(ns)
                continue
            try:
                fd, pid = open_netns(self.procfs, ns)
            except NamespaceGone:
                out.append(NamespaceRead(ns.inode, Result.VANISHED))
                continue
            except NamespaceDenied:
                jobs.append(Job(None, lambda ns=ns: self._read_proc(ns)))  # type: ignore[misc]
                pending.append(ns)
                continue
            fds.append(fd)
            jobs.append(Job(fd, lambda ns=ns, pid=pid: self._read_netlink(ns, pid)))  # type: ignore[misc]
            pending.append(ns)
        try:
            results = self.workers.run(jobs)
        finally:
            for fd in fds:
                os.close(fd)
        for ns, res in zip(pending, results, strict=True):
            if isinstance(res, SetnsDenied):
                self._log_setns_denied(res)
                res = self._read_proc(ns)
            elif isinstance(res, BaseException):
                res = NamespaceRead(ns.inode, Result.FAILED, error=str(res))
            if res.result == Result.FAILED and not alive(self.procfs, ns):
                res = NamespaceRead(ns.inode, Result.VANISHED)  # torn down while we read it: not a failure
                self._inside.pop(ns.inode, None)
            elif res.result == Result.FAILED:
                log.error("netns %d: read failed%s", ns.inode, f": {res.error}" if res.error else "")
            out.append(res)
        for r in out:
            if r.result in (Result.NETLINK, Result.PROC, Result.FAILED):
                r.identity = self._identity_of(found[r.inode])
                r.pod = pods.get(r.identity.pod_uid, ("", "")) if r.identity.pod_uid else ("", "")
        timer.success = not any(r.result in (Result.DENIED, Result.FAILED) for r in out)
        timer.done()
        inside, self._inside = self._inside, {}
        return out, inside

    def _read_netlink(self, ns: Namespace, pid: int | None) -> NamespaceRead:
        """Runs on a worker thread inside ``ns``: the configured source, /proc/PID/net as fallback."""
        reader = self._readers.get(ns.inode)
        if reader is None:
            source = self.source if pid is not None else Source.NETLINK  # no process: no /proc/PID/net
            reader = self._readers[ns.inode] = TableReader(source, self.procfs, self.tables, *self.detail)
        reader.procfs_root = f"{self.procfs}/{pid}"
        stages: list[Stage] = []
        stat = sockstat.read(THREAD_NET)  # first: before any socket of ours exists in this namespace
        skipped: set[Table] = set()
        if stat is not None and Table.UNIX in self.tables:
            reader.tables = (Table.UNIX,)  # UNIX first (its hash is per namespace: cheap) to account for
            tables, source_of, _ = reader.read(stages)  # every socket before skipping a TCP table
            unix = sum(len(t) for t in tables) if Table.UNIX in source_of else None
            skipped = sockstat.empty_tables(stat, unix) & set(self.tables)
            reader.tables = tuple(t for t in self.tables if t is not Table.UNIX and t not in skipped)
            more, more_source, _ = reader.read(stages)
            tables += more
            source_of.update(more_source)
        else:
            reader.tables = self.tables
            tables, source_of, _ = reader.read(stages)
        result = _result(all(s.success for s in stages), source_of)
        out = NamespaceRead(ns.inode, result, tables=tables, served=[*source_of, *skipped], source_of=source_of,
                            skipped=len(skipped))
        if self.inside is not None:  # here, inside the namespace: its listener dump and sysctls
            self._inside[ns.inode] = self.inside(out, True)
        return out

    def _read_proc(self, ns: Namespace) -> NamespaceRead:
        """``/proc/PID/net/*`` through the first pid still in ``ns`` (no setns needed)."""
        denied = False
        for pid in ns.pids:
            try:
                tables = procfs.read_tables(f"{self.procfs}/{pid}", self.tables, self.detail[1])
            except (SourceError, OSError) as exc:
                if not pid_in(self.procfs, pid, ns.inode):
                    continue  # exited mid-read: try the next process in it
                cause = exc.__cause__ if isinstance(exc, SourceError) else exc
                if isinstance(cause, PermissionError):
                    denied = True
                    continue
                if isinstance(exc, SourceUnavailable) and not os.path.exists(f"{self.procfs}/{pid}/net"):
                    continue
                return NamespaceRead(ns.inode, Result.FAILED, error=f"/proc/{pid}/net: {exc}")
            # the pid may have left (and its number been reused) while we read: then this is not ns
            if pid_in(self.procfs, pid, ns.inode):
                out = NamespaceRead(ns.inode, Result.PROC, tables=tables, served=list(self.tables),
                                    source_of=dict.fromkeys(self.tables, Source.PROC))
                if self.inside is not None:  # not inside: no sysctls of its own (ephemeral unavailable)
                    self._inside[ns.inode] = self.inside(out, False)
                return out
        if not ns.pids and ns.path is not None and os.path.exists(ns.path):
            denied = True  # a named namespace with no process in it: only setns could read it
        return NamespaceRead(ns.inode, Result.DENIED if denied else Result.VANISHED)

    def _identity_of(self, ns: Namespace) -> Identity:
        for pid in ns.pids:
            cached = self._identity.get((ns.inode, pid))
            if cached is not None:
                return cached
            try:
                with open(f"{self.procfs}/{pid}/cgroup") as f:
                    identity = parse_cgroup(f.read())
            except OSError:
                continue
            if identity != HOST:  # a process may yet be moved into its pod's cgroup: ask again next time
                self._identity[(ns.inode, pid)] = identity
            return identity
        return HOST

    def _pod_names(self) -> dict[str, tuple[str, str]]:
        try:
            return parse_pod_log_dirs(os.listdir(self.pod_logs))
        except OSError:
            return {}

    def _prune(self, live: dict[int, Namespace]) -> None:
        for inode in [i for i in self._readers if i not in live]:
            del self._readers[inode]
        for key in [k for k in self._identity if k[0] not in live or k[1] not in live[k[0]].pids]:
            del self._identity[key]

    def _log_setns_denied(self, exc: OSError) -> None:
        if not self._setns_denied_logged:
            self._setns_denied_logged = True
            log.warning("setns into other network namespaces refused (%s; needs CAP_SYS_ADMIN): reading "
                        "/proc/PID/net/* of a process in each instead", exc)


def merge(own: NamespaceRead, others: Sequence[NamespaceRead]) -> tuple[list[SocketTable], set[Table]]:
    """All tables of every namespace read (vanished ones hold none) and every table any one served.

    Socket inodes come from one filesystem (sockfs) for the whole host, so the merged tables can go
    through the one owner scan and the per-process counting unchanged.
    """
    tables = list(own.tables)
    served = set(own.served)
    for r in others:
        tables.extend(r.tables)
        served.update(r.served)
    return tables, served


def _result(ok: bool, source_of: Mapping[Table, Source]) -> Result:
    """A namespace read failed, or was served (in part) by /proc, or by netlink alone."""
    return Result.FAILED if not ok else Result.PROC if Source.PROC in source_of.values() else Result.NETLINK
