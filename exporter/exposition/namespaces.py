"""The families of ``network_namespaces: all``: sockets per namespace, and how each was read.

``socket_namespace_connections{netns, family, type, status, pod_uid, pod_namespace, pod_name,
container_id}``: ``netns`` is the namespace's inode in decimal, the rest name who lives there
(exporter/netns/identity.py; empty for the exporter's own namespace, the host's on a node). Only
non-zero series are exported: a node with 100 pods would otherwise carry ~2,700 zero series. Per
(family, type, status) the namespaces sum exactly to ``socket_connections``.

Why identity labels and not only ``netns``: the kernel reuses a dead namespace's inode number for
the next one at once, so ``netns`` alone can join a dead pod's series to a new pod's.

A namespace that vanished before it was read has no series: everything here is built from this
scrape's reads only (client_python custom collector), so nothing goes stale.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from ..model.table import FAMILY_LABEL, TYPE_LABEL
from ..model.tags import Result
from ..pipeline.collection import Collection

IDENTITY_LABELS = ["pod_uid", "pod_namespace", "pod_name", "container_id"]
NAMESPACE_LABELS = ["netns", "family", "type", "status", *IDENTITY_LABELS]


def namespace_families(c: Collection) -> Iterator[GaugeMetricFamily]:
    """Nothing in ``own`` mode; in ``all`` mode the two families of the module docstring."""
    if c.namespaces is None:
        return
    per_ns = GaugeMetricFamily(
        "socket_namespace_connections",
        "Sockets per network namespace (netns = its inode) by family, type and psutil status, with the pod "
        "or container living in it; non-zero series only. Sums to socket_connections.",
        labels=NAMESPACE_LABELS)
    results = dict.fromkeys(Result, 0)
    for ns in sorted(c.namespaces, key=lambda n: n.inode):
        results[ns.result] += 1
        ident = (ns.identity.pod_uid, *ns.pod, ns.identity.container_id)
        for (table, sock_type, status), n in sorted(ns.counts.items(), key=lambda kv: str(kv[0])):
            per_ns.add_metric([str(ns.inode), FAMILY_LABEL[table.family], TYPE_LABEL[sock_type], status, *ident], n)
    yield per_ns
    read = GaugeMetricFamily(
        "socket_namespaces",
        "Network namespaces this scrape by how they were read: netlink (setns + sock_diag), proc "
        "(/proc/PID/net of a process inside: setns refused), vanished (gone before it was read: no series), "
        "denied (neither way allowed) and failed (a read error); the last two fail the namespaces stage.",
        labels=["result"])
    for result, n in results.items():
        read.add_metric([result], n)
    yield read
    yield GaugeMetricFamily(
        "socket_namespace_tables_skipped",
        "Socket tables of other namespaces not dumped this scrape because their sockstat counters prove "
        "them empty (a TCP dump walks the host-wide hash: skipping one saves that walk).",
        value=sum(ns.skipped for ns in c.namespaces))
