"""inode -> pid over the fake /proc trees (tests/fixtures/procfs) and over the real /proc."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from exporter.owners.scan import OwnerScan, parse_comm, scan_owners, socket_inode
from tests._golden import PROCFS_FIXTURES
from tests._require import require_root

BASIC, SHARED = PROCFS_FIXTURES / "basic", PROCFS_FIXTURES / "shared"
NOBODY_HOLDS = 2**32 - 1


def inode_at(link: Path) -> int:
    """The socket inode a fixture fd symlink points at."""
    inode = socket_inode(os.readlink(link))
    assert inode is not None, link
    return inode


@pytest.mark.parametrize(("link", "inode"), [
    ("socket:[12345]", 12345), ("socket:[4294967295]", 2**32 - 1), ("socket:[0]", 0),
    ("socket:[]", None), ("socket:[12a]", None), ("socket:[ 1]", None), ("socket:[1_0]", None),
    ("socket:[\u0663]", None), ("socket:[1", None), ("pipe:[1]", None), ("/dev/null", None),
    ("anon_inode:[eventfd]", None), ("/tmp/socket:[1]", None), ("", None),
])
def test_socket_inode(link: str, inode: int | None) -> None:
    assert socket_inode(link) == inode


@pytest.mark.parametrize(("raw", "name"), [
    (b"nginx\n", "nginx"), (b"nginx", "nginx"), (b"", ""),
    (b"caf\xc3\xa9\n", "caf\u00e9"), (b"cut\xc3\n", "cut\ufffd"),  # 15-byte cut inside a character
    (b'say "hi" \\o/\n', 'say "hi" \\o/'),  # kept: the exposition format escapes them
    (b"two\nlines\n", "two?lines"), (b"tab\there\r\x7f\n", "tab?here??"), (b"end\n\n", "end?"),
])
def test_parse_comm(raw: bytes, name: str) -> None:
    assert parse_comm(raw) == name


def test_basic_owners_comm_and_counters() -> None:
    listen4, listen6 = inode_at(BASIC / "120/fd/0"), inode_at(BASIC / "120/fd/2")
    unix_listen, udp6 = inode_at(BASIC / "1/fd/3"), inode_at(BASIC / "777/fd/0")
    scan = scan_owners(str(BASIC), {listen4, listen6, unix_listen, udp6, NOBODY_HOLDS, 0})
    assert scan.owner == {listen4: 120, listen6: 120, unix_listen: 1, udp6: 777}
    assert scan.comm == {1: "systemd", 120: "nginx", 777: 'bad\ufffd"q?x'}  # not 2 or 4242: own nothing
    assert (scan.scanned_pids, scan.denied_pids, scan.vanished_pids) == (5, 0, 1)  # 9999 has no fd dir
    pids = ("1", "2", "120", "777", "4242")
    assert scan.scanned_fds == sum(len(os.listdir(BASIC / pid / "fd")) for pid in pids)


def test_shared_socket_goes_to_lowest_pid() -> None:
    listen4, unix_listen, estab = (inode_at(SHARED / f) for f in ("120/fd/0", "120/fd/2", "300/fd/2"))
    assert inode_at(SHARED / "120/fd/3") == listen4  # one pid, two fds: still one owner
    wanted = {listen4, unix_listen, estab}
    assert scan_owners(str(SHARED), wanted).owner == {listen4: 120, unix_listen: 120, estab: 300}


@pytest.mark.parametrize(("root", "fd", "owner"), [(SHARED, "120/fd/0", 120), (BASIC, "1/fd/3", 1)])
def test_scan_stops_once_everything_is_placed(root: Path, fd: str, owner: int) -> None:
    inode = inode_at(root / fd)
    scan = scan_owners(str(root), {inode})
    assert scan.owner == {inode: owner}
    assert (scan.scanned_pids, scan.denied_pids, scan.vanished_pids) == (1, 0, 0)


@pytest.mark.parametrize("wanted", [set(), {0}, [0, 0]])
def test_nothing_wanted_reads_nothing(wanted: set[int]) -> None:
    assert scan_owners("/nonexistent/proc", wanted) == OwnerScan()


def test_unlistable_procfs_raises() -> None:
    with pytest.raises(FileNotFoundError, match="/nonexistent/proc"):
        scan_owners("/nonexistent/proc", {1})


def test_missing_comm_and_non_link_fd_are_tolerated(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    shutil.copytree(SHARED, root, symlinks=True)
    (root / "120" / "comm").unlink()
    (root / "120" / "fd" / "9").write_text("a regular file: readlink says EINVAL\n")
    (root / "self").mkdir()  # not a pid: ignored (and no fd/ inside, so no st_size fd-count skip)
    listen4 = inode_at(root / "120/fd/0")
    scan = scan_owners(str(root), {listen4, NOBODY_HOLDS})
    assert (scan.owner, scan.comm) == ({listen4: 120}, {})
    assert (scan.scanned_pids, scan.scanned_fds) == (2, 9)


def test_live_finds_this_process() -> None:
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
        wanted = {os.fstat(tcp.fileno()).st_ino, os.fstat(unix.fileno()).st_ino}
        scan = scan_owners("/proc", wanted)
        with open(f"/proc/{os.getpid()}/comm", "rb") as f:
            comm = parse_comm(f.read())
    assert scan.owner == dict.fromkeys(wanted, os.getpid())
    assert scan.comm == {os.getpid(): comm}


def test_live_inherited_socket_goes_to_the_lowest_pid() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        inode = os.fstat(server.fileno()).st_ino
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                 stdin=subprocess.PIPE, pass_fds=[server.fileno()])
        try:
            low, high = sorted((os.getpid(), child.pid))
            assert high != low and scan_owners("/proc", {inode}).owner == {inode: low}
        finally:
            child.communicate(timeout=10)


def test_live_unprivileged_scan_counts_denied_instead_of_raising() -> None:
    """A root-held socket seen by an uid-65534 child: root's fd dirs are unreadable to it."""
    require_root()
    with socket.create_server(("127.0.0.1", 0)) as server:
        inode = os.fstat(server.fileno()).st_ino
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: drop privileges, scan, report; never returns into pytest
            try:
                os.close(server.fileno())
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                scan = scan_owners("/proc", {inode})
                os.write(write_end, json.dumps([len(scan.owner), scan.denied_pids]).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as f:
            found, denied = json.loads(f.read() or b"[-1, -1]")
        os.waitpid(pid, 0)
    assert found == 0 and denied >= 1  # at least this pytest process (root) was denied


def test_live_processes_exiting_mid_scan_are_counted_not_raised() -> None:
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for p in [subprocess.Popen(["sleep", "0.001"]) for _ in range(20)]:
                p.wait()

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        deadline, vanished = time.monotonic() + 20, 0
        while not vanished and time.monotonic() < deadline:
            vanished += scan_owners("/proc", {NOBODY_HOLDS}).vanished_pids
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert vanished > 0
