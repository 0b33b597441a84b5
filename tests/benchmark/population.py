"""The benchmark's socket populations, built from the test suite's own workers (tests/population.py).

Why not ``socket_population(ns, scale)`` itself: every scale unit there also builds 26 UDP and UNIX
fds, so 100k TCP sockets would drag 40k UDP and 220k UNIX sockets along, while the benchmark wants
"a few hundred" of those. So this module starts the same ``socket_worker.py`` roles in a different
mix, through the same :class:`tests.population.Worker` protocol and cleanup (``_stop``):

* ``tcp``: one of every TCP state per family (fixed, ~30 sockets);
* ``hub`` + ``cli`` shards: 10 TCP sockets per unit (per family: 1 idle listener, 2 accepted, 2
  client ends), at most UNITS_PER_SHARD units per shard: the hub ``select()``s on a listener created
  after the first family's idle ones, so its fd must stay below FD_SETSIZE (1024). A process then
  holds < 6000 fds (the cap is 20000), and 100k sockets land on 24 processes (+ the others);
* one ``dgu``: DGU_UNITS units = 48 UDP and 264 UNIX sockets, "a few hundred";
* optionally ``busy``: :mod:`tests.benchmark.busy`, N processes x M non-socket fds, started FIRST so
  their pids are lower than every socket holder's: the owner scan (lowest pid first) must then read
  all of them, which is what makes owner lookup expensive on a real busy host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from tests.netns import Netns
from tests.population import WORKER, Worker, _stop, wait_for_ss

TCP_PER_UNIT = 10
UNITS_PER_SHARD = 900
MIN_SHARDS = 2
DGU_UNITS = 12
BUSY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "busy.py")


@dataclass
class BenchPopulation:
    ns: Netns
    tcp_target: int
    workers: list[Worker]
    busy_pids: int
    #: Busy pids below the highest socket holder's: the owner scan (lowest pid first) must read
    #: those. pid_max wraps (32768 here), so a run cannot promise all of them are.
    busy_below: int
    setup_seconds: float

    @property
    def processes(self) -> int:
        return len(self.workers) + 1 + self.busy_pids  # + the hub's forked kid


def shards_for(tcp: int) -> list[int]:
    """Units per hub/cli shard for ``tcp`` TCP sockets (10 per unit)."""
    units = max(1, round(tcp / TCP_PER_UNIT))
    n = max(MIN_SHARDS, -(-units // UNITS_PER_SHARD))
    return [units // n + (i < units % n) for i in range(n)]


def _start_busy(ns: Netns, stack: ExitStack, procs: int, fds: int, deadline: float) -> list[int]:
    """Start the busy processes, wait until all of them hold their fds; return their pids."""
    proc = ns.popen([sys.executable, BUSY, str(procs), str(fds)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, bufsize=0)
    stack.callback(proc.kill)  # its children die with it (PR_SET_PDEATHSIG)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(b"ready") or time.monotonic() > deadline:
        raise RuntimeError(f"busy processes did not start: {line!r}")
    return [int(pid) for pid in line.split()[1:]]


@contextmanager
def bench_population(ns: Netns, tcp: int, *, busy: tuple[int, int] | None = None,
                     timeout: float | None = None) -> Iterator[BenchPopulation]:
    """About ``tcp`` TCP sockets (+ a few hundred UDP/UNIX, + ``busy=(procs, fds)``) inside ``ns``."""
    timeout = 60.0 + tcp / 1000 if timeout is None else timeout
    start = time.monotonic()
    deadline = start + timeout
    # Ephemeral ports: ~tcp/10 idle listeners per family each take one; the default range (28k) is
    # enough for 100k but not by much, and the range is per namespace, so widen it there. Not below
    # 10000: the exporter (9731) and node_exporter (9100) must find their ports free.
    ns.run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 65535"])
    tmpdir = tempfile.mkdtemp(prefix="sockbench-")
    workers: list[Worker] = []
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmpdir, ignore_errors=True)
        busy_pids = _start_busy(ns, stack, busy[0], busy[1], deadline) if busy else []
        stack.callback(_stop, workers)

        def start_worker(role: str, shard: int, units: int) -> Worker:
            comm = f"sockpop-{role}{shard or ''}"
            cfg = {"role": role, "shard": shard, "comm": comm, "units": units, "tmpdir": tmpdir,
                   "timeout": timeout, "tag": f"{ns.name}-{shard}", "share": shard == 0, "shared_unix": False}
            err = os.path.join(tmpdir, f"{comm}.stderr")
            with open(err, "wb") as errf:
                proc = ns.popen([sys.executable, "-u", WORKER, json.dumps(cfg)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errf, bufsize=0)
            worker = Worker(role, shard, comm, proc, err)
            workers.append(worker)
            return worker

        start_worker("tcp", 0, 0)
        start_worker("dgu", 0, DGU_UNITS)
        for shard, units in enumerate(shards_for(tcp)):
            start_worker("hub", shard, units)
            start_worker("cli", shard, units)
        for w in workers:
            w.setup = w.read("setup", deadline)
        hubs = {w.shard: w for w in workers if w.role == "hub"}
        for w in workers:
            w.send("go " + json.dumps({"ports": hubs[w.shard].setup["ports"]} if w.role == "cli" else {}))
        for w in workers:
            w.pid = w.read("ready", deadline)["pid"]
        wait_for_ss(ns, deadline)
        top = max(w.pid for w in workers)
        yield BenchPopulation(ns, tcp, workers, len(busy_pids), sum(p < top for p in busy_pids),
                              time.monotonic() - start)
