"""The scrape endpoint: telemetry path, landing page at /, and /-/healthy.

Why not client_python's ``start_http_server``: it spawns a thread per request with no cap and listens
with a backlog of 5. Here the listen backlog is 128, requests run on a fixed pool of worker threads,
and each connection has a read timeout, so a crowd of idle or slow clients cannot exhaust the
process.
"""

from __future__ import annotations

import contextlib
import html
import logging
import socket
import socketserver
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from .version import __version__

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 128
WORKERS = 8
# generate_latest() writes the classic text format; newer client_python labels it "version=1.0.0",
# which Prometheus releases before 3.x (Debian's 2.42 among them) do not know.
CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
READ_TIMEOUT_SECONDS = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_SECONDS
    server_version = f"socket_exporter/{__version__}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            try:
                body = generate_latest(self.server.registry)
            except Exception:
                log.exception("scrape failed")
                self._send(500, b"scrape failed; see the exporter's log\n", "text/plain; charset=utf-8")
                return
            self._send(200, body, CONTENT_TYPE_TEXT)
        elif path == "/-/healthy":
            self._send(200, b"OK\n", "text/plain; charset=utf-8")
        elif path == "/":
            link = html.escape(self.server.telemetry_path)
            page = (f"<html><head><title>socket_exporter</title></head><body><h1>socket_exporter</h1>"
                    f"<p>Version {html.escape(__version__)}</p><p><a href=\"{link}\">Metrics</a></p>"
                    f"<p><a href=\"/-/healthy\">Health</a></p></body></html>\n")
            self._send(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client went away or stalled
            super().handle()


class ExporterHTTPServer(HTTPServer):
    """HTTPServer whose requests run on a bounded thread pool."""

    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, telemetry_path: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        host = address[0] or ("::" if socket.has_dualstack_ipv6() else "0.0.0.0")
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.registry, self.telemetry_path = registry, telemetry_path
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="scrape")
        super().__init__((host, address[1]), _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("error serving %s", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


# socketserver's ThreadingMixIn is deliberately not used: the pool above is the bound.
assert not issubclass(ExporterHTTPServer, socketserver.ThreadingMixIn)
