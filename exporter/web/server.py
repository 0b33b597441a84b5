"""The scrape endpoint: telemetry path, landing page at /, /-/healthy and POST /-/reload.

Why not client_python's ``start_http_server``: a thread per request without limit, a backlog of 5, and
with TLS one client that never sends its ClientHello stalls every scrape. Sockets live on one asyncio
loop (exporter/web/transport.py); threads only compute, each kind in its own bounded pool:

* **Scrapes**: ``max_scrapes_in_flight`` at once on a pool of that many + 1 threads (the +1 is for a
  reload), half of them for a client that pipelines, ``max_scrapes_in_flight_per_client`` for one
  address (one sending requests and closing at once must leave room for Prometheus); one more is a 503
  ``scrape_limit`` at once, since queueing would only make it late. Concurrent scrapes share one
  collection (``SharedCollection``). The exposition is negotiated with client_python's
  ``choose_encoder`` and ``gzip_accepted``: OpenMetrics when Accept asks for it, else the text format
  labelled ``version=0.0.4`` (Prometheus before 3.x refuses ``1.0.0``).
  X-Prometheus-Scrape-Timeout-Seconds less ``scrape_timeout_offset`` bounds the wait for the
  collection (503 ``scrape_timeout`` while Prometheus still listens); the abandoned render still
  counts as in flight until it ends, so slow collections cannot pile up threads.
* **bcrypt** on its own pool (``auth_workers`` threads, ``max_auth_pending`` queued, beyond: 503
  ``auth_busy``); credentials that already succeeded skip it (exporter/web/auth.py). Every 401 and
  auth_busy 503 is held back ``auth_failure_delay`` in the evictable ``held`` stage, holding no thread,
  so a guessing client cannot spin on instant refusals.
* **Reload** (``on_reload``) one at a time on the scrape pool's spare thread; a second POST gets 503
  ``reload_busy``. Without ``on_reload`` (no ``--web.enable-lifecycle``), 404.

Basic auth, when configured, guards every path, as exporter-toolkit does.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import html
import logging
import math
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted

from ..pipeline.single_flight import CollectionTimeout
from ..version import __version__
from .auth import parse_basic
from .config import WebConfig
from .connection import BUSY, HELD, Conn, ServerLimits
from .fair_queue import FairQueue
from .metrics import ServerMetrics
from .protocol import Request, response, text_response
from .transport import Transport

log = logging.getLogger(__name__)

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes, in every release
SCRAPE_TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
GZIP_LEVEL = 6  # client_golang's default; 9 (gzip.compress's) costs far more CPU for a few % of bytes
_GET = ("GET", "HEAD")
_REJECTED = {"scrape_limit": "too many scrapes in flight; try again",
             "scrape_timeout": "collection did not finish within the scrape timeout",
             "auth_busy": "too many password checks pending; try again",
             "reload_busy": "a reload is already running"}
_CHALLENGE = (("WWW-Authenticate", 'Basic realm="socket_exporter", charset="UTF-8"'),)

__all__ = ["CONTENT_TYPE_TEXT", "ExporterHTTPServer", "ServerLimits"]
Reply = tuple[bytes, bool]
_REFUSED = object()  # no place in the password-check queue


class ExporterHTTPServer(Transport):
    """Serves ``registry`` at ``telemetry_path``; see the module docstring for the bounds.

    The socketserver-like API exporter/cli.py uses: ``serve_forever()`` (the event loop runs on the
    calling thread), ``shutdown()`` (from another thread or a signal handler), ``server_close()``,
    ``server_address``. ``web_config`` and ``registry`` may be replaced while serving (a reload): new
    connections and requests use the new ones.
    """

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, telemetry_path: str, *,
                 web_config: WebConfig | None = None, on_reload: Callable[[], tuple[bool, str]] | None = None,
                 limits: ServerLimits | None = None) -> None:
        limits = limits or ServerLimits()
        self._scrapes = 0  # loop-thread state: no lock needed
        self._scrapes_of: dict[str, int] = {}  # in flight per client address
        self._reloading = False
        super().__init__(address, limits, ServerMetrics(lambda: self.open_connections, lambda: self._scrapes))
        self.stats = self.metrics  # the counters, by their old name
        self.web_config = web_config or WebConfig()
        self.telemetry_path, self.on_reload = telemetry_path, on_reload
        self._workers = ThreadPoolExecutor(limits.max_scrapes_in_flight + 1, thread_name_prefix="scrape")
        self._bcrypt = ThreadPoolExecutor(limits.auth_workers, thread_name_prefix="bcrypt")
        self._checks = FairQueue(self._bcrypt, limits.auth_workers, limits.max_auth_pending,
                                 limits.max_auth_pending_per_client)
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
        registry.register(self.metrics)
        old, self._registry = self._registry, registry
        if old is not None:
            old.unregister(self.metrics)

    def tls_context(self) -> ssl.SSLContext | None:
        tls = self.web_config.tls
        return tls.context if tls is not None else None

    def server_close(self) -> None:
        super().server_close()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._bcrypt.shutdown(wait=False, cancel_futures=True)

    # -- admission: auth, then route (loop thread) ------------------------------------------------
    async def handle(self, conn: Conn, req: Request, body: bytes) -> Reply:
        keep, head = req.keep_alive, req.method == "HEAD"
        auth = self.web_config.auth
        if auth is not None:
            creds = parse_basic(req.headers.get("authorization"))
            if creds is None:
                return await self._unauthorized(conn, keep, head, "missing")
            if not auth.cached(*creds):
                verdict = await self._verify(conn, auth.verify, *creds)
                if verdict is _REFUSED:
                    self.metrics.rejected_total.labels("auth_busy").inc()
                    return await self._held(conn, text_response(503, _REJECTED["auth_busy"], keep_alive=keep,
                                                                head_only=head), keep)
                if verdict is None:
                    return self._reject("auth_busy", keep, head)
                if not verdict:
                    return await self._unauthorized(conn, keep, head, "invalid")
        return await self._route(conn, req, keep, head)

    async def _verify(self, conn: Conn, verify: Callable[[str, bytes], bool], user: str,
                      password: bytes) -> bool | object | None:
        """bcrypt on its pool, each address in turn (exporter/web/fair_queue.py): the verdict, None past
        ``auth_timeout``, ``_REFUSED`` when no place was free. A client gone while queued costs no bcrypt."""
        future = self._checks.submit(conn.host, verify, user, password)
        if future is None:
            return _REFUSED
        try:
            done, _ = await asyncio.wait({future}, timeout=self.limits.auth_timeout)
        except asyncio.CancelledError:
            future.cancel()
            raise
        if not done:
            future.cancel()
            return None
        try:
            result = future.result()
        except Exception:
            log.exception("password check failed")
            return False
        return _REFUSED if result is None else bool(result)  # None: displaced by a quieter address

    async def _held(self, conn: Conn, payload: bytes, keep: bool) -> Reply:
        """``payload`` after ``auth_failure_delay``: without the delay a guessing client gets an answer per
        round trip, and a few dozen of them keep the loop (and through the GIL, the collection) too busy
        for Prometheus. The connection waits in the evictable ``held`` stage, holding no thread."""
        conn.enter(HELD)
        await asyncio.sleep(self.limits.auth_failure_delay)
        conn.enter(BUSY)
        return payload, keep

    async def _unauthorized(self, conn: Conn, keep: bool, head: bool, reason: str) -> Reply:
        self.metrics.auth_failures_total.labels(reason).inc()
        payload = text_response(401, "unauthorized", keep_alive=keep, head_only=head, extra=_CHALLENGE)
        return await self._held(conn, payload, keep)

    def _reject(self, reason: str, keep: bool, head: bool) -> Reply:
        self.metrics.rejected_total.labels(reason).inc()
        return text_response(503, _REJECTED[reason], keep_alive=keep, head_only=head), keep

    async def _route(self, conn: Conn, req: Request, keep: bool, head: bool) -> Reply:
        path, method = req.path, req.method
        if path == self.telemetry_path:
            if method not in _GET:
                return _text(405, "method not allowed", keep, head, ("Allow", "GET, HEAD"))
            lim = self.limits
            if (self._scrapes >= lim.max_scrapes_in_flight // (2 if conn.pipelined else 1)
                    or self._scrapes_of.get(conn.host, 0) >= lim.max_scrapes_in_flight_per_client):
                return self._reject("scrape_limit", keep, head)
            return await self._scrape(conn.host, req, keep, head)
        if path == "/-/reload" and self.on_reload is not None:
            if method != "POST":
                return _text(405, "use POST", keep, head, ("Allow", "POST"))
            if self._reloading:
                return self._reject("reload_busy", keep, head)
            return await self._reload(self.on_reload, keep)
        if path not in ("/", "/-/healthy"):
            return _text(404, "not found", keep, head)
        if method not in _GET:
            return _text(405, "method not allowed", keep, head, ("Allow", "GET, HEAD"))
        if path == "/-/healthy":
            return _text(200, "OK", keep, head)
        link = html.escape(self.telemetry_path)
        page = (f"<html><head><title>socket_exporter</title></head><body><h1>socket_exporter</h1>"
                f"<p>Version {html.escape(__version__)}</p><p><a href=\"{link}\">Metrics</a></p>"
                f"<p><a href=\"/-/healthy\">Health</a></p></body></html>\n")
        return response(200, page.encode(), "text/html; charset=utf-8", keep_alive=keep, head_only=head), keep

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

    async def _scrape(self, host: str, req: Request, keep: bool, head: bool) -> Reply:
        self._scrapes += 1
        self._scrapes_of[host] = self._scrapes_of.get(host, 0) + 1
        future = asyncio.get_running_loop().run_in_executor(
            self._workers, render, self.registry, req.headers.get("accept", ""),
            req.headers.get("accept-encoding", ""), keep, head)
        future.add_done_callback(functools.partial(self._scraped, host))
        done, _ = await asyncio.wait({future}, timeout=self.scrape_budget(req.headers.get(SCRAPE_TIMEOUT_HEADER)))
        if not done:
            return self._reject("scrape_timeout", keep, head)
        return future.result(), keep

    def _scraped(self, host: str, _: object) -> None:
        self._scrapes -= 1
        left = self._scrapes_of[host] - 1
        if left:
            self._scrapes_of[host] = left
        else:
            del self._scrapes_of[host]

    async def _reload(self, on_reload: Callable[[], tuple[bool, str]], keep: bool) -> Reply:
        self._reloading = True
        future = asyncio.get_running_loop().run_in_executor(self._workers, _reload, on_reload)
        future.add_done_callback(self._reloaded)
        ok, message = await asyncio.shield(future)
        return text_response(200 if ok else 500, message, keep_alive=keep), keep

    def _reloaded(self, _: object) -> None:
        self._reloading = False


def render(registry: CollectorRegistry, accept: str, accept_encoding: str, keep: bool, head: bool) -> bytes:
    """The scrape response (a worker thread): negotiated as client_python does, 500 if collecting fails."""
    try:
        encoder, content_type = choose_encoder(accept)
        if not content_type.startswith("application/openmetrics-text"):
            encoder, content_type = generate_latest, CONTENT_TYPE_TEXT
        body, extra = encoder(registry), [("Vary", "Accept, Accept-Encoding")]
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, GZIP_LEVEL)
            extra.append(("Content-Encoding", "gzip"))
        return response(200, body, content_type, keep_alive=keep, head_only=head, extra=tuple(extra))
    except CollectionTimeout as exc:  # counted and explained where it happens: one line, no traceback
        log.error("scrape failed: %s", exc)
        return text_response(503, f"scrape failed: {exc}", keep_alive=keep, head_only=head)
    except Exception:
        log.exception("scrape failed")
        return text_response(500, "scrape failed; see the exporter's log", keep_alive=keep, head_only=head)


def _reload(on_reload: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    try:
        ok, message = on_reload()
    except Exception as exc:
        log.exception("reload failed")
        ok, message = False, f"reload failed: {exc}"
    return ok, (str(message).strip().splitlines() or [""])[0]


def _text(status: int, message: str, keep: bool, head: bool, *extra: tuple[str, str]) -> Reply:
    return text_response(status, message, keep_alive=keep, head_only=head, extra=extra), keep
