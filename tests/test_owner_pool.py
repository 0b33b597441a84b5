"""The owner scan's worker pool (exporter/owners/pool.py) and what it reads (owners/read.py, owners/worker.py).

The pool must not change a single answer: every test compares it with an independent reference (a
psutil-style walk of /proc written here, or psutil itself inside a namespace) or with the in-process
scan, on live processes, including socket holders made to run between scans (the owner cache then
cannot help) and workers killed while a scan waits for them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.owners.cache import OwnerCache, read_key
from exporter.owners.pool import OwnerPool
from exporter.owners.read import ProcessRead, read_process, socket_inode
from exporter.owners.scan import begin_scan, scan_owners
from exporter.owners.worker import decode_request, decode_results, encode_request, encode_results
from tests import reference
from tests._golden import PROCFS_FIXTURES
from tests.benchmark.stir import stirred
from tests.exposition import owner_counts, run_once
from tests.population import Population
from tests.test_end_to_end import bound_only, psutil_as_owner_counts, stable

NOBODY_HOLDS = 2**32 - 1


@pytest.fixture
def pool() -> Iterator[OwnerPool]:
    """Three workers (more than this machine's CPUs is fine: the split is what is tested)."""
    p = OwnerPool(3)
    yield p
    p.close()


def reference_owners(wanted: set[int]) -> dict[int, int]:
    """inode -> lowest pid holding it, psutil-style: listdir + readlink by full path, all of /proc."""
    owner: dict[int, int] = {}
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if link.startswith("socket:[") and (inode := int(link[8:-1])) in wanted:
                owner.setdefault(inode, pid)
    return owner


def held_by(pids: list[int]) -> set[int]:
    return {i for pid in pids for i, _ in ((socket_inode(os.readlink(f"/proc/{pid}/fd/{n}")), 0)
                                           for n in os.listdir(f"/proc/{pid}/fd")) if i is not None}


def test_wire_format_round_trips() -> None:
    tasks = [(1, 10, None), (4242, 5000, b"5000 1:9 8 7"), (2**31 - 1, -1, b"")]
    assert decode_request(encode_request("/host/proc", True, tasks)[4:]) == ("/host/proc", True, tasks)
    reads = [ProcessRead(7, "ok", array("I", [1, 2**32 - 1]), False, b"k", 12.5, 3, 1),
             ProcessRead(8, "denied"), ProcessRead(9, "ok", array("Q", [2**40]), unchanged=False),
             ProcessRead(10, "ok", unchanged=True, key=b"x", since=1.0)]
    assert decode_results(encode_results(reads)[4:]) == reads


@pytest.mark.parametrize("root", ["basic", "shared"])
def test_pool_equals_in_process_on_fixture_trees(pool: OwnerPool, root: str) -> None:
    procfs = str(PROCFS_FIXTURES / root)
    wanted = {i for p in Path(procfs).glob("*/fd/*") if p.is_symlink()
              if (i := socket_inode(os.readlink(p))) is not None} | {NOBODY_HOLDS}
    here, pooled = scan_owners(procfs, wanted), scan_owners(procfs, wanted, pool=pool)
    assert pooled.owner == here.owner and pooled.comm == here.comm and here.owner
    assert (pooled.scanned_pids, pooled.denied_pids, pooled.vanished_pids, pooled.scanned_fds) == (
        here.scanned_pids, here.denied_pids, here.vanished_pids, here.scanned_fds)
    assert pooled.pooled_pids > 0


@pytest.fixture
def sharers() -> Iterator[tuple[list[socket.socket], list[int]]]:
    """This process and 5 children all holding the same 30 sockets (fork-shared, as a master and its
    workers do); the children come after us in pid order unless pids wrapped."""
    socks = [socket.socket() for _ in range(30)]
    kids = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                             pass_fds=[s.fileno() for s in socks]) for _ in range(5)]
    yield socks, [os.getpid(), *(k.pid for k in kids)]
    for k in kids:
        k.communicate(timeout=10)
    for s in socks:
        s.close()


def test_lowest_pid_wins_whichever_worker_reads_it(pool: OwnerPool,
                                                   sharers: tuple[list[socket.socket], list[int]]) -> None:
    socks, pids = sharers
    wanted = {os.fstat(s.fileno()).st_ino for s in socks}
    for _ in range(3):
        scan = scan_owners("/proc", wanted, pool=pool, cache=OwnerCache())
        assert scan.owner == dict.fromkeys(wanted, min(pids)) == reference_owners(wanted)


def test_worker_killed_mid_scan_costs_speed_not_the_answer(pool: OwnerPool, caplog: pytest.LogCaptureFixture,
                                                           sharers: tuple[list[socket.socket], list[int]]) -> None:
    socks, pids = sharers
    wanted = {os.fstat(s.fileno()).st_ino for s in socks}
    victim = pool.pids[0]
    os.kill(victim, signal.SIGSTOP)  # it holds its share of the scan and cannot answer
    job = begin_scan("/proc", OwnerCache(), pool)
    os.kill(victim, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="exporter.owners.pool"):
        scan = job.finish(set(wanted))
    assert scan.owner == dict.fromkeys(wanted, min(pids))
    assert f"owner scan worker {victim} exited mid-scan" in caplog.text
    assert victim not in pool.pids and len(pool.pids) == 2
    again = scan_owners("/proc", wanted, pool=pool)
    assert again.owner == scan.owner and len(pool.pids) == 3 and victim not in pool.pids and pool.respawns == 1


def test_worker_dead_between_scans_is_replaced_first(pool: OwnerPool) -> None:
    victim = pool.pids[1]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)
    with socket.socket() as s:
        inode = os.fstat(s.fileno()).st_ino
        assert scan_owners("/proc", {inode}, pool=pool).owner == {inode: os.getpid()}
    assert victim not in pool.pids and len(pool.pids) == 3


@pytest.mark.parametrize("holes", [(), (5, 9, 30), (700, 701, 1100), (3, 600, 1190)],
                         ids=["dense", "early", "late", "both"])
def test_dense_probe_and_listing_read_the_same(holes: tuple[int, ...]) -> None:
    """fds 0..n-1 all open: read without listing; with holes (before or after the first probe chunk),
    listed from the chunk holding the first one on. Same sockets either way, each fd read once."""
    child = subprocess.Popen([sys.executable, "-c", f"""
import os, resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
socks = {{}}
while len(socks) < 1200:
    s = socket.socket()
    socks[s.fileno()] = s
for fd in {holes!r}:
    socks.pop(fd).close()
print("ready", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        fds = os.stat(f"/proc/{child.pid}/fd").st_size
        names = sorted(map(int, os.listdir(f"/proc/{child.pid}/fd")))
        assert (names == list(range(fds))) is not holes
        read = read_process("/proc", child.pid, fds)
        assert read.status == "ok" and sorted(read.sockets) == sorted(held_by([child.pid]))
        assert len(read.sockets) == 1200 - len(holes) and read.scanned_fds == fds
    finally:
        child.communicate(timeout=10)


def test_pool_exact_with_busy_holders(population: Population, pool: OwnerPool) -> None:
    """Every holder runs between scans (stopped and continued every 0.1 s): the cache vouches for
    none of them, the workers read them all, and the answer is the reference's, scan after scan."""
    holders = list(population.pids.values())
    wanted = held_by(holders)
    cache = OwnerCache()

    def keys() -> dict[int, bytes | None]:
        return {pid: read_key(f"/proc/{pid}/task", 10_000) for pid in holders}

    with stirred(holders, 0.1):
        for _ in range(4):
            before = keys()
            expected = reference_owners(wanted)
            pooled = scan_owners("/proc", wanted, pool=pool, cache=cache)
            assert pooled.owner == expected == scan_owners("/proc", wanted).owner
            assert pooled.pooled_pids > 0 and set(expected.values()) <= set(holders)
            time.sleep(0.3)
            after = keys()
            assert all(after[pid] != before[pid] for pid in holders)  # every holder ran: busy indeed


def test_once_with_pool_equals_psutil_with_busy_holders(population: Population,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real exporter (``--once``, 2 workers forced) against psutil inside the namespace."""
    monkeypatch.setenv("SOCKET_EXPORTER_SCAN_WORKERS", "2")
    ns = population.ns
    with stirred(list(population.pids.values()), 0.1):
        ps, text = stable(lambda: reference.psutil_counts(ns, "all"), lambda: run_once(ns, "--source", "netlink"))
    assert owner_counts(text) == psutil_as_owner_counts(population, ps) + bound_only(population)
