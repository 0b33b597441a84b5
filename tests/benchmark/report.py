"""Turn the harness's raw samples into the one table the benchmark prints, plus its targets.

Kept apart from the runners so the smoke test can render made-up results without root, and so the
arithmetic (medians, which psutil run a row is compared with) is in one readable place.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from tests.benchmark import budget, ports

MB = 1 << 20
#: harness name -> row label, in table order. "[tcp]"/"[all]" is the exporter's ``kinds``.
ROWS = {
    "exporter netlink tcp counts": "exporter netlink [tcp], counts only",
    "exporter netlink all counts": "exporter netlink [all], counts only",
    "exporter netlink tcp owners": "exporter netlink [tcp] + per-process",
    "exporter netlink all owners": "exporter netlink [all] + per-process",
    "exporter netlink all owners cold": "exporter netlink [all] + per-process, owner cache off",
    "exporter proc tcp counts": "exporter proc [tcp], counts only",
    "exporter proc all counts": "exporter proc [all], counts only",
    "exporter proc tcp owners": "exporter proc [tcp] + per-process",
    "exporter proc all owners": "exporter proc [all] + per-process",
    "exporter HTTP scrape": "exporter HTTP scrape (server, [all] + per-process)",
    "busy exporter HTTP scrape": "HOLDERS BUSY: exporter HTTP scrape (server + scan workers)",
    "busy exporter netlink all owners": "HOLDERS BUSY: exporter netlink [all] + per-process",
    "busy psutil all": "HOLDERS BUSY: psutil.net_connections('all') + counts by pid",
    "psutil tcp": "psutil.net_connections('tcp') + counts",
    "psutil all": "psutil.net_connections('all') + counts by pid",
    "ss -tan": "ss -tan",
    "ss -tanp": "ss -tanp",
    "node_exporter tcpstat": "node_exporter tcpstat scrape",
}
ROWS.update(ports.ROWS)  # the listeners/ports/ephemeral views' rows (tests/benchmark/ports.py)
ROWS.update(budget.ROWS)  # the series budget's (tests/benchmark/budget.py): no psutil peer


@dataclass
class Case:
    name: str
    sockets: int  # TCP sockets ss saw at the end
    processes: int
    result: dict[str, Any]

    def median(self, name: str, cpu: bool = False) -> float | None:
        samples = self.result["samples"].get(name)
        return statistics.median(s[1 if cpu else 0] for s in samples) if samples else None


def psutil_peer(name: str) -> str:
    """The psutil run a row is compared with: same kinds ([all] rows and the server vs 'all'), a
    "holders busy" row with psutil run while the holders were busy, a ports row with psutil 'inet'."""
    if name in budget.ROWS:
        return ""  # no psutil equivalent: the ratio column shows "-"
    if name in ports.ROWS:
        return "psutil inet ports"
    if name.startswith("busy "):
        return "busy psutil all"
    return "psutil all" if " all " in f" {name} " or "HTTP" in name else "psutil tcp"


def _ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.1f}" if num and den else "-"


def table(cases: list[Case], node_exporter: bool) -> list[str]:
    head = ("| case | measurement | median s | CPU s | psutil / this (x faster) | this / node_exporter "
            "| exposition bytes |")
    lines = [head, "|" + " --- |" * 7]
    for case in cases:
        node = case.median("node_exporter tcpstat")
        first = f"{case.name} ({case.sockets} TCP, {case.processes} procs)"
        for name, label in ROWS.items():
            wall = case.median(name)
            if wall is None:
                continue
            cpu = case.median(name, cpu=True)
            size = case.result["bytes"].get(name, "") if name.startswith(("exporter", "node")) else ""
            lines.append(f"| {first} | {label} | {wall:.3f} | {cpu:.3f} | "
                         f"{_ratio(case.median(psutil_peer(name)), wall)} | {_ratio(wall, node)} | {size} |")
            first = ""
        conc = case.result["concurrency"]
        n = max(conc, key=lambda k: int(k) if k.isdigit() else 0)
        one, many = statistics.median(conc["1"]), statistics.median(conc[n])
        ok = sum(s == 200 for s in conc["statuses"])
        lines.append(f"| | server CPU: 1 scrape / {n} concurrent | {one:.3f} / {many:.3f} | | | "
                     f"ratio {_ratio(many, one)} | {ok}/{len(conc['statuses'])} answered 200 |")
        lines.append(f"| | server peak RSS (VmHWM) | {case.result['rss_hwm'] / MB:.1f} MB | | | | |")
        if flat := case.result.get("flat_rss"):
            last = max(flat, key=int)
            lines.append(f"| | server RSS after 1 / 10 / {last} scrapes | "
                         f"{' / '.join(f'{flat[k] / MB:.1f}' for k in sorted(flat, key=int))} MB | | | | |")
        for phase, mem in (("holders idle", case.result.get("memory")),
                           ("holders busy", case.result.get("busy", {}).get("memory"))):
            if mem:
                lines.append(f"| | {phase}: server + {mem['workers']} scan workers, RSS sum / Pss sum / "
                             f"peak RSS sum | {mem['family_rss'] / MB:.1f} / {mem['family_pss'] / MB:.1f} / "
                             f"{mem['family_hwm'] / MB:.1f} MB | | | | |")
        if flat := case.result.get("busy", {}).get("flat"):
            last = max(flat, key=int)
            lines.append(f"| | holders busy: server + workers RSS sum after 1 / 10 / {last} scrapes | "
                         f"{' / '.join(f'{flat[k] / MB:.1f}' for k in sorted(flat, key=int))} MB | | | | |")
    if not node_exporter:
        lines.append("\nnode_exporter column skipped: prometheus-node-exporter is not installed.")
    return lines


def targets(cases: list[Case], flat_scrapes: int) -> list[str]:
    """The targets, evaluated on the largest plain case (and the smallest, for linearity)."""
    plain = [c for c in cases if not c.name.startswith("busy")]
    if not plain:
        return []
    big, small = max(plain, key=lambda c: c.sockets), min(plain, key=lambda c: c.sockets)
    out: list[str] = [f"Targets at {big.name}:"]
    if big.sockets < 90_000:
        out.append(f"(the targets are set for 100k sockets; at {big.name} they are indicative only)")

    def check(what: str, value: float | None, limit: float, below: bool, fmt: str = "{:.2f}") -> None:
        if value is None:
            out.append(f"- {what}: not measured")
            return
        met = value <= limit if below else value >= limit
        out.append(f"- {what}: {fmt.format(value)} ({'<=' if below else '>='} {fmt.format(limit)}) "
                   f"{'MET' if met else 'MISSED'}")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    m = big.median
    check("counts [tcp] / node_exporter tcpstat", ratio(m("exporter netlink tcp counts"),
                                                        m("node_exporter tcpstat")), 1.5, True)
    check("psutil('tcp') / counts [tcp]", ratio(m("psutil tcp"), m("exporter netlink tcp counts")), 10, False)
    check("psutil('all') / per-process [all]", ratio(m("psutil all"), m("exporter netlink all owners")), 3, False)
    check("(informational, the worst case) per-process [all] with no owner cache, as if every holder were busy: "
          "psutil('all') / it",
          ratio(m("psutil all"), m("exporter netlink all owners cold")), 3, False)
    check("per-process [tcp] / ss -tanp", ratio(m("exporter netlink tcp owners"), m("ss -tanp")), 1, True)
    check("HTTP scrape median, s", m("exporter HTTP scrape"), 0.5, True, "{:.3f}")
    check("holders busy: HTTP scrape median, s", m("busy exporter HTTP scrape"), 0.35, True, "{:.3f}")
    check("holders busy: psutil('all') / HTTP scrape", ratio(m("busy psutil all"), m("busy exporter HTTP scrape")),
          4, False)
    busy_cpu = m("busy exporter HTTP scrape", cpu=True)
    out.append(f"- holders busy: CPU s per HTTP scrape, server + scan workers: "
               f"{'-' if busy_cpu is None else f'{busy_cpu:.3f}'} (compare with another "
               f"checkout's server: --exporter-root)")
    check("peak RSS, MB", max(c.result["rss_hwm"] for c in cases) / MB, 100, True, "{:.1f}")
    family = [mem["family_hwm"] for c in cases for mem in (c.result.get("memory"), c.result.get("busy", {}).get(
        "memory")) if mem]
    check("peak RSS of server + scan workers (sum of VmHWM), MB", max(family) / MB if family else None, 100, True,
          "{:.1f}")
    for what, flat in (("", next((c.result["flat_rss"] for c in cases if c.result.get("flat_rss")), None)),
                       ("holders busy: server + workers ",
                        next((c.result["busy"]["flat"] for c in cases if c.result.get("busy", {}).get("flat")),
                             None))):
        if flat:
            growth = (flat[str(max(map(int, flat)))] - flat["10"]) / MB
            check(f"{what}RSS growth from scrape 10 to {max(map(int, flat))} (at {small.name}), MB", growth, 5, True)
    if big is not small:
        for name in ("exporter netlink all owners", "exporter netlink tcp counts", "exporter HTTP scrape"):
            check(f"{name}: time at {big.name} / at {small.name}", ratio(m(name), small.median(name)), 12, True)
    ports.targets(m, check)
    conc = big.result["concurrency"]
    n = max(conc, key=lambda k: int(k) if k.isdigit() else 0)
    check(f"server CPU of {n} concurrent scrapes / of 1",
          ratio(statistics.median(conc[n]), statistics.median(conc["1"])), 2, True)
    return out


def render(cases: list[Case], machine: str, *, node_exporter: bool, flat_scrapes: int) -> str:
    return "\n".join([f"Machine: {machine}", "", *table(cases, node_exporter), "", *targets(cases, flat_scrapes)])
