"""Golden files for the fake /proc trees in tests/fixtures/procfs/<case>/expected.txt.

Why golden files: a fixture tree holds dozens of sockets; one reviewed text file per case shows every
(table, type, state, inode, owner) at once, and a diff in review shows exactly what a change altered.
``UPDATE_GOLDEN=1 pytest tests`` rewrites them (review the diff!); by default they are only compared.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from exporter.model.kinds import TABLE_ORDER
from exporter.model.table import SourceError, status_name
from exporter.owners.scan import scan_owners
from exporter.sources.procfs import read_tables

PROCFS_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "procfs"
CASES = sorted(p.name for p in PROCFS_FIXTURES.iterdir() if (p / "net").is_dir())
NOBODY = 2**32 - 1
HEADER = (
    "# read_tables + scan_owners over this fake /proc; regenerate: UPDATE_GOLDEN=1 pytest tests\n"
    "# TABLE TYPE STATUS(kernel st) INODE PID COMM   (pid - = no process holds it)\n"
)


def render_case(root: Path) -> str:
    """Everything the two modules report for one fixture tree, as sorted, stable text."""
    try:
        tables = read_tables(str(root), TABLE_ORDER)
    except SourceError as exc:
        return HEADER + f"{type(exc).__name__}: {str(exc).replace(str(root), '<procfs>')}\n"
    # An inode nobody holds keeps the scan from stopping early, so the counts below do not depend
    # on the order the fixture's filesystem lists fd dirs in (early stop has its own tests).
    wanted = {inode for st in tables for inode in st.inodes} | {NOBODY}
    scan = scan_owners(str(root), wanted)
    rows = []
    for st in tables:
        for state, inode in zip(st.states, st.inodes, strict=True):
            pid = scan.owner.get(inode)
            owner = "- -" if pid is None else f"{pid} {scan.comm.get(pid, '-')}"
            status = f"{status_name(st.table, state)}({state:#04x})"
            rows.append((TABLE_ORDER.index(st.table), st.sock_type, inode, state,
                         f"{st.table.name} {socket.SocketKind(st.sock_type).name} {status} {inode} {owner}"))
    body = "".join(row[-1] + "\n" for row in sorted(rows))
    stats = (f"# scan: scanned_pids={scan.scanned_pids} scanned_fds={scan.scanned_fds} "
             f"denied_pids={scan.denied_pids} vanished_pids={scan.vanished_pids} "
             f"vanished_fds={scan.vanished_fds}\n")
    return HEADER + body + stats


def assert_golden(case: str, actual: str) -> None:
    """Compare with ``<case>/expected.txt``; with UPDATE_GOLDEN=1 rewrite it instead."""
    path = PROCFS_FIXTURES / case / "expected.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest tests and review it"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{case}: output differs from {path} (UPDATE_GOLDEN=1 to accept)"
