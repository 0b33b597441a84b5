"""Per-connection HTTP I/O on non-blocking sockets: TLS handshake, request reading, response writing.

Every method here runs on the event loop thread (exporter/web/loop.py) and never blocks: a socket
that is not ready is watched for readiness and the method returns. Why this matters: the TLS
handshake is stepped with ``do_handshake()`` on each readiness event, so a client that stops halfway
costs a file descriptor and a few KB, never a thread; a client trickling its request head (slowloris)
holds nothing but its buffer until ``header_timeout``; a slow reader holds nothing but its response.

A client that goes away while its request is being answered is noticed (the socket stays watched for
reading while busy, as Go's net/http does), counted in ``socket_exporter_http_client_disconnects_total``
and logged at debug level, never as a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import ServerStats
from .protocol import BadRequest, Request, parse_head, text_response

log = logging.getLogger(__name__)

HANDSHAKE, READ, BUSY, WRITE, CLOSED = range(5)
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(frozen=True)
class ServerLimits:
    # Concurrent scrapes share one collection, so each extra one costs only its exposition (~1 ms):
    # 16 lets several Prometheus servers and ad-hoc curls through. Beyond: 503, counted in
    # socket_exporter_http_requests_rejected_total{reason="scrape_limit"}.
    max_scrapes_in_flight: int = 16
    max_connections: int = 2048
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0  # request head and body, from the first byte (from accept on a new connection)
    idle_timeout: float = 300.0  # keep-alive between requests: longer than any sane scrape interval
    write_timeout: float = 60.0
    default_scrape_timeout: float = 60.0  # when the scraper sends no X-Prometheus-Scrape-Timeout-Seconds
    max_scrape_timeout: float = 600.0
    scrape_timeout_offset: float = 0.5  # answer this much before the scraper gives up (blackbox_exporter's default)
    auth_workers: int = 1  # bcrypt threads: a password flood burns at most this many cores
    max_auth_pending: int = 32  # bcrypt checks queued or running; beyond: 503 auth_busy
    auth_timeout: float = 10.0
    auth_failure_delay: float = 0.5  # 401s and auth_busy 503s wait this long: a guessing client gets 2 tries/s
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024


class Conn:
    """One client connection; touched by the loop thread only (workers see it as an opaque handle)."""

    __slots__ = ("busy_reason", "deadline", "events", "held", "inbuf", "keep_alive", "out", "peer", "served",
                 "sock", "started", "state", "token")

    def __init__(self, sock: socket.socket, peer: str, state: int, deadline: float) -> None:
        self.sock, self.peer, self.state, self.deadline = sock, peer, state, deadline
        self.inbuf = bytearray()
        self.out: memoryview | None = None
        self.events = 0
        self.token = 0  # bumped whenever the request being answered changes: stale answers are dropped
        self.started = False  # bytes of the next request have arrived
        self.served = 0
        self.keep_alive = True
        self.busy_reason = ""
        self.held: bytes | None = None  # a response held back until ``deadline`` (tarpit)


class ConnectionIO:
    """The I/O half of the server; :class:`exporter.web.loop.EventLoopServer` adds listening and the loop."""

    limits: ServerLimits
    stats: ServerStats
    _sel: selectors.BaseSelector
    _conns: set[Conn]
    _waiting: dict[Conn, None]  # evictable (handshake, reading, idle), oldest first
    _pending: deque[Callable[[], None]]

    def handle_request(self, conn: Conn, req: Request, body: bytes) -> None:
        """A complete request arrived; answer with :meth:`respond` / :meth:`reply` (loop thread)."""
        raise NotImplementedError

    def respond(self, conn: Conn, payload: bytes, keep_alive: bool) -> None:
        """Send a complete response (loop thread only); ``keep_alive=False`` closes afterwards."""
        if conn.state == CLOSED:
            return
        conn.token += 1
        conn.state, conn.out, conn.keep_alive, conn.held = WRITE, memoryview(payload), keep_alive, None
        conn.deadline = time.monotonic() + self.limits.write_timeout
        self._waiting.pop(conn, None)
        self._write(conn)

    def hold(self, conn: Conn, payload: bytes, seconds: float) -> None:
        """Send ``payload`` after ``seconds`` (loop thread); the connection holds no thread meanwhile."""
        if conn.state == CLOSED:
            return
        if seconds <= 0:
            self.respond(conn, payload, conn.keep_alive)
            return
        conn.token += 1
        conn.state, conn.held, conn.deadline = BUSY, payload, time.monotonic() + seconds

    def reply(self, conn: Conn, status: int, message: str, *, close: bool = False, head_only: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> None:
        keep = conn.keep_alive and not close
        self.respond(conn, text_response(status, message, keep_alive=keep, head_only=head_only, extra=extra), keep)

    def close(self, conn: Conn) -> None:
        if conn.state == CLOSED:
            return
        self._watch(conn, 0)
        conn.state, conn.out = CLOSED, None
        conn.token += 1
        self._conns.discard(conn)
        self._waiting.pop(conn, None)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _watch(self, conn: Conn, events: int) -> None:
        if events == conn.events:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            if conn.events == 0:
                self._sel.register(conn.sock, events, conn)
            elif events == 0:
                self._sel.unregister(conn.sock)
            else:
                self._sel.modify(conn.sock, events, conn)
        conn.events = events

    def _handshake(self, conn: Conn) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, _READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, _WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self.stats.bump("tls_errors")
            log.debug("TLS handshake with %s failed: %s", conn.peer, exc)
            self.close(conn)
            return
        conn.state, conn.deadline = READ, time.monotonic() + self.limits.header_timeout
        self._watch(conn, _READ)
        self._read(conn)  # the first request may already sit decrypted in OpenSSL's buffer

    # -- reading ----------------------------------------------------------------------------------
    def _gone(self, conn: Conn, why: object) -> None:
        """The peer closed or reset; counted if it left a request unanswered."""
        if conn.state in (BUSY, WRITE) or (conn.state == READ and (conn.started or conn.inbuf)):
            self.stats.bump("disconnects")
            log.debug("client %s went away mid-request: %s", conn.peer, why)
        self.close(conn)

    def _read(self, conn: Conn) -> None:
        limit = self.limits.max_header_bytes + self.limits.max_body_bytes
        while len(conn.inbuf) <= limit:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                self._gone(conn, exc)
                return
            if not data:
                self._gone(conn, "end of stream")
                return
            conn.inbuf += data
        if conn.state == READ:
            self._parse(conn)
        elif len(conn.inbuf) > limit:  # busy, and the client keeps pipelining: stop reading until answered
            self._watch(conn, 0)

    def _parse(self, conn: Conn) -> None:
        while conn.inbuf[:2] == b"\r\n":  # RFC 9112 2.2: tolerate blank lines before a request
            del conn.inbuf[:2]
        if not conn.inbuf:
            return
        if not conn.started:
            conn.started = True
            conn.deadline = min(conn.deadline, time.monotonic() + self.limits.header_timeout)
        end = conn.inbuf.find(b"\r\n\r\n", 0, self.limits.max_header_bytes)
        if end < 0:
            if len(conn.inbuf) >= self.limits.max_header_bytes:
                self.reply(conn, 431, "request head too large", close=True)
            return
        try:
            req = parse_head(bytes(conn.inbuf[:end]))
            length = req.content_length
        except BadRequest as exc:
            self.reply(conn, exc.status, str(exc), close=True)
            return
        if length > self.limits.max_body_bytes:
            self.reply(conn, 413, f"request body over {self.limits.max_body_bytes} bytes", close=True)
            return
        if len(conn.inbuf) < end + 4 + length:
            return
        body = bytes(conn.inbuf[end + 4:end + 4 + length])
        del conn.inbuf[:end + 4 + length]
        self._waiting.pop(conn, None)
        conn.state, conn.deadline, conn.keep_alive = BUSY, math.inf, req.keep_alive
        conn.token += 1
        self.handle_request(conn, req, body)

    # -- writing ----------------------------------------------------------------------------------
    def _write(self, conn: Conn) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self._watch(conn, _WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(conn, _READ)
                return
            except OSError as exc:
                self._gone(conn, exc)
                return
            conn.out = conn.out[sent:]
        conn.out, conn.served = None, conn.served + 1
        if not conn.keep_alive:
            self.close(conn)
            return
        conn.state, conn.started = READ, False
        conn.deadline = time.monotonic() + self.limits.idle_timeout
        self._waiting[conn] = None
        self._watch(conn, _READ)
        # A pipelined request may be buffered already (here or inside OpenSSL). Queued, not called:
        # answering it right here would recurse once per pipelined request.
        self._pending.append(lambda: self._read(conn) if conn.state == READ else None)
