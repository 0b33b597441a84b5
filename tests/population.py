"""A real socket population inside a namespace: ``with socket_population(ns, scale=1) as pop: ...``.

Workers (:mod:`socket_worker`, one process each, comm ``sockpop-<role>[shard]``):

* ``tcp``: every TCP state once per family (recipes and the kernel behaviour behind them in
  :mod:`tcp_states`): LISTEN ESTABLISHED SYN_SENT SYN_RECV FIN_WAIT1 FIN_WAIT2 CLOSE_WAIT LAST_ACK
  CLOSING TIME_WAIT, plus a bound-only CLOSE socket. Fixed size, whatever the scale.
* ``hub``: per family one main listener plus ``units`` idle ones; accepts 2 x ``units`` connections
  per family from ``cli``. Shard 0 also forks ``sockpop-kid``, which inherits one IPv4 LISTEN socket
  (and, with ``shared_unix``, one UNIX datagram socket): one socket, two pids.
* ``cli``: the client ends of the hub's connections (cross-process ESTABLISHED pairs).
* ``dgu``: per unit, UDP bound + connected per family; UNIX stream and seqpacket path/abstract
  listener + client + accepted, and a socketpair; UNIX datagram path/abstract bound + connected
  client, and a socketpair. Every UNIX socket has exactly one fd in one process, unless
  ``shared_unix`` adds one socket with two fds (dup) in ``dgu``.

``scale`` units are spread over shards of at most UNITS_PER_SHARD, so no process nears the 20000 open
files cap (a dgu unit holds 26 fds). TIME_WAIT sockets vanish 60 s after setup (TCP_TIMEWAIT_LEN);
everything else stays until the context exits.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from tests.netns import Netns
from tests.reference import SsKey, ss_counts

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "socket_worker.py")
UNITS_PER_SHARD = 500
FAMILIES = ("AF_INET", "AF_INET6")
PROMISED_TCP_STATES = (
    "LISTEN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
    "CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT",
)  # fmt: skip
#: Built but invisible to ss 6.1 and psutil (only a sock_diag dump asking for BOUND_INACTIVE).
HIDDEN_FROM_SS: tuple[SsKey, ...] = tuple((f, "SOCK_STREAM", "CLOSE") for f in FAMILIES)


class PopulationError(RuntimeError):
    """A worker failed or the promised states did not show up in time."""


@dataclass
class Worker:
    role: str
    shard: int
    comm: str
    proc: subprocess.Popen[bytes]
    stderr_path: str
    pid: int = 0
    setup: dict[str, Any] = field(default_factory=dict)
    made: Counter[SsKey] = field(default_factory=Counter)
    _buf: bytes = b""

    def read(self, word: str, deadline: float) -> dict[str, Any]:
        """Wait for the ``word {json}`` line; raise with the worker's stderr on error/exit/timeout."""
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([self.proc.stdout], [], [], max(0.0, left))[0] if left > 0 else []
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                why = "timed out" if left <= 0 or not ready else "exited"
                raise PopulationError(f"{self.comm}: {why} before {word!r}\n{self.stderr()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        got, _, payload = line.decode().partition(" ")
        if got != word:
            raise PopulationError(f"{self.comm}: {line.decode()}\n{self.stderr()}")
        return dict(json.loads(payload))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        with open(self.stderr_path, errors="replace") as f:
            return f.read()[-4000:]


@dataclass
class Population:
    ns: Netns
    scale: int
    workers: list[Worker]
    kid_pid: int
    #: What the workers say they built, Counter[(family, type, status)], including HIDDEN_FROM_SS.
    counts_made: Counter[SsKey]
    setup_seconds: float
    tmpdir: str

    @property
    def pids(self) -> dict[str, int]:
        """comm -> pid for every long-lived process, ``sockpop-kid`` included."""
        return {**{w.comm: w.pid for w in self.workers}, "sockpop-kid": self.kid_pid}


def _shards(scale: int) -> list[int]:
    n = max(1, -(-scale // UNITS_PER_SHARD))
    return [scale // n + (i < scale % n) for i in range(n)]


def missing_states(counts: Counter[SsKey]) -> list[str]:
    return [f"{f} {s}" for f in FAMILIES for s in PROMISED_TCP_STATES if not counts[f, "SOCK_STREAM", s]]


def wait_for_ss(ns: Netns, deadline: float) -> Counter[SsKey]:
    """Poll ``ss`` until every promised TCP state shows for both families and two snapshots agree."""
    last: Counter[SsKey] | None = None
    while True:
        counts = ss_counts(ns)
        missing = missing_states(counts)
        if not missing and counts == last:
            return counts
        if time.monotonic() > deadline:
            what = f"missing {', '.join(missing)}" if missing else "counts still changing"
            raise PopulationError(f"ss never showed the population ({what}); last ss counts: {dict(counts)}")
        last = counts
        time.sleep(0.05)


@contextmanager
def socket_population(
    ns: Netns, scale: int = 1, *, shared_unix: bool = False, timeout: float | None = None
) -> Iterator[Population]:
    """Build the population in ``ns``; yield once ``ss`` shows it; stop the workers on exit.

    ``timeout`` (default 10 s + 5 ms per unit) bounds the whole setup, ``ss`` polling included."""
    if scale < 1:
        raise ValueError("scale must be >= 1")
    timeout = 10.0 + 0.005 * scale if timeout is None else timeout
    start = time.monotonic()
    deadline = start + timeout
    tmpdir = tempfile.mkdtemp(prefix="sockpop-")
    workers: list[Worker] = []
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmpdir, ignore_errors=True)
        cleanup.callback(_stop, workers)

        def start_worker(role: str, shard: int, units: int) -> Worker:
            comm = f"sockpop-{role}{shard or ''}"
            cfg = {
                "role": role,
                "shard": shard,
                "comm": comm,
                "units": units,
                "tmpdir": tmpdir,
                "timeout": timeout,
                "tag": f"{ns.name}-{shard}",
                "share": shard == 0,
                "shared_unix": shared_unix,
            }
            err = os.path.join(tmpdir, f"{comm}.stderr")
            with open(err, "wb") as errf:
                proc = ns.popen(
                    [sys.executable, "-u", WORKER, json.dumps(cfg)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errf,
                    bufsize=0,
                )
            worker = Worker(role, shard, comm, proc, err)
            workers.append(worker)
            return worker

        start_worker("tcp", 0, 0)
        for shard, units in enumerate(_shards(scale)):
            start_worker("hub", shard, units)
            start_worker("cli", shard, units)
            start_worker("dgu", shard, units)
        for w in workers:
            w.setup = w.read("setup", deadline)
        hubs = [w for w in workers if w.role == "hub"]
        for w in workers:
            go = {"ports": hubs[w.shard].setup["ports"]} if w.role == "cli" else {}
            w.send("go " + json.dumps(go))
        made: Counter[SsKey] = Counter()
        for w in workers:
            ready = w.read("ready", deadline)
            w.pid = ready["pid"]
            w.made = Counter({(f, t, s): n for f, t, s, n in ready["made"]})
            made += w.made
        wait_for_ss(ns, deadline)
        yield Population(ns, scale, workers, hubs[0].setup["kid"], made, time.monotonic() - start, tmpdir)


def _stop(workers: list[Worker]) -> None:
    """Close every worker's stdin (its stop signal), then kill whatever is still alive after 5 s.
    The hub's kid dies with the hub (PR_SET_PDEATHSIG)."""
    for w in workers:
        if w.proc.stdin is not None and not w.proc.stdin.closed:
            with suppress(BrokenPipeError):
                w.proc.stdin.close()
    deadline = time.monotonic() + 5
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        if w.proc.stdout is not None:
            w.proc.stdout.close()
