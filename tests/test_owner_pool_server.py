"""The running exporter's scan workers: exact scrapes when one dies mid-scrape, no orphans, no held fds.

The real server (``python -m exporter``) runs in a namespace with two workers forced
(``SOCKET_EXPORTER_SCAN_WORKERS=2``); its workers are its children named ``socket-owners``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from exporter.owners.pool import ENV_WORKERS
from tests import reference
from tests._served import http, running_exporter
from tests.benchmark.procstat import workers_of
from tests.benchmark.stir import stirred
from tests.exposition import owner_counts
from tests.netns import Netns
from tests.population import Population
from tests.test_end_to_end import bound_only, psutil_as_owner_counts

PORT = 9731
T = TypeVar("T")


def wait_for(what: str, get: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := get()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def two_workers_of(pid: int) -> list[int]:
    """The exporter's two workers, once both are running."""
    return wait_for("two workers", lambda: w if len(w := workers_of(pid)) == 2 else [])


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for a reaper counts as gone: it holds no fds)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def queued_bytes(pid: int) -> int:
    """Bytes waiting in ``pid``'s stdin pipe: a request it has not read yet."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def force_two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_WORKERS, "2")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_workers_end_with_the_exporter_and_never_hold_its_port(netns: Netns, tmp_path: Path,
                                                               sig: signal.Signals) -> None:
    with running_exporter(netns, PORT, tmp_path / "stderr.log") as proc:
        assert http(netns, PORT)[0][0] == 200
        workers = two_workers_of(proc.pid)
        for worker in workers:  # pipes, /dev/null, /proc dirs: not one socket (the listener least of all)
            links = [os.readlink(f"/proc/{worker}/fd/{n}") for n in os.listdir(f"/proc/{worker}/fd")]
            assert not [link for link in links if link.startswith("socket:")], links
        proc.send_signal(sig)
        proc.wait(timeout=15)
        wait_for("the workers to exit", lambda: all(gone(w) for w in workers))
    netns.run(["python3", "-c", f"import socket; socket.create_server(('127.0.0.1', {PORT}))"])  # port free


def test_scrape_stays_exact_when_a_worker_dies_mid_scrape(population: Population, tmp_path: Path) -> None:
    ns, holders = population.ns, list(population.pids.values())
    log = tmp_path / "stderr.log"
    mine = {str(pid) for pid in holders}

    def population_owners(counts: Counter[tuple[str, ...]]) -> Counter[tuple[str, ...]]:
        return Counter({key: n for key, n in counts.items() if key[3] in mine})

    with running_exporter(ns, PORT, log) as proc, stirred(holders, 0.1):
        assert http(ns, PORT)[0][0] == 200
        victim = two_workers_of(proc.pid)[0]
        os.kill(victim, signal.SIGSTOP)  # it takes the next scrape's request and never answers it
        answer: list[tuple[int, str]] = []
        scrape = threading.Thread(target=lambda: answer.extend(http(ns, PORT)))
        scrape.start()
        wait_for("the request to reach the stopped worker", lambda: queued_bytes(victim), timeout=60)
        os.kill(victim, signal.SIGKILL)
        scrape.join(timeout=120)
        status, body = answer[0]
        assert status == 200
        expected = psutil_as_owner_counts(population, reference.psutil_counts(ns, "all")) + bound_only(population)
        assert population_owners(owner_counts(body)) == population_owners(expected) != Counter()
        assert f"owner scan worker {victim} exited mid-scan" in log.read_text()
        status, body = http(ns, PORT)[0]  # the worker is replaced, the answer the same
        assert status == 200 and population_owners(owner_counts(body)) == population_owners(expected)
        workers = workers_of(proc.pid)
        assert len(workers) == 2 and victim not in workers
