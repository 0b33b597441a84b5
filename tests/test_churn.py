"""Processes forking and exiting hundreds of times a second during scrapes: zero failed scrapes.

Why this is its own test: every per-process read races process exit. Between listing /proc and
reading a pid's fd table, comm or links, the process can be gone, its fds closed, its pid reused;
the socket dump can list a socket whose holder exited before the owner scan got to it. All of that
must end up counted (vanished, unowned), never as a failed stage or an HTTP error. The exporter runs
as a real server in a namespace (only ``lo``) next to two churners whose children each open a TCP
listener, a UDP socket and a UNIX pair, live 0-20 ms and exit; 60 scrapes run over HTTP, 50 ms apart
(back to back, the scrapes alone would take the CPU the churners need on a 2-vCPU runner).
The test also checks that it tested something: the fork rate reached, scrapes that saw live children
and scrapes whose owner scan met a vanishing process.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests._served import http, running_exporter
from tests.exposition import samples
from tests.netns import Netns

SCRAPES = 60
CHURNERS = 2
MIN_FORKS_PER_SECOND = 200  # both churners together; ~700/s on an idle 2-vCPU VM
_CHURNER = r"""
import os, socket, sys, time
stop, live, forks = sys.argv[1], set(), 0
with open("/proc/self/comm", "w") as f:
    f.write("churn-parent")
keep = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)  # inherited by every child: shared owner
keep.bind(("::1", 0)); keep.listen()
print("ready", flush=True)
start = time.monotonic()
while not os.path.exists(stop):
    while len(live) < 24:
        pid = os.fork()
        if pid == 0:
            try:
                with open("/proc/self/comm", "w") as f:
                    f.write("churn-child")
                t = socket.socket(); t.bind(("127.0.0.1", 0)); t.listen()
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
                a, b = socket.socketpair()
                time.sleep((os.getpid() % 5) * 0.005)
            finally:
                os._exit(0)
        live.add(pid)
        forks += 1
    live.discard(os.waitpid(-1, 0)[0])
elapsed = time.monotonic() - start
for pid in live:
    os.waitpid(pid, 0)
print(forks, elapsed, flush=True)
"""


def check_scrape(status: int, body: str) -> tuple[bool, float]:
    """Assert one scrape is a success; return (saw a churn child, pids seen vanishing)."""
    assert status == 200, body
    s = samples(body)
    stages = {x["collector"]: v for x, v in s["socket_scrape_collector_success"]}
    assert stages == {"netlink": 1.0, "owners": 1.0}, stages
    totals = {(x["family"], x["type"], x["status"]): v for x, v in s["socket_connections"]}
    by_owner: Counter[tuple[str, str, str]] = Counter()
    for x, v in s["socket_process_connections"]:
        by_owner[(x["family"], x["type"], x["status"])] += int(v)
    assert {k: v for k, v in totals.items() if v} == dict(+by_owner)  # owners sum to the totals, per series
    child = any(x["process"] == "churn-child" for x, _ in s["socket_process_connections"])
    vanished = next(v for x, v in s["socket_owner_scan_processes"] if x["result"] == "vanished")
    return child, vanished


@pytest.mark.root
def test_fork_exit_storm_causes_no_failed_scrape(netns: Netns, tmp_path: Path) -> None:
    port, stop = 9731, tmp_path / "stop"
    with running_exporter(netns, port, tmp_path / "stderr.log"):
        churners = [netns.popen([sys.executable, "-c", _CHURNER, str(stop)], stdout=subprocess.PIPE, text=True)
                    for _ in range(CHURNERS)]
        assert all(c.stdout is not None and c.stdout.readline() == "ready\n" for c in churners)
        try:
            results = http(netns, port, count=SCRAPES, gap=0.05)
        finally:
            stop.touch()
            rates = [float(forks) / float(elapsed) for forks, elapsed in
                     (c.stdout.readline().split() for c in churners if c.stdout is not None)]
        assert len(results) == SCRAPES
        seen = [check_scrape(status, body) for status, body in results]
    rate = sum(rates)
    assert rate >= MIN_FORKS_PER_SECOND, f"churner managed only {rate:.0f} forks/s"
    assert any(child for child, _ in seen), "no scrape overlapped a live child: the test tested nothing"
    assert sum(vanished for _, vanished in seen) > 0, "no scrape raced an exit: the test tested nothing"
