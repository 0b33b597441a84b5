"""The timing harness, run INSIDE the benchmark's namespace: ``python -m tests.benchmark.measure JSON``.

Why in-process for the exporter: ``--once`` would time Python's start-up and imports, which a running
exporter pays once; here ``Pipeline.collect()`` + the exposition are timed exactly as a scrape runs
them, each config with its own long-lived state (so what the owner cache keeps between scrapes
counts, as it does in a server), plus a ``cold`` variant that builds a fresh state every time.

Why alternating: the machine is shared and its load drifts. Every repetition runs each measurement
once, in an order rotated by one each time, and the table reports the median, so drift hits every
column alike. Each sample records wall time and the CPU time of whoever did the work (this process,
the ``ss`` child, or the server process from /proc/PID/stat), since CPU time is less noisy.

With ``holders`` (the socket holders' pids), a second phase follows, "holders busy": the holders
are made to run between scrapes (tests/benchmark/stir.py), so the owner cache cannot vouch for any of
them, and the HTTP scrape, the in-process collection and psutil are timed again the same way.

CPU includes the owner scan's worker processes (exporter/owners/pool.py): a server's or this
harness's children whose comm is ``socket-owners``. RSS is reported for the server alone and for
the server plus its workers (VmRSS summed, which counts shared library pages twice, and Pss).

Prints one JSON object: ``{"samples": {name: [[wall, cpu], ...]}, "bytes": {...}, ...}``.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from exporter.exposition.registry import BudgetedRegistry
from exporter.exposition.sockets import SocketMetricsCollector
from exporter.owners.cache import MIN_AGE
from exporter.pipeline.state import ExporterState
from exporter.settings.config import Config, PerProcessConfig
from tests.benchmark import ports
from tests.benchmark.procstat import family_memory, proc_cpu, proc_status, workers_cpu, workers_of
from tests.benchmark.stir import stirred

Sample = tuple[float, float]  # wall seconds, CPU seconds
def http_get(port: int, path: str = "/metrics", timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def exporter_variant(kinds: str, source: str, owners: bool, cold: bool = False) -> Callable[[], int]:
    """A scrape as the server runs it (collect + exposition); returns the exposition's size."""
    config = Config(kinds=(kinds,), source=source, per_process=PerProcessConfig(enabled=owners))

    def registry() -> CollectorRegistry:
        state = ExporterState.build(config)
        reg = BudgetedRegistry(lambda: config.limits.max_series)  # as the server's: the budget counts too
        reg.register(SocketMetricsCollector(lambda: state))
        return reg

    warm = registry()
    return lambda: len(generate_latest(registry() if cold else warm))


def psutil_variant(kind: str, by_pid: bool) -> Callable[[], int]:
    """psutil.net_connections + the same aggregation: counts by (family, type, status[, pid])."""
    import psutil

    def run() -> int:
        conns = psutil.net_connections(kind)
        if by_pid:
            return len(Counter((c.family, c.type, c.status, c.pid) for c in conns))
        return len(Counter((c.family, c.type, c.status) for c in conns))

    return run


def timed_self(fn: Callable[[], int]) -> tuple[Sample, int]:
    workers = workers_of(os.getpid())
    t0, c0, w0 = time.perf_counter(), time.process_time(), workers_cpu(workers)
    size = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return (wall, cpu + workers_cpu(workers) - w0), size


def timed_child(argv: list[str]) -> tuple[Sample, int]:
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(argv, capture_output=True, check=True, timeout=600).stdout
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return (wall, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime), len(out)


def timed_http(port: int, pid: int) -> tuple[Sample, int]:
    workers = workers_of(pid)
    c0, t0 = proc_cpu(pid) + workers_cpu(workers), time.perf_counter()
    status, body = http_get(port)
    wall = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"scrape of :{port} answered {status}")
    time.sleep(0.02)  # let the server and its workers account their last tick
    return (wall, proc_cpu(pid) + workers_cpu(workers) - c0), len(body)


def measurements(cfg: dict[str, Any]) -> dict[str, Callable[[], tuple[Sample, int]]]:
    out: dict[str, Callable[[], tuple[Sample, int]]] = {}
    for source in cfg["sources"]:
        for kinds in ("tcp", "all"):
            for owners in (False, True):
                fn = exporter_variant(kinds, source, owners)
                out[f"exporter {source} {kinds} {'owners' if owners else 'counts'}"] = lambda f=fn: timed_self(f)
    cold = exporter_variant("all", "netlink", True, cold=True)
    out["exporter netlink all owners cold"] = lambda: timed_self(cold)
    out["exporter HTTP scrape"] = lambda: timed_http(cfg["exporter_port"], cfg["exporter_pid"])
    for kind in ("tcp", "all"):
        fn = psutil_variant(kind, by_pid=kind == "all")
        out[f"psutil {kind}"] = lambda f=fn: timed_self(f)
    out["ss -tan"] = lambda: timed_child(["ss", "-tan"])
    out["ss -tanp"] = lambda: timed_child(["ss", "-tanp"])
    if cfg.get("node_port"):
        out["node_exporter tcpstat"] = lambda: timed_http(cfg["node_port"], cfg["node_pid"])
    out.update(ports.measurements(timed_self))  # listeners/ports/ephemeral views (tests/benchmark/ports.py)
    return out


def concurrency(port: int, pid: int, n: int) -> tuple[float, list[int]]:
    """Server CPU seconds for ``n`` scrapes fired at once (threads released by one barrier)."""
    barrier, statuses = threading.Barrier(n), [0] * n

    def one(i: int) -> None:
        barrier.wait()
        statuses[i] = http_get(port)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    c0 = proc_cpu(pid)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.05)  # let the server finish writing and account its time
    return proc_cpu(pid) - c0, statuses


def flat_rss(port: int, pid: int, scrapes: int, family: bool = False) -> dict[str, int]:
    """VmRSS (of the server, or summed with its workers') after the 1st, 10th and last of ``scrapes``
    back-to-back scrapes."""
    rss: dict[str, int] = {}
    for i in range(1, scrapes + 1):
        http_get(port)
        if i in (1, 10, scrapes):
            rss[str(i)] = family_memory(pid)["family_rss"] if family else proc_status(pid, "VmRSS")
    return rss


def busy_measurements(cfg: dict[str, Any]) -> dict[str, Callable[[], tuple[Sample, int]]]:
    """The "holders busy" phase: fresh long-lived states (their cache learns the busy holders)."""
    fn = exporter_variant("all", "netlink", True)
    psutil_all = psutil_variant("all", by_pid=True)
    return {"busy exporter HTTP scrape": lambda: timed_http(cfg["exporter_port"], cfg["exporter_pid"]),
            "busy exporter netlink all owners": lambda: timed_self(fn),
            "busy psutil all": lambda: timed_self(psutil_all)}


def run_rounds(todo: dict[str, Callable[[], tuple[Sample, int]]], reps: int,
               samples: dict[str, list[Sample]], sizes: dict[str, int]) -> None:
    """A warm-up round, then ``reps`` rounds in an order rotated by one each time (module docstring)."""
    names = list(todo)
    for name in names:  # warm-up round, not recorded: imports, page cache, the states' first scrape
        todo[name]()
    # The owner cache trusts what it read only MIN_AGE later: without this wait, a short run (10k
    # sockets, --reps 3: a round takes under a second) times full reads in its first repetitions and
    # the cached rows mix two regimes. Every recorded repetition now sees the steady state.
    time.sleep(MIN_AGE)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            sample, sizes[name] = todo[name]()
            samples.setdefault(name, []).append(sample)


def busy_phase(cfg: dict[str, Any], samples: dict[str, list[Sample]], sizes: dict[str, int]) -> dict[str, Any]:
    """Stir the holders (tests/benchmark/stir.py) while the busy rows are timed; memory after them."""
    port, pid = cfg["exporter_port"], cfg["exporter_pid"]
    with stirred(cfg["holders"], cfg["busy_period"]):
        run_rounds(busy_measurements(cfg), cfg["reps"], samples, sizes)
        out: dict[str, Any] = {"memory": family_memory(pid)}
        if cfg.get("busy_flat_scrapes"):
            out["flat"] = flat_rss(port, pid, cfg["busy_flat_scrapes"], family=True)
        return out


def main(cfg: dict[str, Any]) -> dict[str, Any]:
    todo = measurements(cfg)
    samples: dict[str, list[Sample]] = {}
    sizes: dict[str, int] = {}
    run_rounds(todo, cfg["reps"], samples, sizes)
    port, pid = cfg["exporter_port"], cfg["exporter_pid"]
    conc: dict[str, Any] = {"1": [], str(cfg["concurrent"]): [], "statuses": []}
    for _ in range(cfg["cpu_rounds"]):
        conc["1"].append(concurrency(port, pid, 1)[0])
        cpu, statuses = concurrency(port, pid, cfg["concurrent"])
        conc[str(cfg["concurrent"])].append(cpu)
        conc["statuses"] += statuses
    result = {"samples": samples, "bytes": sizes, "concurrency": conc,
              "rss_hwm": proc_status(pid, "VmHWM"), "rss": proc_status(pid, "VmRSS"),
              "memory": family_memory(pid)}
    if cfg.get("flat_scrapes"):
        result["flat_rss"] = flat_rss(port, pid, cfg["flat_scrapes"])
    if cfg.get("holders"):
        result["busy"] = busy_phase(cfg, samples, sizes)
        result["rss_hwm_busy"] = proc_status(pid, "VmHWM")
    return result


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
