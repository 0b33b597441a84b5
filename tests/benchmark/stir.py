"""``python -m tests.benchmark.stir PERIOD PID...``: make every PID run between two scrapes, until stdin EOF.

The "holders busy" rows of the benchmark: a server holding 100k connections is not asleep, so the
owner cache (exporter/owners/cache.py), which reuses the fds of processes that did not run since they
were read, must not be able to help. Every PERIOD seconds all pids get SIGSTOP, then all SIGCONT: both
are handled in the stopped process's own context, so each of its threads is scheduled (its
``/proc/PID/task/TID/schedstat`` changes) without the holder's code doing anything else. The
holders' sockets and fds stay exactly as they are, so the per-process counts stay comparable.
A pid that is gone is dropped. Each round is paced from its start so it does not drift.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def stir(period: float, pids: list[int]) -> None:
    live, poller = list(pids), select.poll()
    poller.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    next_round = time.monotonic()
    while live:
        for sig in (signal.SIGSTOP, signal.SIGCONT):  # all stop, then all continue: each one has run
            for pid in list(live):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    live.remove(pid)
        next_round += period
        if poller.poll(max(0.0, next_round - time.monotonic()) * 1000):
            return  # stdin readable: EOF (or anything) from the harness means stop


@contextmanager
def stirred(pids: list[int], period: float = 0.2) -> Iterator[subprocess.Popen[bytes]]:
    """Run the stirrer over ``pids`` (in a child process) for the duration of the block."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.benchmark.stir", str(period), *map(str, pids)],
                            stdin=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__)))))
    try:
        time.sleep(2 * period)  # every holder has been stopped and continued at least once
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


if __name__ == "__main__":
    stir(float(sys.argv[1]), [int(p) for p in sys.argv[2:]])
