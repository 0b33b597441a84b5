"""The socket sources and the policy choosing between them: sock_diag netlink first, /proc/net after.

* :mod:`.netlink` dumps each table over sock_diag (decoded by :mod:`.netlink_wire`);
* :mod:`.procfs` parses ``/proc/net/{tcp,tcp6,udp,udp6,unix}``;
* :class:`TableReader` is the ``source:`` setting. ``auto`` falls back to /proc per table only when
  netlink is *unavailable* (refused by a seccomp filter or an LSM, diag module missing), logs that once
  per table for the life of the process and reports ``fallback``; any other netlink error fails the
  ``netlink`` stage and leaves that table out, because a kernel error says nothing about how many
  sockets exist and must never read as "0 sockets". ``netlink`` or ``proc`` use that source alone.

When the fallback fails too (netlink refused, and /proc/net not mounted or unreadable), nothing
served those tables, so both stages report failure: ``proc`` because it could not read them, and
``netlink`` because an unavailable source is only excused when the fallback did its job.
``fallback`` still says a fallback was *attempted* this scrape (``socket_netlink_fallback 1``);
``socket_scrape_source`` says which tables it actually served (none, here).

Every table a source hands over is checked for TCP states we cannot name (a newer kernel's): such a
table fails its source's stage and is left out, like any other table that could not be read, while
the others are served (:func:`exporter.model.table.unknown_tcp_state`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..model.stage import Stage, StageTimer
from ..model.table import SocketTable, SourceError, SourceUnavailable, Table, unknown_tcp_state
from ..model.tags import Source
from . import netlink, procfs

log = logging.getLogger(__name__)


def checked(read: list[SocketTable]) -> list[SocketTable]:
    """``read`` (the tables of one kernel table) unchanged, or SourceError naming a state we cannot name.

    >>> from array import array
    >>> checked([SocketTable(Table.TCP4, 1, b"\\x0e", array("I", [7]))])
    Traceback (most recent call last):
    exporter.model.table.SourceError: tcp: unknown TCP state 14 (a kernel newer than this exporter?)
    """
    for st in read:
        if (state := unknown_tcp_state(st)) is not None:
            raise SourceError(f"{st.table.value}: unknown TCP state {state} (a kernel newer than this exporter?)")
    return read


class TableReader:
    """Reads the configured tables with the configured source; remembers which fallbacks it logged."""

    def __init__(self, source: str, procfs_root: str, tables: Sequence[Table], detail: bool = False,
                 proc_detail: bool = False) -> None:
        self.source, self.procfs_root, self.tables = source, procfs_root, tuple(tables)
        # Inet detail columns (ports, queues, addresses): decoded only for the views that need them,
        # which are TCP-only.
        self.detail, self.proc_detail = detail, proc_detail
        self._fallback_logged: set[Table] = set()
        if source != Source.PROC:
            netlink.expose_tables(self.tables)

    def read(self, stages: list[Stage]) -> tuple[list[SocketTable], dict[Table, Source], bool]:
        """(tables read, the source that served each table, whether ``auto`` fell back to /proc)."""
        tables: list[SocketTable] = []
        source_of: dict[Table, Source] = {}
        to_proc: list[Table] = list(self.tables) if self.source == Source.PROC else []
        if self.source != Source.PROC:
            read, served, to_proc = self._read_netlink(stages)
            tables += read
            source_of.update(dict.fromkeys(served, Source.NETLINK))
        if to_proc:
            read, from_proc = self._read_proc(stages, to_proc)
            tables += read
            source_of.update(dict.fromkeys(from_proc, Source.PROC))
        fallback = self.source == "auto" and bool(to_proc)  # attempted (module docstring)
        if fallback and any(t not in source_of for t in to_proc):  # unavailable, and not replaced
            next(s for s in stages if s.name == Source.NETLINK).success = False
        return tables, source_of, fallback

    def _read_netlink(self, stages: list[Stage]) -> tuple[list[SocketTable], list[Table], list[Table]]:
        """Returns (tables read, tables served, tables to try from /proc)."""
        timer, read, served, to_proc = StageTimer(stages, Source.NETLINK), [], [], []
        unavailable: dict[Table, SourceUnavailable] = {}
        for table in self.tables:
            try:
                read.extend(checked(netlink.read_tables([table], self.detail and table.has_tcp_states)))
                served.append(table)
            except SourceUnavailable as exc:
                unavailable[table] = exc
            except (SourceError, OSError) as exc:
                timer.success = False
                log.error("netlink source failed for %s: %s", table.value, exc)
        if unavailable and self.source == "auto":
            to_proc = list(unavailable)
            new = [t for t in unavailable if t not in self._fallback_logged]
            if new:  # once per table for the life of the process, in one line
                self._fallback_logged.update(new)
                log.warning("netlink unavailable (%s); reading %s from /proc/net instead",
                            unavailable[new[0]], ", ".join(t.value for t in new))
        elif unavailable:
            timer.success = False
            log.error("netlink source unavailable for %s: %s", ", ".join(t.value for t in unavailable),
                      next(iter(unavailable.values())))
        timer.done()
        return read, served, to_proc

    def _read_proc(self, stages: list[Stage], wanted: Sequence[Table]) -> tuple[list[SocketTable], list[Table]]:
        timer, read, served = StageTimer(stages, Source.PROC), [], []
        for table in wanted:
            try:
                read.extend(checked(procfs.read_tables(self.procfs_root, [table],
                                                       self.proc_detail and table.has_tcp_states)))
                served.append(table)
            except (SourceError, OSError) as exc:
                timer.success = False
                log.error("/proc source failed for %s: %s", table.value, exc)
        timer.done()
        return read, served
