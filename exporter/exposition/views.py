"""Exposition of the listeners, ports and ephemeral views (README "Listeners and ports").

Families are yielded only for the views that are on, from this scrape's :class:`ViewsResult` only;
a metric the source cannot give is absent and named in ``socket_metric_unavailable`` instead.

In ``network_namespaces: all`` every namespace read has views of its own, and each of its series
carries ``netns`` and the identity labels after its own labels, exactly as
``socket_namespace_connections`` (exposition/namespaces.py): a port is a service only within one
namespace. In ``own`` mode those labels do not exist and the output is what it always was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..aggregate.listeners import PortValues
from ..aggregate.ports import QueueKey
from ..model.table import FAMILY_LABEL, Table
from ..pipeline.collection import Collection
from ..pipeline.views import ViewsResult
from .namespaces import IDENTITY_LABELS

NS_LABELS = ["netns", *IDENTITY_LABELS]

Family = GaugeMetricFamily | CounterMetricFamily
LISTEN_LABELS = ["family", "port"]
#: (netns and identity label values, or none in own mode; that namespace's views)
Scoped = Sequence[tuple[list[str], ViewsResult]]


def _fam(table: Table) -> str:
    return FAMILY_LABEL[table.family]


def view_families(c: Collection) -> Iterator[Family]:
    """Every family of the enabled views; nothing when they are all off."""
    if c.namespaces is None:
        views: Scoped = [([], c.views)] if c.views is not None else []
        extra: list[str] = []
    else:
        views = [([str(ns.inode), ns.identity.pod_uid, *ns.pod, ns.identity.container_id], c.namespace_views[ns.inode])
                 for ns in sorted(c.namespaces, key=lambda n: n.inode) if ns.inode in c.namespace_views]
        extra = NS_LABELS
    if c.views is None and not views:
        return
    if c.config.listeners.enabled:
        yield from _listener_families(views, extra)
    if c.config.ports.enabled:
        yield from _port_families([(e, v) for e, v in views if v.ports is not None], extra)
    if c.config.ephemeral.enabled:
        yield from _ephemeral_families(views, extra)


def _gauge(name: str, doc: str, extra: list[str], values: Sequence[tuple[list[str], float]]) -> GaugeMetricFamily:
    """One gauge per namespace (or one unlabelled gauge in own mode, as before)."""
    if not extra:
        return GaugeMetricFamily(name, doc, value=values[0][1] if values else 0)
    family = GaugeMetricFamily(name, doc, labels=extra)
    for labels, n in values:
        family.add_metric(labels, n)
    return family


def _by_port(name: str, doc: str, scoped: Sequence[tuple[list[str], PortValues]], extra: list[str],
             counter: bool = False) -> Family:
    family: Family = (CounterMetricFamily if counter else GaugeMetricFamily)(name, doc, labels=LISTEN_LABELS + extra)
    for ns, values in scoped:
        for table in sorted(values, key=lambda t: t.value):
            fam = _fam(table)
            for port, n in sorted(values[table].items()):
                family.add_metric([fam, str(port), *ns], n)
    return family


def _listener_families(views: Scoped, extra: list[str]) -> Iterator[Family]:
    queues = [(ns, v.listeners) for ns, v in views if v.listeners is not None]
    if queues:
        yield _by_port("socket_listen_queue_length",
                       "Accept queue length (connections not yet accept()ed) summed over the TCP listeners of a "
                       "port. A full queue holds limit + 1.", [(ns, q.length) for ns, q in queues], extra)
        yield _by_port("socket_listen_queue_limit",
                       "Accept queue limit (listen() backlog) summed over the TCP listeners of a port.",
                       [(ns, q.limit) for ns, q in queues], extra)
        yield _gauge("socket_listen_folded", "Listening ports beyond listeners.max_ports, not exported this scrape "
                     "(the saturated and dropping ones are kept first).", extra,
                     [(ns, q.folded) for ns, q in queues])
    yield _by_port("socket_listen_drops",
                   "SYNs dropped by the TCP listeners of a port (SK_MEMINFO_DROPS, mostly a full accept queue); "
                   "never decreases while the exporter runs, across listener restarts.",
                   [(ns, v.drops) for ns, v in views], extra, counter=True)
    unavailable = GaugeMetricFamily(
        "socket_metric_unavailable",
        "1 for each metric and table the source cannot provide this scrape (reason proc: /proc/net has no "
        "backlog or drops; kernel: older than 4.7); that metric's series are absent, not 0.",
        labels=["metric", "table", "reason", *extra])
    for ns, v in views:
        for metric, table, reason in v.unavailable:
            unavailable.add_metric([metric, table.value, reason, *ns], 1.0)
    yield unavailable


def _port_families(views: Scoped, extra: list[str]) -> Iterator[Family]:
    if not views:
        return
    conns = GaugeMetricFamily(
        "socket_port_connections",
        "TCP sockets by service port: direction inbound (local port has a listener here) or outbound (remote "
        "port). Ports beyond ports.max_ports are summed into port=\"other\"; sums to socket_connections.",
        labels=["direction", "port", "status", "family", *extra])
    for ns, v in views:
        assert v.ports is not None
        for (direction, port, table, status), n in sorted(v.ports.connections.items(), key=lambda kv: _order(kv[0])):
            conns.add_metric([direction, port, status, _fam(table), *ns], n)
    yield conns
    for name, doc, attr in (
        ("socket_port_receive_queue_bytes", "Bytes received and not yet read by the application, summed over "
         "the non-LISTEN TCP sockets of a service port.", "receive_bytes"),
        ("socket_port_send_queue_bytes", "Bytes sent and not yet acknowledged by the peer, summed over the "
         "non-LISTEN TCP sockets of a service port.", "send_bytes"),
    ):
        family = GaugeMetricFamily(name, doc, labels=["direction", "port", "family", *extra])
        for ns, v in views:
            values: dict[QueueKey, int] = getattr(v.ports, attr)
            for (direction, port, table), n in sorted(values.items(), key=lambda kv: _order(kv[0])):
                family.add_metric([direction, port, _fam(table), *ns], n)
        yield family
    yield _gauge("socket_port_folded", "Service ports (per direction) beyond ports.max_ports summed into "
                 "port=\"other\".", extra, [(ns, v.ports.folded) for ns, v in views if v.ports is not None])


def _order(key: tuple[object, ...]) -> tuple[object, ...]:
    direction, port = key[0], str(key[1])
    return (direction, port == "other", int(port) if port.isdigit() else 0, *map(str, key[2:]))


def _ephemeral_families(views: Scoped, extra: list[str]) -> Iterator[Family]:
    used = [(ns, v.ephemeral) for ns, v in views if v.ephemeral is not None]
    if not used:  # the range could not be read: the stage failed (or unavailable), the series are absent
        return
    yield _gauge("socket_ephemeral_port_range_size", "Local ports the kernel can pick for connect(): "
                 "ip_local_port_range minus ip_local_reserved_ports.", extra,
                 [(ns, e.range_size) for ns, e in used])
    yield _gauge("socket_ephemeral_ports_max_in_use", "Most local ports of the ephemeral range in use (TIME_WAIT "
                 "included) towards one (local address, remote address, remote port): runs out at the range size.",
                 extra, [(ns, e.max_in_use) for ns, e in used])
    top = GaugeMetricFamily("socket_ephemeral_ports_in_use",
                            "Local ports of the ephemeral range in use per (local address, remote address, remote "
                            "port), for the ephemeral.top busiest tuples.",
                            labels=["family", "local_address", "remote_address", "remote_port", *extra])
    for ns, e in used:
        for (table, local, remote, port), n in e.top:
            top.add_metric([_fam(table), local, remote, str(port), *ns], n)
    yield top
