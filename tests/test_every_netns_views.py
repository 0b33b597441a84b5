"""Listeners, ports and ephemeral views per namespace with ``network_namespaces: all``.

Two namespaces each hold tests/port_population.py (a listener with backlog 3 and ten clients, so a
full accept queue and counted drops, service ports, 45 clients of one destination) with ephemeral
ranges of their own. The real exporter runs in the root namespace with ``--network-namespaces all``
and every view series of a namespace, picked by its ``netns`` label, must equal ``ss`` and
``sysctl`` run inside that namespace (tests/ss_ports.py): both namespaces listen on the same ports,
so a view that mixed them (or read the exporter's own namespace) would be off by a whole population.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_netns
from tests.every_netns import IDENTITY, exporter_all, netns_inode
from tests.exposition import samples
from tests.netns import Netns
from tests.port_population import BACKLOG
from tests.ss_ports import port_range
from tests.test_listeners_ports import (
    CONN,
    RX,
    TX,
    Samples,
    by,
    floats,
    keyed,
    listener_figures,
    stable,
    start_population,
    views_config,
)

#: (ip_local_port_range, ip_local_reserved_ports) of each namespace: different, to tell them apart
RANGES = (("41000 41999", "41000-41009,41500"), ("43000 43499", "43100-43119"))
VIEW_PREFIXES = ("socket_listen_", "socket_port_", "socket_ephemeral_", "socket_metric_unavailable")


@pytest.fixture(scope="module")
def two_ns() -> Iterator[list[Netns]]:
    require_netns()
    with Netns() as a, Netns() as b:
        for ns, (ports, reserved) in zip((a, b), RANGES, strict=True):
            start_population(ns, ports, reserved)
        yield [a, b]


def only(s: Samples, netns: str) -> Samples:
    """The view series of one namespace (every other family left out)."""
    return {name: [(x, v) for x, v in rows if x.get("netns") == netns]
            for name, rows in s.items() if name.startswith(VIEW_PREFIXES)}


@pytest.mark.root
def test_each_namespace_views_equal_ss_inside_it(two_ns: list[Netns], tmp_path: Path) -> None:
    with exporter_all(tmp_path, "--config", str(views_config(tmp_path))) as (client, _):
        for ns in two_ns:
            full, ss = stable(ns, lambda: client.get()[1])
            s = only(full, str(netns_inode(ns.name)))
            length, limit, drops = listener_figures(s)
            ss_length, ss_limit = ss.listeners()
            assert length == keyed(ss_length) and limit == keyed(ss_limit)
            assert length[("AF_INET", str(BACKLOG))] == 4 and limit[("AF_INET", str(BACKLOG))] == 3
            assert drops == keyed(ss.drops) and drops[("AF_INET", str(BACKLOG))] > 0
            conns, rx, tx = ss.ports()
            assert by(s, *CONN) == floats(conns)
            assert by(s, *RX) == floats(rx) and by(s, *TX) == floats(tx)
            low, high, reserved = port_range(ns)
            assert by(s, "socket_ephemeral_port_range_size") == {(): usable(low, high, reserved)}
            use = ss.ephemeral(low, high, reserved)
            assert by(s, "socket_ephemeral_ports_max_in_use") == {(): float(max(use.values()))}
            top = by(s, "socket_ephemeral_ports_in_use", "family", "local_address", "remote_address", "remote_port")
            assert top == {k: float(n) for k, n in use.most_common(3)}
            assert by(s, "socket_listen_folded") == {(): 0.0} and by(s, "socket_port_folded") == {(): 0.0}
            for rows in s.values():  # the identity labels of socket_namespace_connections: the host's, empty
                assert all(tuple(x[k] for k in IDENTITY) == ("", "", "", "") for x, _ in rows)


@pytest.mark.root
def test_every_view_series_names_its_namespace(two_ns: list[Netns], tmp_path: Path) -> None:
    with exporter_all(tmp_path, "--config", str(views_config(tmp_path))) as (client, _):
        text = client.get()[1]
    s = samples(text)
    views = {name: rows for name, rows in s.items() if name.startswith(VIEW_PREFIXES)}
    assert views and all(set(IDENTITY) | {"netns"} <= x.keys() for rows in views.values() for x, _ in rows)
    ranges = {x["netns"]: v for x, v in s["socket_ephemeral_port_range_size"]}
    for ns in two_ns:
        assert ranges[str(netns_inode(ns.name))] == usable(*port_range(ns))
    # The root namespace (the exporter's listener is a TCP socket there) has its own range: sysctl's
    out = subprocess.run(["sysctl", "-n", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    low, high = map(int, out[0].split())
    reserved = set()
    for item in out[1].strip().split(","):
        if item:
            first, _, last = item.partition("-")
            reserved.update(range(int(first), int(last or first) + 1))
    assert ranges[str(os.stat("/proc/self/ns/net").st_ino)] == usable(low, high, reserved)
    assert len(set(ranges.values())) == 3  # three namespaces, three ranges: none read another's


def usable(low: int, high: int, reserved: set[int]) -> float:
    return float(high - low + 1 - len(reserved & set(range(low, high + 1))))


@pytest.mark.root
def test_without_setns_each_namespace_has_what_proc_gives(two_ns: list[Netns], tmp_path: Path) -> None:
    """setns refused: each namespace is read through /proc/PID/net of a process inside. Ports and
    accept queue lengths are exact; the backlog, the drops and the ephemeral range (a sysctl of the
    namespace, out of reach without entering it) are absent and named, not 0 and not the root's."""
    drop = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]
    with exporter_all(tmp_path, "--config", str(views_config(tmp_path)), wrapper=drop) as (client, _):
        for ns in two_ns:
            full, ss = stable(ns, lambda: client.get()[1])
            s = only(full, str(netns_inode(ns.name)))
            length, limit, drops = listener_figures(s)
            assert length == keyed(ss.listeners()[0]) and limit == {} and drops == {}
            conns, rx, tx = ss.ports()
            assert by(s, *CONN) == floats(conns)
            assert by(s, *RX) == floats(rx) and by(s, *TX) == floats(tx)
            assert not [name for name, rows in s.items() if name.startswith("socket_ephemeral") and rows]
            missing = {"socket_listen_queue_limit", "socket_listen_drops_total", "socket_ephemeral_port_range_size",
                       "socket_ephemeral_ports_max_in_use"}
            assert set(by(s, "socket_metric_unavailable", "metric", "table", "reason")) == {
                (m, t, "proc") for m in missing for t in ("tcp", "tcp6")}
