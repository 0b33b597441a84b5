"""How many samples an exposition holds per metric, and what each family's formula predicts.

:func:`count_samples` counts what Prometheus' ``sample_limit`` counts: samples of one scrape, keyed by
the metric name as stored (``socket_listen_drops_total``, ``socket_exporter_build_info``). The
formulas restate README "Series per host" from the rules the README gives for each family, and take
their inputs from ``ss`` and ``/proc`` (tests/ss_snapshot.py), never from the exporter's code:

* ``socket_namespace_connections``: per namespace, its distinct non-zero (family, type, status);
* ``socket_process_connections``: the ``max_owners`` owners with the most sockets (ties to the lower
  pid) each get their distinct (family, type, status); plus the distinct ones of the unowned sockets
  and of the folded owners' sockets, if any;
* listeners, per namespace: 3 per listening (family, port) up to ``listeners.max_ports``, plus
  ``socket_listen_folded``;
* ports, per namespace: the (direction, port) pairs in ``always``, then the busiest up to
  ``ports.max_ports`` (ties: inbound first, then the lower port), the rest as ``port="other"`` of their
  direction; one ``socket_port_connections`` per distinct (direction, port label, family, status), one
  queue-bytes series of each kind per distinct (direction, port label, family) holding a non-LISTEN
  socket, plus ``socket_port_folded``;
* ephemeral, per namespace holding TCP sockets: range size, max in use, and the ``top`` busiest tuples.

Everything else is a fixed number of samples per exporter (:data:`FIXED`, :data:`FIXED_ALL`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from tests.reference import SsKey
from tests.ss_snapshot import Snapshot

#: Samples that do not grow with the host, own mode, default config, served over HTTP.
FIXED: dict[str, int] = {
    "socket_connections": 27,  # every (family, type, status) of kinds [all], zeros too: 2 x 11 TCP + 2 UDP + 3 UNIX
    "socket_scrape_collector_success": 2,  # per stage: netlink, owners
    "socket_scrape_collector_duration_seconds": 2,
    "socket_scrape_source": 5,  # per table
    "socket_netlink_fallback": 1,
    "socket_unowned_sockets": 2,  # no_inode, not_found
    "socket_process_owners_folded": 1,
    "socket_owner_scan_processes": 3,  # scanned, denied, vanished
    "socket_netlink_dump_retries_total": 5,  # per table
    "socket_netlink_dump_interrupted_total": 5,
    "socket_config_last_reload_successful": 1,
    "socket_config_last_reload_success_timestamp_seconds": 1,
    "socket_exporter_collection_timeouts_total": 1,
    "socket_exporter_build_info": 1,
    "socket_exporter_series": 1,  # the series budget's own (exporter/exposition/registry.py)
    "socket_exporter_series_limit": 1,
    "socket_exporter_series_folds_total": 5,  # per step: tuples, ports, listeners, owners, namespaces
    "socket_exporter_http_requests_rejected_total": 4,  # per reason
    "socket_exporter_http_auth_failures_total": 2,
    "socket_exporter_http_connection_timeouts_total": 3,
    "socket_exporter_http_client_disconnects_total": 1,
    "socket_exporter_http_tls_handshake_errors_total": 1,
    "socket_exporter_http_connections_evicted_total": 1,
    "socket_exporter_http_open_connections": 1,
    "socket_exporter_http_scrapes_in_flight": 1,
    **dict.fromkeys(("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                     "process_open_fds", "process_max_fds", "process_start_time_seconds"), 1),
}
#: ``network_namespaces: all`` with the three views on: three more stages, how namespaces were read.
FIXED_ALL: dict[str, int] = {
    **FIXED,
    "socket_scrape_collector_success": 5,  # netlink, owners, namespaces, listeners, ephemeral
    "socket_scrape_collector_duration_seconds": 5,
    "socket_namespaces": 5,  # netlink, proc, vanished, denied, failed
    "socket_namespace_tables_skipped": 1,
}
#: Families that grow with the host, and whose formulas the module docstring gives.
NAMESPACED_VIEWS = (
    "socket_listen_queue_length", "socket_listen_queue_limit", "socket_listen_drops_total", "socket_listen_folded",
    "socket_port_connections", "socket_port_receive_queue_bytes", "socket_port_send_queue_bytes",
    "socket_port_folded", "socket_ephemeral_port_range_size", "socket_ephemeral_ports_max_in_use",
    "socket_ephemeral_ports_in_use",
)
GROWING = ("socket_process_connections", "socket_namespace_connections", *NAMESPACED_VIEWS)


def count_samples(text: str) -> dict[str, int]:
    """{metric name as stored: samples} of one exposition (text format); families without samples are absent."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        counts.update(s.name for s in family.samples)
    return dict(counts)


def namespace_series(snapshot: Snapshot) -> int:
    return len({s.key for s in snapshot.socks})


def process_parts(owned: Iterable[tuple[SsKey, int | None]], max_owners: int) -> tuple[int, int, int]:
    """``socket_process_connections`` samples for these (key, owner pid or None) sockets: (of the kept
    owners, of ``pid="unowned"``, of ``pid="other"``); their sum is the family's count."""
    keys: defaultdict[int | None, set[SsKey]] = defaultdict(set)
    size: Counter[int] = Counter()
    for key, pid in owned:
        keys[pid].add(key)
        if pid is not None:
            size[pid] += 1
    ranked = sorted(size, key=lambda pid: (-size[pid], pid))
    other = set().union(*(keys[pid] for pid in ranked[max_owners:]))
    return sum(len(keys[pid]) for pid in ranked[:max_owners]), len(keys[None]), len(other)


def view_series(snapshot: Snapshot, listeners_max: int = 100, always: Iterable[int] = (), ports_max: int = 20,
                top: int = 5) -> dict[str, int]:
    """Samples of the listener, port and ephemeral families for one namespace (all three views on)."""
    tcp = snapshot.tcp()
    listening = min(len(tcp.listeners()[0]), listeners_max)
    out = dict.fromkeys(("socket_listen_queue_length", "socket_listen_queue_limit", "socket_listen_drops_total"),
                        listening)
    out["socket_listen_folded"] = 1
    listened = {row[5] for row in tcp.rows if row[1] == "LISTEN"}
    direction = [("inbound", lport) if lport in listened else ("outbound", rport)
                 for _f, _s, _q, _w, _la, lport, _ra, rport in tcp.rows]
    size = Counter(direction)
    pinned = {k for k in size if k[1] in set(always)}
    ranked = sorted(set(size) - pinned, key=lambda k: (-size[k], k[0] != "inbound", k[1]))
    kept = pinned | set(ranked[:ports_max])
    labels = [k if k in kept else (k[0], "other") for k in direction]
    out["socket_port_connections"] = len({(*lab, row[0], row[1]) for lab, row in zip(labels, tcp.rows, strict=True)})
    queues = len({(*lab, row[0]) for lab, row in zip(labels, tcp.rows, strict=True) if row[1] != "LISTEN"})
    out["socket_port_receive_queue_bytes"] = out["socket_port_send_queue_bytes"] = queues
    out["socket_port_folded"] = 1
    if tcp.rows:
        out["socket_ephemeral_port_range_size"] = out["socket_ephemeral_ports_max_in_use"] = 1
        low, high, reserved = snapshot.port_range
        out["socket_ephemeral_ports_in_use"] = min(top, len(tcp.ephemeral(low, high, set(reserved))))
    return out
