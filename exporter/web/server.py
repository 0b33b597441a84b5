"""The scrape endpoint: telemetry path, landing page at /, /-/healthy and POST /-/reload.

Why not client_python's ``start_http_server``: it spawns a thread per request without limit, listens
with a backlog of 5, and with TLS one client that stops mid-handshake stalls every scrape. This server
keeps socket I/O on one event loop (exporter/web/loop.py, exporter/web/conn.py) and uses threads
only to compute, each kind in its own bounded pool, so no kind of traffic can take another's threads:

* **Scrapes** run on a fixed pool of ``max_scrapes_in_flight + 1`` threads (the +1 is for a reload).
  At most ``max_scrapes_in_flight`` scrapes run at once; one more is answered 503 by the loop at once,
  counted in ``socket_exporter_http_requests_rejected_total{reason="scrape_limit"}``, since queueing
  it would only make it late for its scraper. Concurrent scrapes share one collection
  (exporter/collection.py ``SharedCollection``).
* **X-Prometheus-Scrape-Timeout-Seconds** (minus ``scrape_timeout_offset``) bounds how long a scrape
  waits for the shared collection: past it the loop answers 503 (``reason="scrape_timeout"``) while
  Prometheus is still listening, instead of Prometheus timing out on its own. The abandoned render
  still counts as in flight until it finishes, so slow collections cannot pile up threads.
* **bcrypt** runs on its own pool (``auth_workers`` threads, ``max_auth_pending`` checks queued;
  beyond: 503 ``auth_busy``), never on the loop or a scrape thread, and credentials that already
  succeeded skip it (exporter/web/auth.py), so a flood of wrong passwords burns at most
  ``auth_workers`` cores and cannot delay a scrape with good credentials. Every 401 and auth_busy 503
  is held back ``auth_failure_delay`` (no thread held), so a guessing client cannot spin on instant
  refusals and keep the event loop busy.
* **Reload** (``on_reload``, wired by exporter/cli.py) runs one at a time on the scrape pool's spare
  thread; a second concurrent POST gets 503 ``reload_busy``.

Basic auth, when configured, guards every path, as exporter-toolkit does. The server's own counters
are a separate Collector (exporter/web/metrics.py) registered on the scrape registry.
"""

from __future__ import annotations

import html
import logging
import math
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, generate_latest

from ..version import __version__
from .auth import BasicAuth, parse_basic
from .config import WebConfig
from .conn import BUSY, Conn, ServerLimits
from .loop import EventLoopServer
from .metrics import ServerMetricsCollector, ServerStats
from .protocol import Request, response, text_response

log = logging.getLogger(__name__)

# generate_latest() writes the classic text format; newer client_python labels it "version=1.0.0",
# which Prometheus releases before 3.x (Debian's 2.42 among them) do not know.
CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
_GET = ("GET", "HEAD")
_REJECTED = {"scrape_limit": "too many scrapes in flight; try again",
             "scrape_timeout": "collection did not finish within the scrape timeout",
             "auth_busy": "too many password checks pending; try again",
             "reload_busy": "a reload is already running"}

__all__ = ["CONTENT_TYPE_TEXT", "ExporterHTTPServer", "ServerLimits"]


class ExporterHTTPServer(EventLoopServer):
    """Serves ``registry`` at ``telemetry_path``; see the module docstring for the bounds.

    The socketserver-like API exporter/cli.py uses: ``serve_forever()``, ``shutdown()`` (from another thread
    or a signal handler), ``server_close()``, ``server_address``. ``web_config`` and ``registry`` may
    be replaced while serving (a reload): new connections and requests use the new ones.
    """

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, telemetry_path: str, *,
                 web_config: WebConfig | None = None, on_reload: Callable[[], tuple[bool, str]] | None = None,
                 limits: ServerLimits | None = None) -> None:
        limits = limits or ServerLimits()
        super().__init__(address, limits, ServerStats())
        self.web_config = web_config or WebConfig()
        self.telemetry_path, self.on_reload = telemetry_path, on_reload
        self._scrapes = self._auth_pending = 0  # loop-thread state: no lock needed
        self._reloading = False
        self._workers = ThreadPoolExecutor(limits.max_scrapes_in_flight + 1, thread_name_prefix="scrape")
        self._bcrypt = ThreadPoolExecutor(limits.auth_workers, thread_name_prefix="bcrypt")
        self._metrics = ServerMetricsCollector(self.stats, lambda: self.open_connections, lambda: self._scrapes)
        self._registry: CollectorRegistry | None = None
        self.registry = registry
        tls, auth = self.web_config.tls, self.web_config.auth
        if tls is not None or auth is not None:
            log.info("web config %s: TLS %s, basic auth %s", self.web_config.source,
                     f"on ({tls.min_version}+, client certificates: {tls.client_auth_type})" if tls else "off",
                     f"on ({len(auth.users)} users)" if auth else "off")

    @property
    def registry(self) -> CollectorRegistry:
        assert self._registry is not None
        return self._registry

    @registry.setter
    def registry(self, registry: CollectorRegistry) -> None:
        """Swap the scrape registry, taking the server's own metrics along."""
        if registry is self._registry:
            return
        registry.register(self._metrics)
        old, self._registry = self._registry, registry
        if old is not None:
            old.unregister(self._metrics)

    def tls_context(self) -> ssl.SSLContext | None:
        tls = self.web_config.tls
        return tls.context if tls is not None else None

    def server_close(self) -> None:
        super().server_close()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._bcrypt.shutdown(wait=False, cancel_futures=True)

    # -- admission: auth, then route (loop thread) ------------------------------------------------
    def handle_request(self, conn: Conn, req: Request, body: bytes) -> None:
        auth = self.web_config.auth
        if auth is None:
            self._route(conn, req)
            return
        creds = parse_basic(req.headers.get("authorization"))
        if creds is None:
            self._unauthorized(conn, req, "missing")
        elif auth.cached(*creds):
            self._route(conn, req)
        elif self._auth_pending >= self.limits.max_auth_pending:
            self.stats.reject("auth_busy")
            self.hold(conn, text_response(503, _REJECTED["auth_busy"], keep_alive=conn.keep_alive,
                                          head_only=req.method == "HEAD"), self.limits.auth_failure_delay)
        else:
            self._auth_pending += 1
            conn.busy_reason, conn.deadline = "auth_busy", time.monotonic() + self.limits.auth_timeout
            self._bcrypt.submit(self._verify, auth, creds, conn, conn.token, req)

    def _verify(self, auth: BasicAuth, creds: tuple[str, bytes], conn: Conn, token: int, req: Request) -> None:
        """bcrypt pool: check, then hand the verdict back to the loop."""
        ok = False
        try:
            # The token is only read here (a stale read merely wastes one check): a client that left or
            # timed out while queued costs no bcrypt.
            ok = conn.token == token and auth.verify(*creds)
        except Exception:
            log.exception("password check failed")
        finally:
            self.call_soon(lambda: self._verified(conn, token, req, ok))

    def _verified(self, conn: Conn, token: int, req: Request, ok: bool) -> None:
        self._auth_pending -= 1
        if conn.token != token or conn.state != BUSY:
            return
        if ok:
            self._route(conn, req)
        else:
            self._unauthorized(conn, req, "invalid")

    def _unauthorized(self, conn: Conn, req: Request, reason: str) -> None:
        """401, held back ``auth_failure_delay``: without the delay a guessing client gets an answer per
        round trip, and a few dozen of them keep the event loop (and through the GIL, the collection)
        too busy for Prometheus; with it each connection is slowed to a couple of guesses a second."""
        self.stats.auth_failure(reason)
        payload = text_response(401, "unauthorized", keep_alive=conn.keep_alive, head_only=req.method == "HEAD",
                                extra=(("WWW-Authenticate", 'Basic realm="socket_exporter", charset="UTF-8"'),))
        self.hold(conn, payload, self.limits.auth_failure_delay)

    def _reject(self, conn: Conn, req: Request, reason: str) -> None:
        self.stats.reject(reason)
        self.reply(conn, 503, _REJECTED[reason], head_only=req.method == "HEAD")

    def on_busy_timeout(self, conn: Conn) -> None:
        self.stats.reject(conn.busy_reason)
        self.reply(conn, 503, _REJECTED[conn.busy_reason])

    def _route(self, conn: Conn, req: Request) -> None:
        path, method, head = req.path, req.method, req.method == "HEAD"
        if path == self.telemetry_path:
            if method not in _GET:
                self.reply(conn, 405, "method not allowed", head_only=head, extra=(("Allow", "GET, HEAD"),))
            elif self._scrapes >= self.limits.max_scrapes_in_flight:
                self._reject(conn, req, "scrape_limit")
            else:
                self._scrapes += 1
                budget = self.scrape_budget(req.headers.get(SCRAPE_TIMEOUT_HEADER))
                conn.busy_reason, conn.deadline = "scrape_timeout", time.monotonic() + budget
                self._workers.submit(self._scrape, conn, conn.token, head, conn.keep_alive)
        elif path == "/-/reload" and self.on_reload is not None:
            if method != "POST":
                self.reply(conn, 405, "use POST", head_only=head, extra=(("Allow", "POST"),))
            elif self._reloading:
                self._reject(conn, req, "reload_busy")
            else:
                self._reloading = True
                self._workers.submit(self._reload, self.on_reload, conn, conn.token, conn.keep_alive)
        elif path not in ("/", "/-/healthy"):
            self.reply(conn, 404, "not found", head_only=head)
        elif method not in _GET:
            self.reply(conn, 405, "method not allowed", head_only=head, extra=(("Allow", "GET, HEAD"),))
        elif path == "/-/healthy":
            self.reply(conn, 200, "OK", head_only=head)
        else:
            link = html.escape(self.telemetry_path)
            page = (f"<html><head><title>socket_exporter</title></head><body><h1>socket_exporter</h1>"
                    f"<p>Version {html.escape(__version__)}</p><p><a href=\"{link}\">Metrics</a></p>"
                    f"<p><a href=\"/-/healthy\">Health</a></p></body></html>\n")
            keep = conn.keep_alive
            self.respond(conn, response(200, page.encode(), "text/html; charset=utf-8", keep_alive=keep,
                                        head_only=head), keep)

    def scrape_budget(self, header: str | None) -> float:
        """Seconds a scrape may wait: the scraper's timeout less an offset, so the 503 reaches it in time."""
        limits = self.limits
        try:
            timeout = float(header) if header is not None else math.nan
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            return limits.default_scrape_timeout
        timeout = min(timeout, limits.max_scrape_timeout)
        return max(timeout - limits.scrape_timeout_offset, timeout / 2)

    # -- worker threads: compute, then hand the bytes to the loop ----------------------------------
    def _scrape(self, conn: Conn, token: int, head: bool, keep: bool) -> None:
        payload = b""
        try:
            payload = response(200, generate_latest(self.registry), CONTENT_TYPE_TEXT, keep_alive=keep,
                               head_only=head)
        except Exception:
            log.exception("scrape failed")
            payload = text_response(500, "scrape failed; see the exporter's log", keep_alive=keep, head_only=head)
        finally:
            self.call_soon(lambda: self._scraped(conn, token, payload, keep))

    def _scraped(self, conn: Conn, token: int, payload: bytes, keep: bool) -> None:
        self._scrapes -= 1
        if conn.token == token and conn.state == BUSY:
            self.respond(conn, payload, keep)

    def _reload(self, on_reload: Callable[[], tuple[bool, str]], conn: Conn, token: int, keep: bool) -> None:
        ok, message = False, "reload failed"
        try:
            ok, message = on_reload()
        except Exception as exc:
            log.exception("reload failed")
            message = f"reload failed: {exc}"
        finally:
            line = (str(message).strip().splitlines() or [""])[0]
            payload = text_response(200 if ok else 500, line, keep_alive=keep)
            self.call_soon(lambda: self._reloaded(conn, token, payload, keep))

    def _reloaded(self, conn: Conn, token: int, payload: bytes, keep: bool) -> None:
        self._reloading = False
        if conn.token == token and conn.state == BUSY:
            self.respond(conn, payload, keep)
