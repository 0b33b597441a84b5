"""The HTTP server's own metrics: what it refused, who went away, who failed to authenticate.

Why: a 503 or a 401 is invisible in Prometheus's ``up`` until it is too late (up=0 says "failed",
not "refused because a flood of bad passwords fills the bcrypt queue"). These counters say which
limit bit, so the alert for it can be specific. They are client_python Counters and Gauges (thread-safe
on their own: the event loop and the worker threads both count) in one Collector that the server
registers on the scrape registry itself, so exporter/exposition/sockets.py stays about sockets. Every label value
is exported from the start (zeros included) so ``rate()`` works from the first scrape; the ``_created``
series client_python adds to counters are left out, as before: the exposition's series set is a contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

REJECT_REASONS = ("scrape_limit", "scrape_timeout", "auth_busy", "reload_busy")
AUTH_FAILURES = ("missing", "invalid")
TIMEOUT_STAGES = ("tls_handshake", "request", "write")


def _counter(name: str, doc: str, label: str = "", values: tuple[str, ...] = ()) -> Counter:
    counter = Counter(name, doc, [label] if label else [], registry=None)
    for value in values:
        counter.labels(value)
    return counter


def _values(counter: Counter) -> dict[str, float]:
    """{label value: count} of a one-label counter (or {"": count} without labels)."""
    return {next(iter(s.labels.values()), ""): s.value
            for metric in counter.collect() for s in metric.samples if s.name.endswith("_total")}


class ServerMetrics(Collector):
    """The counters the server bumps, and two gauges read at scrape time."""

    def __init__(self, open_connections: Callable[[], int], scrapes_in_flight: Callable[[], int]) -> None:
        self.rejected_total = _counter(
            "socket_exporter_http_requests_rejected",
            "Requests answered 503: scrape_limit (too many scrapes in flight), scrape_timeout (collection slower "
            "than X-Prometheus-Scrape-Timeout-Seconds), auth_busy (bcrypt queue full or too slow), reload_busy "
            "(a reload already running).", "reason", REJECT_REASONS)
        self.auth_failures_total = _counter(
            "socket_exporter_http_auth_failures",
            "Requests answered 401: missing (no or malformed basic-auth credentials), invalid (unknown user or "
            "wrong password).", "reason", AUTH_FAILURES)
        self.timeouts_total = _counter(
            "socket_exporter_http_connection_timeouts",
            "Connections closed because the client was too slow: in the TLS handshake, sending its request, or "
            "reading the response. Idle keep-alive closes are not counted.", "stage", TIMEOUT_STAGES)
        self.disconnects_total = _counter(
            "socket_exporter_http_client_disconnects",
            "Clients that closed their side mid-request (before the whole response was sent), e.g. a Prometheus "
            "scrape timeout. A client that half-closes after its request is counted too, and still answered.")
        self.tls_errors_total = _counter(
            "socket_exporter_http_tls_handshake_errors",
            "TLS handshakes that failed (bad client certificate, protocol error, closed early).")
        self.evicted_total = _counter(
            "socket_exporter_http_connections_evicted",
            "Connections closed to admit a new one at the connection cap (total or per client address), or to "
            "stay within the response buffer budget: the one that made no progress for longest (handshaking, "
            "idle, sending its request, not reading its response, or waiting out a delayed 401).")
        self.open_connections = Gauge("socket_exporter_http_open_connections", "Client connections open now.",
                                      registry=None)
        self.open_connections.set_function(open_connections)
        self.scrapes_in_flight = Gauge("socket_exporter_http_scrapes_in_flight",
                                       "Scrapes being collected now, this one included.", registry=None)
        self.scrapes_in_flight.set_function(scrapes_in_flight)

    def describe(self) -> list[Metric]:
        return []  # names are fixed and prefixed; nothing to check for collisions at registration

    def collect(self) -> Iterator[Metric]:
        for source in (self.rejected_total, self.auth_failures_total, self.timeouts_total, self.disconnects_total,
                       self.tls_errors_total, self.evicted_total, self.open_connections, self.scrapes_in_flight):
            for metric in source.collect():
                metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
                yield metric

    # Read-only views the tests and the log use.
    @property
    def rejected(self) -> dict[str, float]:
        return _values(self.rejected_total)

    @property
    def auth_failures(self) -> dict[str, float]:
        return _values(self.auth_failures_total)

    @property
    def timeouts(self) -> dict[str, float]:
        return _values(self.timeouts_total)

    @property
    def disconnects(self) -> float:
        return _values(self.disconnects_total)[""]

    @property
    def tls_errors(self) -> float:
        return _values(self.tls_errors_total)[""]

    @property
    def evicted(self) -> float:
        return _values(self.evicted_total)[""]
