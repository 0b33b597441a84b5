"""The HTTP server's bounds, each claim with a test that fails without it (issue 6).

In-process servers get a real registry whose collector the test can hold (``Gate``), so "a scrape is
in flight" is a fact, not a race. The 50-scraper load proof is tests/test_http_load.py; parsing and
malformed input, tests/test_http_protocol.py; TLS and auth, tests/test_tls_auth.py.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.pipeline.single_flight import SharedCollection
from exporter.web.server import ExporterHTTPServer, ServerLimits
from tests._http import Client, new_server, raise_fd_limit, serving


class Gate(Collector):
    """A collection that takes as long as the test says: it blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.release, self.calls, self._lock = threading.Event(), 0, threading.Lock()

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            self.calls += 1
        self.release.wait(30)
        yield GaugeMetricFamily("gate_open", "1 once the test let the collection finish", value=1)


def gated(**limits: Any) -> tuple[ExporterHTTPServer, Gate]:
    gate, registry = Gate(), CollectorRegistry()
    registry.register(gate)
    return new_server(registry, limits=ServerLimits(**limits)), gate


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_pages_methods_and_reload_route() -> None:
    with serving(new_server()) as server:
        client = Client(server.server_address[1])
        status, body, resp = client.get()
        assert status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "socket_exporter_http_requests_rejected_total" in body
        status, body, resp = client.get(method="HEAD")
        assert status == 200 and body == "" and int(resp.headers["Content-Length"]) > 0
        assert client.get("/")[0] == 200 and client.get("/-/healthy")[:2] == (200, "OK\n")
        assert client.get("/nope")[0] == 404
        status, _, resp = client.get(method="POST")
        assert status == 405 and resp.headers["Allow"] == "GET, HEAD"
        assert client.get("/-/reload", method="POST")[0] == 404  # no on_reload: no such endpoint


def test_reload_endpoint_contract() -> None:
    results: list[tuple[bool, str] | Exception] = [(True, "reloaded config/x.yml\nsecond line"),
                                                   (False, "config/x.yml: kinds[0]: unknown kind 'tcp5'"),
                                                   RuntimeError("boom")]
    gate = threading.Event()

    def on_reload() -> tuple[bool, str]:
        gate.wait(10)
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    with serving(new_server(on_reload=on_reload)) as server:
        client = Client(server.server_address[1])
        assert client.get("/-/reload")[0] == 405
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.get, "/-/reload", None, "POST")
            wait_for(lambda: server._reloading)
            assert client.get("/-/reload", method="POST")[:2] == (503, "a reload is already running\n")
            gate.set()
            assert first.result()[:2] == (200, "reloaded config/x.yml\n")
        assert client.get("/-/reload", method="POST")[:2] == (500, "config/x.yml: kinds[0]: unknown kind 'tcp5'\n")
        assert client.get("/-/reload", method="POST")[:2] == (500, "reload failed: boom\n")
        assert server.stats.rejected["reload_busy"] == 1


def test_listen_backlog_holds_a_burst_of_connections() -> None:
    """200 clients connect at once while the loop is not accepting: a backlog of 5 would drop SYNs."""
    server = new_server()
    socks = [socket.socket() for _ in range(200)]
    try:
        for s in socks:
            s.setblocking(False)
            s.connect_ex(server.server_address)
        deadline, pending = time.monotonic() + 0.5, set(socks)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.05)
            pending -= {s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0}
        assert not pending, f"{len(pending)} of 200 connections not established within 0.5 s"
    finally:
        for s in socks:
            s.close()
        server.server_close()


def test_idle_connections_cost_no_thread_and_do_not_delay_a_scrape() -> None:
    raise_fd_limit(4096)
    with serving(new_server()) as server:
        port = server.server_address[1]
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        try:
            for s in slow:  # slowloris: a request head that never ends
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            wait_for(lambda: server.open_connections >= 1050)
            assert threading.active_count() == threads
            for _ in range(3):
                start = time.monotonic()
                assert Client(port, timeout=5).get()[0] == 200
                assert time.monotonic() - start < 1.0
        finally:
            for s in idle + slow:
                s.close()


def test_scrapes_beyond_the_cap_get_503_at_once_and_are_counted() -> None:
    server, gate = gated(max_scrapes_in_flight=2)
    with serving(server), ThreadPoolExecutor(2) as pool:
        client = Client(server.server_address[1])
        held = [pool.submit(client.get) for _ in range(2)]
        wait_for(lambda: gate.calls == 2)
        start = time.monotonic()
        assert client.get()[:2] == (503, "too many scrapes in flight; try again\n")
        assert time.monotonic() - start < 0.5
        assert server.stats.rejected["scrape_limit"] == 1
        gate.release.set()
        assert [f.result()[0] for f in held] == [200, 200]
        assert client.get()[0] == 200


def test_concurrent_scrapes_share_one_collection() -> None:
    release, calls = threading.Event(), []

    def collect() -> Any:
        calls.append(1)
        release.wait(10)
        return "collection"

    shared = SharedCollection(collect)

    class Shared(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield GaugeMetricFamily("shared_result", "test", value=len(shared.get()))

    registry = CollectorRegistry()
    registry.register(Shared())
    with serving(new_server(registry)) as server, ThreadPoolExecutor(5) as pool:
        client = Client(server.server_address[1])
        futures = [pool.submit(client.get) for _ in range(5)]
        wait_for(lambda: server._scrapes == 5)
        release.set()
        assert {f.result()[0] for f in futures} == {200}
    assert len(calls) == 1


def test_scrape_timeout_header_bounds_the_wait_for_the_collection() -> None:
    server, gate = gated(max_scrapes_in_flight=1)
    with serving(server):
        client = Client(server.server_address[1])
        start = time.monotonic()
        status, body, _ = client.get(headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
        elapsed = time.monotonic() - start
        assert (status, body) == (503, "collection did not finish within the scrape timeout\n")
        assert 0.9 < elapsed < 1.4  # 1.5 s less the 0.5 s offset: the 503 reaches Prometheus before it gives up
        assert server.stats.rejected["scrape_timeout"] == 1
        # The abandoned collection still runs, so it still counts against the cap.
        assert client.get()[0] == 503 and server.stats.rejected["scrape_limit"] == 1
        gate.release.set()
        wait_for(lambda: server._scrapes == 0)
        assert client.get(headers={"X-Prometheus-Scrape-Timeout-Seconds": "bogus"})[0] == 200


def test_slow_request_heads_and_silent_clients_time_out() -> None:
    with serving(new_server(limits=ServerLimits(header_timeout=1.0))) as server:
        port = server.server_address[1]
        silent = socket.create_connection(("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            start, closed = time.monotonic(), False
            while time.monotonic() - start < 3 and not closed:
                try:
                    s.sendall(b"X")  # one byte every 0.1 s: never a complete head
                    time.sleep(0.1)
                except OSError:
                    closed = True
            assert closed or s.recv(1) == b""
            assert time.monotonic() - start < 1.8
        assert silent.recv(1) == b""
        silent.close()
        assert server.stats.timeouts["request"] == 2


def test_client_disconnect_is_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server, gate = gated()
    with serving(server):
        with socket.create_connection(server.server_address) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: server.stats.disconnects == 1)
        gate.release.set()
        wait_for(lambda: server._scrapes == 0)
        assert Client(server.server_address[1]).get()[0] == 200
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_default_address_serves_ipv4_and_ipv6() -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 on this host")
    with serving(ExporterHTTPServer(("", 0), CollectorRegistry(), "/metrics")) as server:
        port = server.server_address[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as s:
                s.settimeout(5)
                s.connect((host, port))
                s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_connection_cap_evicts_the_oldest_idle_connection() -> None:
    with serving(new_server(limits=ServerLimits(max_connections=20))) as server:
        port = server.server_address[1]
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        try:
            assert Client(port).get()[0] == 200
            assert server.stats.evicted >= 11 and server.open_connections <= 20
            assert idle[0].recv(1) == b""  # the oldest went first
        finally:
            for s in idle:
                s.close()


def test_one_address_cannot_take_the_slots_of_another() -> None:
    """At its per-client cap an address loses its own stalest connection, never another client's."""
    limits = ServerLimits(max_connections=50, max_connections_per_client=20)
    with serving(new_server(limits=limits)) as server:
        port = server.server_address[1]
        other = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) for _ in range(10)]
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            wait_for(lambda: server.stats.evicted >= 20)
            assert Client(port).get()[0] == 200  # a newcomer from the flooding address still gets in
            assert server.open_connections <= 30
            for s in other:  # still open: nothing to read, and no end of stream
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)
            flood[0].settimeout(5)
            assert flood[0].recv(1) == b""  # the flood's oldest went first
        finally:
            for s in other + flood:
                s.close()
