"""The HTTP server's own metrics: what it refused, who went away, who failed to authenticate.

Why: a 503 or a 401 is invisible in Prometheus's ``up`` until it is too late (up=0 says "failed",
not "refused because a flood of bad passwords fills the bcrypt queue"). These counters say which
limit bit, so the alert for it can be specific. They live in a separate client_python Collector the
server registers on the scrape registry itself, so exporter/metrics.py stays about sockets. Every
label value is exported from the start (zeros included) so ``rate()`` works from the first scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REJECT_REASONS = ("scrape_limit", "scrape_timeout", "auth_busy", "reload_busy")
AUTH_FAILURES = ("missing", "invalid")
TIMEOUT_STAGES = ("tls_handshake", "request", "write")


@dataclass(frozen=True)
class StatsSnapshot:
    rejected: dict[str, int]
    auth_failures: dict[str, int]
    timeouts: dict[str, int]
    disconnects: int
    tls_errors: int
    evicted: int


class ServerStats:
    """Counters bumped by the event loop and the worker threads; a lock keeps ``+=`` exact."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.auth_failures = dict.fromkeys(AUTH_FAILURES, 0)
        self.timeouts = dict.fromkeys(TIMEOUT_STAGES, 0)
        self.disconnects = 0
        self.tls_errors = 0
        self.evicted = 0

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def auth_failure(self, reason: str) -> None:
        with self._lock:
            self.auth_failures[reason] += 1

    def timeout(self, stage: str) -> None:
        with self._lock:
            self.timeouts[stage] += 1

    def bump(self, name: str) -> None:
        """``disconnects``, ``tls_errors`` or ``evicted``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(dict(self.rejected), dict(self.auth_failures), dict(self.timeouts),
                                 self.disconnects, self.tls_errors, self.evicted)


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, n in values.items():
        family.add_metric([value], n)
    return family


class ServerMetricsCollector(Collector):
    """Yields the server's counters and two gauges read at scrape time."""

    def __init__(self, stats: ServerStats, open_connections: Callable[[], int],
                 scrapes_in_flight: Callable[[], int]) -> None:
        self._stats, self._open, self._inflight = stats, open_connections, scrapes_in_flight

    def describe(self) -> list[CounterMetricFamily]:
        return []  # names are fixed and prefixed; nothing to check for collisions at registration

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._stats.snapshot()
        yield _labelled("socket_exporter_http_requests_rejected",
                        "Requests answered 503: scrape_limit (too many scrapes in flight), scrape_timeout "
                        "(collection slower than X-Prometheus-Scrape-Timeout-Seconds), auth_busy (bcrypt queue "
                        "full or too slow), reload_busy (a reload already running).",
                        "reason", s.rejected)
        yield _labelled("socket_exporter_http_auth_failures",
                        "Requests answered 401: missing (no or malformed basic-auth credentials), invalid "
                        "(unknown user or wrong password).", "reason", s.auth_failures)
        yield _labelled("socket_exporter_http_connection_timeouts",
                        "Connections closed because the client was too slow: in the TLS handshake, sending "
                        "its request, or reading the response. Idle keep-alive closes are not counted.",
                        "stage", s.timeouts)
        yield CounterMetricFamily("socket_exporter_http_client_disconnects",
                                  "Clients that went away mid-request (before the whole response was sent), "
                                  "e.g. a Prometheus scrape timeout.", value=s.disconnects)
        yield CounterMetricFamily("socket_exporter_http_tls_handshake_errors",
                                  "TLS handshakes that failed (bad client certificate, protocol error, closed "
                                  "early).", value=s.tls_errors)
        yield CounterMetricFamily("socket_exporter_http_connections_evicted",
                                  "Idle or unfinished connections closed to admit a new one at the connection cap.",
                                  value=s.evicted)
        yield GaugeMetricFamily("socket_exporter_http_open_connections", "Client connections open now.",
                                value=self._open())
        yield GaugeMetricFamily("socket_exporter_http_scrapes_in_flight",
                                "Scrapes being collected now, this one included.", value=self._inflight())
