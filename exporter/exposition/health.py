"""The exporter's own process-wide metrics: prometheus_client objects, registered on the scrape registry.

Two kinds of self-metrics, kept apart on purpose:

* facts about the *process*, true whatever config is loaded: the netlink dump counters here (they
  count since the process started, across config reloads) and client_python's ProcessCollector
  (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds``,
  ``process_max_fds``, ``process_start_time_seconds``...). They are ordinary prometheus_client
  ``Counter`` objects and collectors, declared and bumped where the event happens
  (exporter/sources/netlink.py) and registered here by :func:`register`; client_python's own lock
  makes ``inc()`` exact across threads.
* everything that depends on the *config* (socket families, stage health, reload status) is built by
  exporter/exposition/sockets.py from the ONE ExporterState a scrape reads. The reload status stays there on
  purpose: a Gauge the reloader sets would be read apart from that state, so a scrape racing a reload
  could report config A's sockets with config B's reload time.

Why ProcessCollector reads ``/proc/self``, not ``--path.procfs``: the latter is where the *sockets'
owners* live, e.g. the host's /proc mounted at /host/proc in a container, or a fixture tree in the
tests; ``process_*`` describe this exporter process, which always finds itself in its own /proc. (If
/proc is not mounted at all, ProcessCollector exports nothing rather than failing the scrape.)

Why no ``_created`` samples: client_python would add a ``..._created`` gauge per counter child to
the 0.0.4 text format; here every child is created when the process starts, so it would only repeat
``process_start_time_seconds`` as extra series. :func:`register` turns them off for this process.

Labels: ``table`` (``tcp tcp6 udp udp6 unix``); :func:`exporter.sources.netlink.expose_tables` creates
the children of the tables a netlink source dumps, at zero, so ``rate()`` works from the first scrape;
a ``source: proc`` exporter never dumps over netlink and shows the two families without samples.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics

from ..sources.netlink import NETLINK_DUMP_INTERRUPTED, NETLINK_DUMP_RETRIES

#: This process, from its own /proc (module docstring); one instance, registered on every registry.
PROCESS = ProcessCollector(registry=None)


def register(registry: CollectorRegistry) -> CollectorRegistry:
    """Register the process-wide self-metrics on ``registry`` (a scrape registry); returns it.

    >>> r = register(CollectorRegistry(auto_describe=False))
    >>> r.get_sample_value("process_start_time_seconds") > 0
    True
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]  # (client_python leaves it unannotated)
    for collector in (PROCESS, NETLINK_DUMP_RETRIES, NETLINK_DUMP_INTERRUPTED):
        registry.register(collector)
    return registry
