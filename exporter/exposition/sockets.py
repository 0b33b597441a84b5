"""The socket side of the exposition: turns a fresh Collection into metric families.

client_python's custom-collector pattern: ``collect()`` runs at scrape time and yields families built
from that scrape's data only, so nothing is ever left over from an earlier scrape. It takes ONE
reference to the current :class:`~exporter.pipeline.state.ExporterState` and builds every family from it, so
a scrape racing a config reload reports one config or the other, never a mix.

What is absent rather than zero, and why: a number the exporter could not compute must not read as a
count. A table that could not be read has no ``socket_connections`` series; when the owner scan failed
(or the breakdown is off) ``socket_process_connections``, ``socket_unowned_sockets``,
``socket_process_owners_folded`` and ``socket_owner_scan_processes`` are all absent, since a 0 unowned
or an empty breakdown would claim every socket was placed. ``socket_scrape_collector_success`` says
which stage failed.

The process-wide self-metrics (``process_*``, the netlink dump counters) are prometheus_client
objects in exporter/exposition/health.py, registered beside this collector: they do not depend on the
config, so they need no share of the one state read.

Label values: the owner's ``process`` label is a process name anyone can set (``prctl``, writing
``/proc/self/comm``), and with ``--path.procfs`` any file. client_python escapes ``\\``, ``"`` and
newlines in the exposition; here each value is made encodable (lone surrogates would make the whole
scrape fail in ``.encode()``) and capped at MAX_LABEL_LENGTH characters. Capping can make two owners
equal; their counts are then summed, never emitted twice as duplicate series.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ..aggregate.counts import SeriesKey
from ..model.table import FAMILY_LABEL, TYPE_LABEL
from ..pipeline.collection import Collection
from ..pipeline.single_flight import SharedCollection
from ..pipeline.state import ExporterState, ReloadStatus
from ..sources import netlink
from ..version import __version__
from .namespaces import namespace_families
from .views import view_families

SERIES_LABELS = ["family", "type", "status"]
MAX_LABEL_LENGTH = 128


def _series_labels(key: SeriesKey) -> list[str]:
    table, sock_type, status = key
    return [FAMILY_LABEL[table.family], TYPE_LABEL[sock_type], status]


def label_value(value: str) -> str:
    """A label value that encodes as UTF-8 and is at most MAX_LABEL_LENGTH characters (module docstring).

    >>> label_value("nginx"), label_value("a\\udcff"), len(label_value("x" * 200))
    ('nginx', 'a?', 128)
    """
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> "?"
    return value if len(value) <= MAX_LABEL_LENGTH else value[:MAX_LABEL_LENGTH]


Family = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily


class SocketMetricsCollector(Collector):
    """Yields the socket metrics from the state ``get_state`` returns, read once per scrape."""

    def __init__(self, get_state: Callable[[], ExporterState]) -> None:
        self._get_state = get_state

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # never collect at registration time

    def collect(self) -> Iterator[Family]:
        state = self._get_state()  # the one reference: config, collection and reload status agree
        c = state.collect()
        yield from _socket_families(c)
        yield from namespace_families(c)
        yield from _health_families(c)
        yield from view_families(c)  # listeners, ports, ephemeral: exposition/views.py
        if state.reload is not None:  # serving (not --once): reloads and collection deadlines exist
            yield from _reload_families(state.reload)
            yield CounterMetricFamily("socket_exporter_collection_timeouts", "Scrapes failed because the "
                                      "collection did not finish within collection.timeout.",
                                      value=SharedCollection.timeouts)
        yield build_info()


def _socket_families(c: Collection) -> Iterator[GaugeMetricFamily]:
    totals = GaugeMetricFamily(
        "socket_connections",
        "Sockets in the configured kinds by family, type and psutil status; each socket counted once.",
        labels=SERIES_LABELS)
    for key, n in sorted(c.counts.totals.items(), key=lambda kv: _series_labels(kv[0])):
        totals.add_metric(_series_labels(key), n)
    yield totals
    if c.owner_scan is None:  # breakdown off, or the owner scan failed: absent, never a wrong split
        return
    owner_labels = list(c.config.per_process.labels)
    per_process = GaugeMetricFamily(
        "socket_process_connections",
        "Sockets by owning process (lowest pid holding it). pid=\"unowned\": no owner found; "
        "pid=\"other\": owners beyond per_process.max_owners. Sums to socket_connections.",
        labels=SERIES_LABELS + owner_labels)
    series: dict[tuple[str, ...], int] = {}
    for (key, owner), n in c.counts.by_owner.items():
        labels = (*_series_labels(key), *map(label_value, owner))
        series[labels] = series.get(labels, 0) + n  # owners equal once capped: summed, not duplicated
    for labels, n in sorted(series.items()):
        per_process.add_metric(list(labels), n)
    yield per_process


def _health_families(c: Collection) -> Iterator[GaugeMetricFamily]:
    success = GaugeMetricFamily("socket_scrape_collector_success",
                                "1 if the collection stage succeeded this scrape, 0 if it failed.",
                                labels=["collector"])
    duration = GaugeMetricFamily("socket_scrape_collector_duration_seconds",
                                 "Time the collection stage took this scrape.", labels=["collector"])
    for stage in c.stages:
        success.add_metric([stage.name], 1.0 if stage.success else 0.0)
        duration.add_metric([stage.name], stage.seconds)
    yield success
    yield duration

    source = GaugeMetricFamily("socket_scrape_source",
                               "1 for the source (netlink or proc) that served each table this scrape.",
                               labels=["table", "source"])
    for table, name in c.source_of.items():
        source.add_metric([table.value, name], 1.0)
    yield source
    yield GaugeMetricFamily("socket_netlink_fallback",
                            "1 if source auto fell back to /proc/net for some table this scrape because netlink "
                            "is unavailable; socket_scrape_source says which tables /proc then served.",
                            value=1.0 if c.fallback else 0.0)
    scan = c.owner_scan
    if scan is None:  # as above: a failed scan has no unowned count, no folds, no process counts
        return
    unowned = GaugeMetricFamily(
        "socket_unowned_sockets",
        "Sockets with no owning process this scrape: reason no_inode (TIME_WAIT, SYN_RECV, orphaned) or "
        "not_found (no readable /proc/PID/fd holds it: other pid namespace, kernel socket, exited, denied).",
        labels=["reason"])
    unowned.add_metric(["no_inode"], c.counts.unowned_no_inode)
    unowned.add_metric(["not_found"], c.counts.unowned_not_found)
    yield unowned
    yield GaugeMetricFamily("socket_process_owners_folded",
                            "Owners beyond per_process.max_owners folded into pid=\"other\" this scrape.",
                            value=c.counts.owners_folded)
    processes = GaugeMetricFamily(
        "socket_owner_scan_processes",
        "Processes seen by the owner scan: scanned, denied (fd table unreadable: run as root for full "
        "data), vanished (exited during the scan).", labels=["result"])
    processes.add_metric(["scanned"], scan.scanned_pids)
    processes.add_metric(["denied"], scan.denied_pids)
    processes.add_metric(["vanished"], scan.vanished_pids)
    yield processes


def _reload_families(status: ReloadStatus) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily("socket_config_last_reload_successful",
                            "1 if the last config (re)load succeeded, 0 if it failed and the previous config "
                            "is still in use.", value=1.0 if status.successful else 0.0)
    yield GaugeMetricFamily("socket_config_last_reload_success_timestamp_seconds",
                            "Unix time of the last successful config (re)load.", value=status.last_success)


def build_info() -> InfoMetricFamily:
    return InfoMetricFamily("socket_exporter_build", "socket_exporter version and runtime.", value={
        "version": __version__,
        "python_version": platform.python_version(),
        "pyroute2_version": netlink.PYROUTE2_VERSION,
    })
