"""The listeners/ports/ephemeral views in the benchmark (docs/listeners-and-ports.md): rows and targets.

Two exporter rows, timed in-process like the others (collect + exposition, long-lived state):

* ``[all] + per-process + views``: the default scrape with listeners, ports and ephemeral on, the
  target "100k sockets still scrape at p50 <= 0.3 s";
* ``[inet] + views, counts only``: the same views without the owner scan.

Against ``psutil.net_connections('inet')`` plus the same per-port aggregation written in plain Python
(listening ports, direction, per (direction, port, status, family) counts, the port cap, ephemeral
use per (local address, remote address, remote port)), timed in the same run. psutil has no queues,
backlog or drops, so its side does less than the exporter's: the ratio is conservative.
"""

from __future__ import annotations

import dataclasses
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from exporter.exposition.registry import BudgetedRegistry
from exporter.exposition.sockets import SocketMetricsCollector
from exporter.pipeline.state import ExporterState
from exporter.settings.config import Config, PerProcessConfig
from exporter.settings.views import EphemeralConfig, ListenersConfig, PortsConfig
from tests.benchmark import budget

ROWS = {
    "exporter views all owners": "exporter netlink [all] + per-process + listeners/ports/ephemeral",
    "exporter views inet counts": "exporter netlink [inet] + listeners/ports/ephemeral, counts only",
    "psutil inet ports": "psutil.net_connections('inet') + per-port aggregation",
}
MAX_PORTS, TOP = 20, 5
VIEWS = {"listeners": ListenersConfig(enabled=True), "ports": PortsConfig(enabled=True, max_ports=MAX_PORTS),
         "ephemeral": EphemeralConfig(enabled=True, top=TOP)}


def _registry(kinds: str, owners: bool) -> CollectorRegistry:
    config = dataclasses.replace(Config(kinds=(kinds,), source="netlink",
                                        per_process=PerProcessConfig(enabled=owners)), **VIEWS)
    state = ExporterState.build(config)
    reg = BudgetedRegistry(lambda: config.limits.max_series)  # the server's registry: the budget counts
    reg.register(SocketMetricsCollector(lambda: state))
    return reg


def _exporter(kinds: str, owners: bool) -> Callable[[], int]:
    reg = _registry(kinds, owners)
    return lambda: len(generate_latest(reg))


def _psutil_ports() -> int:
    """psutil's connections, aggregated per service port and ephemeral tuple as the exporter does."""
    import psutil

    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    tcp = [c for c in psutil.net_connections("inet") if c.type == socket.SOCK_STREAM]
    listened = {c.laddr.port for c in tcp if c.status == "LISTEN"}
    by_port: Counter[tuple[str, int, str, int]] = Counter()
    ephemeral: Counter[tuple[str, str, int]] = Counter()
    for c in tcp:
        lport, rport = c.laddr.port, c.raddr.port if c.raddr else 0
        direction, port = ("inbound", lport) if lport in listened else ("outbound", rport)
        by_port[(direction, port, c.status, c.family)] += 1
        if c.status != "LISTEN" and rport and low <= lport <= high:
            ephemeral[(c.laddr.ip, c.raddr.ip, rport)] += 1
    size: Counter[tuple[str, int]] = Counter()
    for (direction, port, _status, _family), n in by_port.items():
        size[(direction, port)] += n
    kept = {k for k, _ in size.most_common(MAX_PORTS)}
    folded: Counter[tuple[str, Any, str, int]] = Counter()
    for (direction, port, status, family), n in by_port.items():
        folded[(direction, port if (direction, port) in kept else "other", status, family)] += n
    top, most = ephemeral.most_common(TOP), max(ephemeral.values(), default=0)
    return len(folded) + len(top) + (most > 0)  # the series the exporter would export for these


def measurements(timed_self: Callable[[Callable[[], int]], Any]) -> dict[str, Callable[[], Any]]:
    """The rows above as the harness (tests/benchmark/measure.py) times them."""
    full, inet = _exporter("all", True), _exporter("inet", False)
    return {"exporter views all owners": lambda: timed_self(full),
            "exporter views inet counts": lambda: timed_self(inet),
            "psutil inet ports": lambda: timed_self(_psutil_ports),
            **budget.measurements(timed_self, lambda: list(_registry("all", True).collect()))}


def targets(median: Callable[[str], float | None], check: Callable[..., None]) -> None:
    """The targets for the views, on the largest case."""
    full, psutil = median("exporter views all owners"), median("psutil inet ports")
    check("views on, [all] + per-process: median s", full, 0.3, True, "{:.3f}")
    check("psutil('inet') + per-port / views on [all] + per-process",
          psutil / full if psutil is not None and full else None, 5, False)
    budget.targets(median, check)
