"""What the benchmark reads from /proc about a process and its owner-scan workers: CPU time and memory.

Kept apart from the harness so that tests (tests/test_owner_pool_server.py) can find a server's
workers without importing the harness. A worker is a child named ``socket-owners``
(exporter/owners/worker.py sets its comm).
"""

from __future__ import annotations

import contextlib
import os

TICK = os.sysconf("SC_CLK_TCK")
WORKER_COMM = "socket-owners"


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (proc(5) stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def workers_of(pid: int) -> list[int]:
    """The owner-scan worker processes among ``pid``'s children."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = f.read().split()
        except FileNotFoundError:  # a thread that ended since the listing
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/comm") as c:
                    if c.read().strip() == WORKER_COMM:
                        out.append(int(child))
            except OSError:
                continue
    return out


def workers_cpu(workers: list[int]) -> float:
    """CPU seconds of these scan workers (a worker that is gone counts 0)."""
    total = 0.0
    for worker in workers:
        with contextlib.suppress(OSError):
            total += proc_cpu(worker)
    return total


def family_memory(pid: int) -> dict[str, int]:
    """RSS of ``pid`` alone, and RSS, peak RSS and Pss summed over it and its scan workers (bytes)."""
    pids = [pid, *workers_of(pid)]
    pss = 0
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            pss += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    return {"rss": proc_status(pid, "VmRSS"), "family_rss": sum(proc_status(p, "VmRSS") for p in pids),
            "family_hwm": sum(proc_status(p, "VmHWM") for p in pids), "family_pss": pss, "workers": len(pids) - 1}


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)
