"""``sudo python -m tests.benchmark``: the socket_exporter benchmark (root: it builds network namespaces).

For each case it creates a namespace, fills it with sockets (tests/benchmark/population.py), starts
the real exporter (``python -m exporter``, default config: kinds all, per-process on) and, if
installed, Debian's ``prometheus-node-exporter`` with only the tcpstat collector, both listening on
loopback inside the namespace; then runs the timing harness (tests/benchmark/measure.py) in there,
and finally prints one table (tests/benchmark/report.py). Everything is torn down on exit, also on
errors and Ctrl-C (the namespace kills whatever is left in it). Not part of the test suite; its code
path is kept alive by tests/test_benchmark_smoke.py at a tiny scale.

Default run: 10k, 40k, 100k TCP sockets + a busy host (500 processes x 200 fds, with 10k TCP
sockets), 5 repetitions, 1000 scrapes for RSS flatness at 10k; each of the 10k/40k/100k cases then
has a "holders busy" phase (every socket holder stopped and continued every 0.2 s, so it runs between
scrapes and the owner cache cannot help), with 1000 more scrapes at 10k for RSS flatness of the
exporter and its scan workers. About 5 minutes on 2 cores, more on a loaded machine; ``--write-docs``
puts the table, with the run's date, machine and duration, into docs/performance.md.

``--exporter-root DIR`` runs the server (the HTTP rows) from another checkout, e.g. to measure an
earlier version in the same conditions; the in-process rows always use this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.benchmark import docs
from tests.benchmark.population import bench_population
from tests.benchmark.report import Case, render
from tests.netns import Netns

ROOT = Path(__file__).resolve().parents[2]
EXPORTER_PORT, NODE_PORT = 9731, 9100
NODE_EXPORTER = "prometheus-node-exporter"


def wait_listening(ns: Netns, port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Netns.wait_listening, then make sure it is ``proc`` that listens there."""
    ns.wait_listening(port, proc, max(0.0, deadline - time.monotonic()))
    time.sleep(0.2)  # a process that found the port taken exits now; someone else listens there
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args} exited {proc.returncode}: is port {port} taken in the namespace?")


def holders(pids: list[int]) -> list[int]:
    """``pids`` and their children (the hub's forked kid shares its sockets)."""
    out = list(pids)
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def run_case(name: str, tcp: int, busy: tuple[int, int] | None, args: argparse.Namespace,
             flat: int) -> Case:
    print(f"# {name}: building the population ...", file=sys.stderr, flush=True)
    with Netns() as ns, bench_population(ns, tcp, busy=busy) as pop:
        print(f"# {name}: {pop.processes} processes, setup {pop.setup_seconds:.1f} s; measuring ...",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + 60
        exporter = ns.popen([sys.executable, "-m", "exporter", "--web.listen-address",
                             f"127.0.0.1:{EXPORTER_PORT}", "--log.level", "warning"],
                            cwd=args.exporter_root or ROOT)
        wait_listening(ns, EXPORTER_PORT, exporter, deadline)
        cfg: dict[str, Any] = {"reps": args.reps, "sources": args.sources.split(","),
                               "exporter_port": EXPORTER_PORT, "exporter_pid": exporter.pid,
                               "concurrent": args.concurrent, "cpu_rounds": args.cpu_rounds,
                               "flat_scrapes": flat}
        if not busy and args.busy_period > 0:
            cfg.update(holders=holders([w.pid for w in pop.workers]), busy_period=args.busy_period,
                       busy_flat_scrapes=args.busy_flat_scrapes if flat else 0)
        node = shutil.which(NODE_EXPORTER)
        if node and not args.no_node_exporter:
            proc = ns.popen([node, "--collector.disable-defaults", "--collector.tcpstat",
                             f"--web.listen-address=127.0.0.1:{NODE_PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(ns, NODE_PORT, proc, deadline)
            cfg.update(node_port=NODE_PORT, node_pid=proc.pid)
        out = ns.run([sys.executable, "-m", "tests.benchmark.measure", json.dumps(cfg)], cwd=ROOT,
                     timeout=args.case_timeout)
        sockets = int(ns.run(["ss", "-Htan"]).stdout.count("\n"))
        result = json.loads(out.stdout)
        if busy:
            name += f", {pop.busy_below} below the socket owners"
        return Case(name, sockets, pop.processes, result)


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ss = subprocess.run(["ss", "-V"], capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM; Linux {platform.release()}; "
            f"Python {platform.python_version()}; {ss}; load average before the run "
            f"{os.getloadavg()[0]:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--scales", default="10000,40000,100000", help="TCP socket counts, comma-separated")
    p.add_argument("--busy", default="500x200", help="busy host: PROCSxFDS, or 'none'")
    p.add_argument("--busy-tcp", type=int, default=10000, help="TCP sockets in the busy host case")
    p.add_argument("--reps", type=int, default=5, help="repetitions of each measurement (median shown)")
    p.add_argument("--sources", default="netlink,proc", help="exporter sources to time")
    p.add_argument("--concurrent", type=int, default=10, help="scrapes fired at once for the CPU check")
    p.add_argument("--cpu-rounds", type=int, default=3, help="rounds of 1 vs N concurrent scrapes")
    p.add_argument("--flat-scrapes", type=int, default=1000, help="back-to-back scrapes for RSS flatness")
    p.add_argument("--flat-scale", type=int, default=10000, help="the scale (of --scales) that runs them")
    p.add_argument("--busy-period", type=float, default=0.2,
                   help="holders busy phase: stop+continue every holder this often (0: no such phase)")
    p.add_argument("--busy-flat-scrapes", type=int, default=1000,
                   help="back-to-back scrapes with holders busy for RSS flatness (at --flat-scale)")
    p.add_argument("--exporter-root", metavar="DIR", help="run the server from this checkout (default: this one)")
    p.add_argument("--no-node-exporter", action="store_true", help="skip the node_exporter column")
    p.add_argument("--case-timeout", type=float, default=1200, help="seconds for one case's measurements")
    p.add_argument("--namespaces", metavar="NxS", help="also run network_namespaces: all at N namespaces of S "
                   "sockets each (tests/benchmark/namespaces.py; it has more options when run alone)")
    p.add_argument("--json", metavar="FILE", help="also write the raw results here")
    p.add_argument("--render", metavar="FILE", help="only print the table of results saved with --json")
    p.add_argument("--write-docs", metavar="FILE", nargs="?", const=str(docs.DEFAULT),
                   help="also write the table between the markers of FILE (default docs/performance.md)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        text = render([Case(**c) for c in saved["cases"]], saved["machine"], node_exporter=saved["node_exporter"],
                      flat_scrapes=args.flat_scrapes)
        print(text)
        if args.write_docs:
            docs.write(Path(args.write_docs), docs.block(text, date=saved.get("date", "?"),
                                                         command=saved.get("command", "?"),
                                                         seconds=saved.get("seconds")))
        return 0
    if os.geteuid() != 0:
        print("the benchmark needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.write_docs:  # refuse a file without the markers now, not after the whole run
        docs.splice(Path(args.write_docs).read_text(), "", args.write_docs)
    header, started = machine(), time.monotonic()
    date = time.strftime("%Y-%m-%d", time.gmtime())
    command = " ".join(["python -m tests.benchmark", *(argv if argv is not None else sys.argv[1:])])
    cases: list[Case] = []
    for tcp in (int(s) for s in args.scales.split(",") if s):
        flat = args.flat_scrapes if tcp == args.flat_scale else 0
        cases.append(run_case(f"{tcp // 1000}k" if tcp >= 1000 else str(tcp), tcp, None, args, flat))
    if args.busy != "none":
        procs, fds = (int(x) for x in args.busy.split("x"))
        cases.append(run_case(f"busy {procs}x{fds}", args.busy_tcp, (procs, fds), args, 0))
    node = shutil.which(NODE_EXPORTER) is not None and not args.no_node_exporter
    text = render(cases, header, node_exporter=node, flat_scrapes=args.flat_scrapes)
    print(text)
    seconds = time.monotonic() - started
    print(f"# done in {seconds:.0f} s", file=sys.stderr, flush=True)
    if args.write_docs:
        docs.write(Path(args.write_docs), docs.block(text, date=date, command=command, seconds=seconds))
    if args.namespaces:
        from tests.benchmark import namespaces  # its own table: a different population and targets
        n, per_ns = (int(x) for x in args.namespaces.split("x"))
        print("\n" + namespaces.run(n, per_ns, args.reps))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": header, "node_exporter": node, "date": date,
                                               "command": command, "seconds": seconds,
                                               "cases": [c.__dict__ for c in cases]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
