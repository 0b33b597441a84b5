"""Exposition of the listeners, ports and ephemeral views (README "Listeners and ports").

Families are yielded only for the views that are on, from this scrape's :class:`ViewsResult` only;
a metric the source cannot give is absent and named in ``socket_metric_unavailable`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..aggregate.listeners import PortValues
from ..collection import Collection
from ..model import FAMILY_LABEL, Table
from ..port_views import ViewsResult

Family = GaugeMetricFamily | CounterMetricFamily
LISTEN_LABELS = ["family", "port"]


def _fam(table: Table) -> str:
    return FAMILY_LABEL[table.family]


def view_families(c: Collection) -> Iterator[Family]:
    """Every family of the enabled views; nothing when they are all off."""
    v = c.views
    if v is None:
        return
    if c.config.listeners.enabled:
        yield from _listener_families(v)
    if v.ports is not None:
        yield from _port_families(v)
    if c.config.ephemeral.enabled:
        yield from _ephemeral_families(v)


def _by_port(name: str, doc: str, values: PortValues, counter: bool = False) -> Family:
    family: Family = (CounterMetricFamily if counter else GaugeMetricFamily)(name, doc, labels=LISTEN_LABELS)
    for table in sorted(values, key=lambda t: t.value):
        fam = _fam(table)
        for port, n in sorted(values[table].items()):
            family.add_metric([fam, str(port)], n)
    return family


def _listener_families(v: ViewsResult) -> Iterator[Family]:
    q = v.listeners
    if q is not None:
        yield _by_port("socket_listen_queue_length",
                       "Accept queue length (connections not yet accept()ed) summed over the TCP listeners of a "
                       "port. A full queue holds limit + 1.", q.length)
        yield _by_port("socket_listen_queue_limit",
                       "Accept queue limit (listen() backlog) summed over the TCP listeners of a port.", q.limit)
        yield GaugeMetricFamily("socket_listen_folded",
                                "Listening ports beyond listeners.max_ports, not exported this scrape (the "
                                "saturated and dropping ones are kept first).", value=q.folded)
    yield _by_port("socket_listen_drops",
                   "SYNs dropped by the TCP listeners of a port (SK_MEMINFO_DROPS, mostly a full accept queue); "
                   "never decreases while the exporter runs, across listener restarts.", v.drops, counter=True)
    unavailable = GaugeMetricFamily(
        "socket_metric_unavailable",
        "1 for each metric and table the source cannot provide this scrape (reason proc: /proc/net has no "
        "backlog or drops; kernel: older than 4.7); that metric's series are absent, not 0.",
        labels=["metric", "table", "reason"])
    for metric, table, reason in v.unavailable:
        unavailable.add_metric([metric, table.value, reason], 1.0)
    yield unavailable


def _port_families(v: ViewsResult) -> Iterator[Family]:
    p = v.ports
    assert p is not None
    conns = GaugeMetricFamily(
        "socket_port_connections",
        "TCP sockets by service port: direction inbound (local port has a listener here) or outbound (remote "
        "port). Ports beyond ports.max_ports are summed into port=\"other\"; sums to socket_connections.",
        labels=["direction", "port", "status", "family"])
    for (direction, port, table, status), n in sorted(p.connections.items(), key=lambda kv: _order(kv[0])):
        conns.add_metric([direction, port, status, _fam(table)], n)
    yield conns
    for name, doc, values in (
        ("socket_port_receive_queue_bytes", "Bytes received and not yet read by the application, summed over "
         "the non-LISTEN TCP sockets of a service port.", p.receive_bytes),
        ("socket_port_send_queue_bytes", "Bytes sent and not yet acknowledged by the peer, summed over the "
         "non-LISTEN TCP sockets of a service port.", p.send_bytes),
    ):
        family = GaugeMetricFamily(name, doc, labels=["direction", "port", "family"])
        for (direction, port, table), n in sorted(values.items(), key=lambda kv: _order(kv[0])):
            family.add_metric([direction, port, _fam(table)], n)
        yield family
    yield GaugeMetricFamily("socket_port_folded",
                            "Service ports (per direction) beyond ports.max_ports summed into port=\"other\".",
                            value=p.folded)


def _order(key: tuple[object, ...]) -> tuple[object, ...]:
    direction, port = key[0], str(key[1])
    return (direction, port == "other", int(port) if port.isdigit() else 0, *map(str, key[2:]))


def _ephemeral_families(v: ViewsResult) -> Iterator[Family]:
    e = v.ephemeral
    if e is None:  # the range could not be read: the stage failed, the series are absent
        return
    yield GaugeMetricFamily("socket_ephemeral_port_range_size",
                            "Local ports the kernel can pick for connect(): ip_local_port_range minus "
                            "ip_local_reserved_ports.", value=e.range_size)
    yield GaugeMetricFamily("socket_ephemeral_ports_max_in_use",
                            "Most local ports of the ephemeral range in use (TIME_WAIT included) towards one "
                            "(local address, remote address, remote port): runs out at the range size.",
                            value=e.max_in_use)
    top = GaugeMetricFamily("socket_ephemeral_ports_in_use",
                            "Local ports of the ephemeral range in use per (local address, remote address, remote "
                            "port), for the ephemeral.top busiest tuples.",
                            labels=["family", "local_address", "remote_address", "remote_port"])
    for (table, local, remote, port), n in e.top:
        top.add_metric([_fam(table), local, remote, str(port)], n)
    yield top
