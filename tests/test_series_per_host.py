"""Series per host (issue 13): the real exporter on a node of 110 pods, 500 processes and 50 busy ports.

tests/fleet_host.py builds the node; the exporter runs inside the node's namespace (as a
``hostNetwork`` DaemonSet does) and is scraped over one keep-alive connection from inside it, so the
scrape's own sockets are the same at every scrape and in every ``ss`` snapshot. Two configs: (a) the
default (``network_namespaces: own``, views off) and (b) the Kubernetes DaemonSet shape
(``--network-namespaces all``, per process on), with the listeners, ports and ephemeral views on,  and
with the collectors config/kubernetes/daemonset.yaml switches on. Each family's samples are counted and checked
against its formula (tests/series_count.py), whose inputs come from ``ss`` inside each namespace and
from /proc, taken before and after the scrape and equal.

In ``all`` mode the exporter reads EVERY namespace of this machine: the root namespace and whatever
other tests hold. Assertions are on the namespaces built here (by inode); the rest is noise, printed
with the measured figures (run with ``-s`` to see them; README "Series per host" quotes them).
"""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from exporter.settings.config import Config
from tests._nsthread import in_netns
from tests._require import require, require_netns
from tests._served import running_exporter
from tests.exposition import samples
from tests.fleet_build import SLEEP
from tests.fleet_host import BUSY_PORTS, PODS, PROCESSES, FleetHost, fleet_host
from tests.kubelet_cgroups import V1_PIDS, usable
from tests.reference import SsKey
from tests.series_count import (
    FIXED,
    FIXED_ALL,
    GROWING,
    NAMESPACED_VIEWS,
    count_samples,
    namespace_series,
    process_parts,
    view_series,
)
from tests.ss_snapshot import Snapshot, owned, snapshots, socket_owners
from tests.test_end_to_end import stable

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parent.parent
PORT = 9731  # inside the node's namespace: nothing else there listens on it
MAX_OWNERS = 100  # per_process.max_owners, the default
VIEWS_ON = "listeners: {enabled: true}\nports: {enabled: true}\nephemeral: {enabled: true}\n"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetHost]:
    require_netns()
    require(usable("v1-cgroupfs"), "needs a writable v1 pids cgroup hierarchy")
    require(os.access(SLEEP, os.X_OK), f"needs {SLEEP}")
    with fleet_host(tmp_path_factory.mktemp("fleet")) as built:
        yield built


class Scraper:
    """HTTP/1.1 keep-alive to the exporter from inside a namespace: one connection for every scrape."""

    def __init__(self, netns: str, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.sock = in_netns(netns, lambda: socket.create_connection(("127.0.0.1", port)))
        self.conn.connect = self._gone  # type: ignore[method-assign]  # never reconnect from outside the namespace

    def _gone(self) -> None:
        raise AssertionError("the exporter closed the keep-alive connection")

    def get(self, encoding: str = "identity") -> tuple[bytes, float]:
        start = time.monotonic()
        self.conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body[:500]
        assert resp.getheader("Content-Encoding", "identity") == encoding
        return body, time.monotonic() - start


@dataclass
class Measured:
    """One config's exposition on the built host."""

    counts: dict[str, int]
    plain_bytes: int
    gzip_bytes: int
    scrape_seconds: float  # median of 5 keep-alive scrapes, wall time at the client
    noise: dict[str, int] = field(default_factory=dict)  # samples of namespaces and processes not built here
    split: dict[str, tuple[int, int]] = field(default_factory=dict)  # family -> (node's netns, pods' netns)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, title: str) -> str:
        lines = [f"{title}: {self.total} samples ({sum(self.noise.values())} of them noise), {self.plain_bytes} bytes "
                 f"plain, {self.gzip_bytes} gzip, scrape p50 {self.scrape_seconds:.3f} s"]
        node, pods = (sum(n[i] for n in self.split.values()) for i in (0, 1))
        lines += [f"  by netns label: node {node}, pods {pods}"] if self.split else []
        lines += [f"  {n:6d} {name}" + (f"  (node {self.split[name][0]}, pods {self.split[name][1]})"
                                        if name in self.split else "")
                  + (f"  (noise {self.noise[name]})" if self.noise.get(name) else "")
                  for name, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "\n".join(lines)


References = tuple[dict[str, Snapshot], dict[int, int]]


def references(host: FleetHost, names: list[str]) -> References:
    """ss snapshots of ``names`` and the owners of their sockets; compares equal when nothing moved."""
    snaps = snapshots(names)
    inodes = {s.inode for snap in snaps.values() for s in snap.socks if s.inode}
    return snaps, {i: pid for i, pid in socket_owners().items() if i in inodes}


def measure(scraper: Scraper, text: str) -> Measured:
    gz, _ = scraper.get("gzip")
    times = [scraper.get()[1] for _ in range(5)]
    assert count_samples(gzip.decompress(gz).decode()).keys() == count_samples(text).keys()
    return Measured(count_samples(text), len(text.encode()), len(gz), statistics.median(times))


def test_the_host_is_what_issue_13_describes(host: FleetHost) -> None:
    """500 socket owners by /proc, 110 pods named by their cgroups, 50 ports busy both ways, by ss."""
    snaps, owners = references(host, [ns.name for ns in host.namespaces().values()])
    holders = {owners[s.inode] for snap in snaps.values() for s in snap.socks if s.inode in owners}
    assert holders == {h.pid for h in host.holders} and len(holders) == PROCESSES
    for pod in host.pods:
        with open(f"/proc/{min(pod.app.pid, pod.envoy.pid)}/cgroup") as f:
            assert f"pids:/kubepods/burstable/pod{pod.uid}/" in f.read()
    tcp = snaps[host.node.name].tcp()
    for port in host.servers:
        inbound = sum(1 for row in tcp.rows if row[5] == port and row[1] not in ("LISTEN", "TIME_WAIT"))
        outbound = sum(1 for row in tcp.rows if row[7] == port)
        assert inbound >= 3 and outbound >= 3, (port, inbound, outbound)
    assert len(host.servers) == BUSY_PORTS and len(host.pods) == PODS
    assert host.build_seconds < 30


def test_default_config(host: FleetHost, tmp_path: Path) -> None:
    """(a) own mode, views off: only socket_process_connections grows; it equals its formula."""
    host.refresh_time_wait()
    with running_exporter(host.node, PORT, tmp_path / "own.log"):
        scraper = Scraper(host.node.name, PORT)
        (snaps, owners), text = stable(lambda: references(host, [host.node.name]),
                                       lambda: scraper.get()[0].decode())
        m = measure(scraper, text)
    parts = process_parts(owned(snaps[host.node.name], owners), MAX_OWNERS)
    print("\n" + m.report("default config (own mode, views off)"))
    print("  socket_process_connections: kept owners {}, unowned {}, other {}".format(*parts))
    assert unexplained(m.counts, FIXED) == set()
    assert {k: m.counts[k] for k in FIXED} == FIXED
    assert m.counts["socket_process_connections"] == sum(parts)
    assert set(m.counts) - set(FIXED) == {"socket_process_connections"}
    assert m.total < Config().limits.max_series / 2


def shipped_collectors() -> list[str]:
    """The ``--[no-]collector.*`` flags config/kubernetes/daemonset.yaml runs with."""
    docs = yaml.safe_load_all((ROOT / "config/kubernetes/daemonset.yaml").read_text())
    manifest = next(d for d in docs if d and d.get("kind") == "DaemonSet")
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    return [a for a in args if a.startswith(("--collector.", "--no-collector."))]


@pytest.mark.parametrize("views", [True, False], ids=["views-on", "shipped"])
def test_daemonset_shape(host: FleetHost, tmp_path: Path, views: bool) -> None:
    """(b) all mode, with every view (and with the collectors config/kubernetes/daemonset.yaml switches
    on): each namespace built here equals its formulas, family by family; the owners kept include ours."""
    config = tmp_path / "daemonset.yml"
    config.write_text(VIEWS_ON if views else "{}\n")
    flags = [] if views else shipped_collectors()
    mine = host.namespaces()
    host.refresh_time_wait()
    with running_exporter(host.node, PORT, tmp_path / "all.log", "--network-namespaces", "all", "--config",
                          str(config), "--path.pod-logs", str(host.pod_logs), *flags):
        scraper = Scraper(host.node.name, PORT)
        (snaps, owners), text = stable(lambda: references(host, [ns.name for ns in mine.values()]),
                                       lambda: scraper.get()[0].decode())
        m = measure(scraper, text)
    by_family = samples(text)
    fixed = FIXED_ALL  # the shipped flags switch on listeners and ephemeral: the same five stages
    assert unexplained(m.counts, fixed) == set()
    assert {k: m.counts[k] for k in fixed} == fixed
    got: dict[str, Counter[str]] = {}  # family -> samples per netns label
    for name in ("socket_namespace_connections", *NAMESPACED_VIEWS):
        got[name] = Counter(labels["netns"] for labels, _ in by_family.get(name, []))
        m.noise[name] = sum(n for netns, n in got[name].items() if netns not in mine)
    for inode, ns in mine.items():
        snap = snaps[ns.name]
        want = {"socket_namespace_connections": namespace_series(snap), **dict.fromkeys(NAMESPACED_VIEWS, 0)}
        want.update(view_series(snap))
        if not views:  # shipped: --collector.listeners --collector.ephemeral, ports off
            want.update(dict.fromkeys((n for n in NAMESPACED_VIEWS if n.startswith("socket_port_")), 0))
        assert {name: got[name][inode] for name in want} == want, ns.name
    for pod in host.pods:
        idents = {(lab["pod_uid"], lab["pod_namespace"], lab["pod_name"])
                  for lab, _ in by_family["socket_namespace_connections"] if lab["netns"] == str(pod.inode)}
        assert idents == {(pod.uid, "fleet", pod.name)}
    check_processes(host, by_family, snaps, owners, m)
    m.split = {name: (c[str(host.node_inode)], sum(c[str(p.inode)] for p in host.pods)) for name, c in got.items() if c}
    print("\n" + m.report(f"DaemonSet shape (all mode, {'every view on' if views else 'as shipped'})"))
    assert m.total < Config().limits.max_series / 2  # room to spare, this machine's noise included
    assert m.counts["socket_exporter_series"] == 1 and f"socket_exporter_series {m.total}.0" in text


def check_processes(host: FleetHost, by_family: dict[str, list[tuple[dict[str, str], float]]],
                    snaps: dict[str, Snapshot], owners: dict[int, int], m: Measured) -> None:
    """Host-wide owners: the kept ones built here have their formula's series; the kept set is max_owners."""
    keys: dict[str, set[SsKey]] = {}
    for snap in snaps.values():
        for key, pid in owned(snap, owners):
            if pid is not None:
                keys.setdefault(str(pid), set()).add(key)
    series = Counter(lab["pid"] for lab, _ in by_family["socket_process_connections"])
    kept = set(series) - {"unowned", "other"}
    assert len(kept) == MAX_OWNERS and by_family["socket_process_owners_folded"][0][1] > 0
    ours = {str(h.pid) for h in host.holders}
    assert kept & ours, "none of the built processes is among the kept owners"
    for label in kept & ours:
        assert series[label] == len(keys[label]), label
    m.noise["socket_process_connections"] = sum(n for pid, n in series.items() if pid in kept and pid not in keys)


def unexplained(counts: dict[str, int], fixed: dict[str, int]) -> set[str]:
    """Families with neither a fixed count nor a formula: give them one (README "Series per host")."""
    return set(counts) - set(fixed) - set(GROWING)


def test_teardown_leaves_nothing_even_on_failure(tmp_path: Path) -> None:
    """A build failing midway, and a test failing inside a built host: no namespace, process or cgroup left."""
    require_netns()
    require(usable("v1-cgroupfs"), "needs a writable v1 pids cgroup hierarchy")
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    # 1 busy port has 5 client ends for 20 clients: fails once its server and the namespaces exist
    with pytest.raises(ValueError, match="client connections cannot give"), \
            fleet_host(tmp_path / "a", pods=1, processes=32, busy_ports=1):
        pass
    (tmp_path / "b").mkdir()
    with pytest.raises(RuntimeError, match="boom"), fleet_host(tmp_path / "b", pods=3, processes=24, busy_ports=4) as h:
        small = h
        raise RuntimeError("boom")
    assert set(os.listdir("/run/netns")) - before == set()
    assert all(holder.proc.returncode is not None for holder in small.holders)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid).startswith(str(tmp_path))]
    assert not [p for p in small.pods if os.path.exists(f"{V1_PIDS}/kubepods/burstable/pod{p.uid}")]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""
