"""The owner cache (exporter/owners/cache.py) against live processes: reuse only what cannot have changed.

The child holds 40 socket fds and sleeps on stdin; on "swap" it puts a new socket at the number of an
old one (same fd count: only the "did it run" half of the key can tell) and sleeps again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from exporter.owners import cache as owner_cache
from exporter.owners.cache import OwnerCache
from exporter.owners.scan import _fd_count_works, scan_owners, socket_inode
from tests._require import require

CHILD = """
import os, socket, sys
socks = [s for _ in range(20) for s in socket.socketpair()]
print("ready", flush=True)
for line in sys.stdin:
    new = socket.socket()
    os.dup2(new.fileno(), socks[0].fileno())
    new.close()
    print("swapped", flush=True)
"""


def wait_asleep(pid: int, timeout: float = 10.0) -> None:
    """Until the process has stopped running: its line ``print``ed, it may still be on its way into
    ``read(stdin)``, and a run after the first scan (rightly) spoils the cache's key. Asleep = state S
    and the same schedstat 50 ms apart."""
    deadline, last = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            now = f.read()
        if state == b"S" and now == last:
            return
        last = now
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} did not go to sleep within {timeout} s")


def sockets_of(pid: int) -> set[int]:
    fd_dir = f"/proc/{pid}/fd"
    return {i for name in os.listdir(fd_dir) if (i := socket_inode(os.readlink(f"{fd_dir}/{name}"))) is not None}


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    require(_fd_count_works("/proc"), "needs Linux >= 6.2 (fd count in /proc/PID/fd st_size)")
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    wait_asleep(proc.pid)
    yield proc
    proc.kill()
    proc.wait()


def test_idle_process_is_reused_with_the_same_answer(child: subprocess.Popen[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner_cache, "MIN_AGE", 0.0)
    cache, wanted = OwnerCache(), sockets_of(child.pid)
    first = scan_owners("/proc", wanted, cache=cache)
    assert first.owner == dict.fromkeys(wanted, child.pid) and first.cached_pids == 0
    assert set(cache.entries[child.pid].sockets) == wanted
    again = scan_owners("/proc", wanted, cache=cache)
    assert again.owner == first.owner and again.comm == first.comm
    assert again.cached_pids >= 1 and again.scanned_fds < first.scanned_fds


def test_a_socket_reusing_an_fd_number_is_seen(child: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner_cache, "MIN_AGE", 0.0)
    cache, before = OwnerCache(), sockets_of(child.pid)
    scan_owners("/proc", before, cache=cache)
    fds = os.stat(f"/proc/{child.pid}/fd").st_size
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("swap\n")
    child.stdin.flush()
    assert child.stdout.readline() == "swapped\n"
    after = sockets_of(child.pid)
    assert os.stat(f"/proc/{child.pid}/fd").st_size == fds and len(after - before) == 1
    scan = scan_owners("/proc", after, cache=cache)
    assert scan.owner == dict.fromkeys(after, child.pid)  # the new socket too, although the count is the same
    assert set(cache.entries[child.pid].sockets) == after


def test_young_entries_are_not_trusted(child: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Within MIN_AGE the scheduler may not have accounted a run yet: read again, keep the entry's age.
    (MIN_AGE made long: on a loaded machine the first scan alone can outlast the real one, and then the
    entries of the processes scanned before the child would rightly be trusted.)"""
    monkeypatch.setattr(owner_cache, "MIN_AGE", 3600.0)
    cache, wanted = OwnerCache(), sockets_of(child.pid)
    scan_owners("/proc", wanted, cache=cache)
    since = cache.entries[child.pid].since
    scan = scan_owners("/proc", wanted, cache=cache)
    assert scan.cached_pids == 0 and scan.owner == dict.fromkeys(wanted, child.pid)
    assert cache.entries[child.pid].since == since


def test_gone_processes_are_forgotten(child: subprocess.Popen[str]) -> None:
    cache, wanted = OwnerCache(), sockets_of(child.pid)
    scan_owners("/proc", wanted, cache=cache)
    assert child.pid in cache.entries
    child.kill()
    child.wait()
    scan_owners("/proc", {2**32 - 1}, cache=cache)
    assert child.pid not in cache.entries


def test_small_or_many_threaded_processes_are_not_cached() -> None:
    """Their key would cost about what reading their fds costs."""
    task = f"/proc/{os.getpid()}/task"
    assert owner_cache.read_key(task, owner_cache.MIN_FDS - 1) is None
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        assert owner_cache.read_key(task, owner_cache.MIN_FDS) is None  # 9+ threads for 32 fds
        key = owner_cache.read_key(task, 1000)
        assert key is not None and key.startswith(b"1000 ") and key.count(b":") >= 9
    finally:
        stop.set()
        for t in threads:
            t.join()
