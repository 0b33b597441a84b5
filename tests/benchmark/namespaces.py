"""``python -m tests.benchmark.namespaces`` (root): ``network_namespaces: all`` at N namespaces.

Builds N namespaces ("pods"), each with one process holding about PER_NS established IPv4 TCP
sockets (tests/benchmark/netns_holder.py), and then, alternating every repetition (drift hits every
row alike; medians shown), times in the root namespace:

* ``all`` HTTP scrape: the real exporter (``--network-namespaces all``, per-process on) scraped over
  loopback: wall time, and the server's CPU time from /proc/PID/stat;
* the same collection in process with 1 and with 2 setns reader threads (the default);
* cAdvisor's method: ``/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`` of one process per namespace, each
  line's state counted (what cAdvisor's ``advtcp``/``tcp`` metrics do per container);
* ``own`` HTTP scrape: the exporter in its default mode, for comparison.

Then it checks every namespace's ``socket_namespace_connections`` against ``ss`` run inside it, and
reports the ``all`` server's peak RSS. ``--isolate`` runs it all in a new pid and mount namespace with
an empty ``/run/netns``, so on a shared machine only the benchmark's namespaces are read (the kernel's
TCP hash still holds every socket of the host: its walks cost what they cost). ``--child-ehash N``
sets net.ipv4.tcp_child_ehash_entries while the namespaces are created (each then gets its own TCP
hash) and restores it at once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from exporter.exposition.sockets import SocketMetricsCollector
from exporter.pipeline.state import ExporterState
from exporter.settings.config import Config
from tests.benchmark.measure import proc_cpu, proc_status
from tests.every_netns import exporter_all, netns_inode, per_namespace
from tests.netns import Netns
from tests.reference import ss_counts

HOLDER = str(Path(__file__).with_name("netns_holder.py"))
Sample = tuple[float, float]  # wall, CPU seconds


@contextmanager
def pods(n: int, per_ns: int, child_ehash: int = 0) -> Iterator[list[tuple[Netns, int]]]:
    """``n`` namespaces with a holder each; yields [(namespace, holder pid)]."""
    with ExitStack() as stack:
        if child_ehash:
            old = _sysctl("net.ipv4.tcp_child_ehash_entries")
            _sysctl("net.ipv4.tcp_child_ehash_entries", str(child_ehash))
        try:
            spaces = [stack.enter_context(Netns()) for _ in range(n)]
        finally:
            if child_ehash:
                _sysctl("net.ipv4.tcp_child_ehash_entries", old)
        procs = [ns.popen([sys.executable, HOLDER, str(per_ns)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for ns in spaces]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == b"ready\n", "holder failed"
        yield [(ns, p.pid) for ns, p in zip(spaces, procs, strict=True)]


def _sysctl(key: str, value: str | None = None) -> str:
    argv = ["sysctl", "-n", key] if value is None else ["sysctl", "-q", "-w", f"{key}={value}"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def cadvisor_method(pids: list[int]) -> int:
    """Read every inet and unix table of one process per namespace and count states; returns series."""
    series = 0
    for pid in pids:
        counts: Counter[tuple[str, bytes]] = Counter()
        for table, field in (("tcp", 3), ("tcp6", 3), ("udp", 3), ("udp6", 3), ("unix", 5)):
            with open(f"/proc/{pid}/net/{table}", "rb") as f:
                for line in f.read().split(b"\n")[1:]:
                    if line:
                        counts[(table, line.split()[field])] += 1
        series += len(counts)
    return series


def in_process(threads: int) -> Callable[[], int]:
    state = ExporterState.build(Config(network_namespaces="all"))
    every = state.pipeline._every
    assert every is not None
    every.workers.threads = threads
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SocketMetricsCollector(lambda: state))
    return lambda: len(generate_latest(reg))


def timed(fn: Callable[[], object], cpu_pid: int | None = None) -> Sample:
    c0 = proc_cpu(cpu_pid) if cpu_pid else time.process_time()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return wall, (proc_cpu(cpu_pid) if cpu_pid else time.process_time()) - c0


def run(n: int, per_ns: int, reps: int, child_ehash: int = 0) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="sockexp-bench-"))
    with pods(n, per_ns, child_ehash) as spaces, exporter_all(tmp) as (all_client, all_pid):
        own_cm = exporter_all(tmp, "--network-namespaces", "own")
        with own_cm as (own_client, own_pid):
            pids = [pid for _, pid in spaces]
            one, two = in_process(1), in_process(2)
            todo: dict[str, Callable[[], Sample]] = {
                "all: HTTP scrape (2 reader threads)": lambda: timed(all_client.get, all_pid),
                "all: in-process collect, 1 reader thread": lambda: timed(one),
                "all: in-process collect, 2 reader threads": lambda: timed(two),
                "cAdvisor's method: /proc/PID/net/* per namespace": lambda: timed(lambda: cadvisor_method(pids)),
                "own: HTTP scrape": lambda: timed(own_client.get, own_pid),
            }
            names = list(todo)
            for name in names:
                todo[name]()  # warm-up
            samples: dict[str, list[Sample]] = {name: [] for name in names}
            for rep in range(reps):
                for name in names[rep % len(names):] + names[: rep % len(names)]:
                    samples[name].append(todo[name]())
            text = all_client.get()[1]
            got = per_namespace(text)
            wrong = [ns.name for ns, _ in spaces if got.get(str(netns_inode(ns.name))) != ss_counts(ns)]
            hwm = proc_status(all_pid, "VmHWM")
    return report(n, per_ns, reps, child_ehash, samples, wrong, hwm)


def report(n: int, per_ns: int, reps: int, child_ehash: int, samples: dict[str, list[Sample]],
           wrong: list[str], hwm: int) -> str:
    med = {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
           for name, s in samples.items()}
    lines = [f"{n} namespaces x ~{per_ns} TCP IPv4 sockets, {reps} repetitions (median); "
             f"tcp_child_ehash_entries {child_ehash or 'off (one shared hash)'}", "",
             "| measurement | wall p50 | CPU p50 |", "|---|---|---|"]
    lines += [f"| {name} | {w * 1000:.0f} ms | {c * 1000:.0f} ms |" for name, (w, c) in med.items()]
    scrape = med["all: HTTP scrape (2 reader threads)"][0]
    cadv = med["cAdvisor's method: /proc/PID/net/* per namespace"][0]
    lines += ["", f"exact (every namespace == ss inside it): {'yes' if not wrong else 'NO: ' + ', '.join(wrong[:5])}",
              f"all-mode server peak RSS: {hwm / 2**20:.1f} MB",
              f"targets: scrape p50 <= 1.2 s: {'MET' if scrape <= 1.2 else 'MISSED'} ({scrape:.2f} s); "
              f">= 3x faster than cAdvisor's method: {'MET' if cadv >= 3 * scrape else 'MISSED'} "
              f"({cadv / scrape:.1f}x); RSS < 100 MB: {'MET' if hwm < 100 * 2**20 else 'MISSED'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmark.namespaces", description=__doc__.split("\n")[0])
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--per-ns", type=int, default=1000, help="TCP sockets per namespace")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--child-ehash", type=int, default=0, help="net.ipv4.tcp_child_ehash_entries while creating")
    p.add_argument("--isolate", action="store_true", help="run in a new pid and mount namespace with an empty "
                   "/run/netns, so that only this benchmark's namespaces are read (on a shared machine)")
    p.add_argument("--isolated", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.isolate:
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--isolate"]
        os.execvp("unshare", ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private",
                              sys.executable, "-m", "tests.benchmark.namespaces", *rest, "--isolated"])
    if args.isolated:
        os.makedirs("/run/netns", exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "sockexp-bench", "/run/netns"], check=True)
    print(run(args.namespaces, args.per_ns, args.reps, args.child_ehash))
    return 0


if __name__ == "__main__":
    sys.exit(main())
