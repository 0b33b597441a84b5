"""The event loop: one thread owns every client socket; other threads only compute responses.

Why an event loop: with a thread (or a pool slot) per connection, every idle keep-alive, every client
that connects and says nothing, and every TLS client that stops halfway through its handshake holds
a thread until it times out, so a few dozen of them stall Prometheus's scrape (client_python's stock
server: one thread per request, backlog 5, TLS handshake on the thread that reads). Here one thread
runs ``selectors`` (epoll) over non-blocking sockets: accepting, the TLS handshake, reading requests
and writing responses (exporter/web/conn.py). A complete request goes to ``handle_request``; an
answer computed in another thread comes back through :meth:`EventLoopServer.call_soon` and the loop
writes it. A 503 or 401 costs no thread at all.

Bounds, all in :class:`~exporter.web.conn.ServerLimits`: a listen backlog of 1024 (the kernel caps it
at somaxconn); at most ``max_connections`` connections, beyond which the oldest connection that is
idle, handshaking or still sending its request is evicted (so a flood of idle sockets cannot lock
Prometheus out), with RLIMIT_NOFILE's soft limit raised to fit, as Go does; deadlines for the
handshake, the request (counted from accept, or from the first byte on a keep-alive connection:
slowloris gets ``header_timeout`` in total), idle keep-alive and writing the response, checked by a
sweep every ``SWEEP_SECONDS``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable

from .conn import BUSY, CLOSED, HANDSHAKE, READ, WRITE, Conn, ConnectionIO, ServerLimits
from .metrics import ServerStats

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
ACCEPT_BATCH = 64
SWEEP_SECONDS = 0.1
FD_HEADROOM = 128  # descriptors kept for the collection: netlink sockets, /proc walks, log files
_READ = selectors.EVENT_READ


def _raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want`` (as Go does at start); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return want if soft == resource.RLIM_INFINITY else int(soft)


class EventLoopServer(ConnectionIO):
    """Listener plus event loop; subclasses implement ``handle_request`` and ``on_busy_timeout``."""

    def __init__(self, address: tuple[str, int], limits: ServerLimits, stats: ServerStats) -> None:
        self.limits, self.stats = limits, stats
        fds = _raise_fd_limit(limits.max_connections + FD_HEADROOM)
        self.max_connections = max(1, min(limits.max_connections, fds - FD_HEADROOM))
        if self.max_connections < limits.max_connections:
            log.warning("RLIMIT_NOFILE %d allows only %d client connections", fds, self.max_connections)
        host = address[0] or ("::" if socket.has_dualstack_ipv6() else "0.0.0.0")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                self._listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self._listener.bind((host, address[1]))
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, _READ, self._on_accept)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, _READ, self._on_wake)
        self._pending: deque[Callable[[], None]] = deque()
        self._conns: set[Conn] = set()
        self._waiting: dict[Conn, None] = {}  # evictable (handshake, reading, idle), oldest first
        self._accept_paused_until = 0.0
        self._stopping = False
        self._loop_thread: int | None = None
        self._stopped = threading.Event()
        self._stopped.set()

    def tls_context(self) -> ssl.SSLContext | None:
        """Context for the next accepted connection; None serves plain HTTP."""
        return None

    def on_busy_timeout(self, conn: Conn) -> None:
        """A busy request passed its deadline (loop thread)."""
        self.close(conn)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread soon; safe from any thread."""
        self._pending.append(fn)
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is already pending
            self._wake_w.send(b"\0")

    # -- the loop ---------------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = SWEEP_SECONDS) -> None:
        """Serve until :meth:`shutdown`; ``poll_interval`` is accepted for socketserver compatibility."""
        self._stopped.clear()
        self._loop_thread = threading.get_ident()
        next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            while not self._stopping:
                timeout = 0.0 if self._pending else max(0.0, next_sweep - time.monotonic())
                for key, _ in self._sel.select(timeout):
                    if not isinstance(key.data, Conn):
                        key.data()
                    elif key.data.state != CLOSED:
                        self._on_conn(key.data)
                self._run_pending()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_SECONDS
        finally:
            self._loop_thread = None
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever; waits for it unless called from the loop thread itself (a signal handler)."""
        self._stopping = True
        self.call_soon(lambda: None)
        if self._loop_thread not in (None, threading.get_ident()):
            self._stopped.wait()

    def server_close(self) -> None:
        for conn in list(self._conns):
            self.close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._sel.close()

    def _on_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _run_pending(self) -> None:
        while self._pending:
            fn = self._pending.popleft()
            try:
                fn()
            except Exception:
                log.exception("internal error in the HTTP event loop")

    def _on_conn(self, conn: Conn) -> None:
        try:
            if conn.state == HANDSHAKE:
                self._handshake(conn)
            elif conn.state == WRITE:
                self._write(conn)
            else:
                self._read(conn)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("internal error serving %s", conn.peer)
            self.close(conn)
    def _sweep(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, _READ, self._on_accept)
        for conn in [c for c in self._conns if c.deadline <= now]:
            if conn.state == HANDSHAKE:
                self.stats.timeout("tls_handshake")
            elif conn.state == READ and (conn.started or conn.served == 0):
                self.stats.timeout("request")
            elif conn.state == WRITE:
                self.stats.timeout("write")
            elif conn.state == BUSY:
                if conn.held is not None:
                    self.respond(conn, conn.held, conn.keep_alive)
                else:
                    self.on_busy_timeout(conn)
                continue
            log.debug("closing %s: timed out in state %d", conn.peer, conn.state)
            self.close(conn)

    # -- accepting --------------------------------------------------------------------------------
    def _evict(self) -> bool:
        oldest = next(iter(self._waiting), None)
        if oldest is None:
            return False
        self.stats.bump("evicted")
        self.close(oldest)
        return True

    def _on_accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and not self._evict():
                    log.warning("cannot accept connections: %s; pausing accept for a second", exc)
                    self._sel.unregister(self._listener)
                    self._accept_paused_until = time.monotonic() + 1.0
                    return
                continue
            if len(self._conns) >= self.max_connections and not self._evict():
                sock.close()
                continue
            self._admit(sock, f"{addr[0]}:{addr[1]}")

    def _admit(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now, ctx = time.monotonic(), self.tls_context()
        if ctx is not None:
            try:
                sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError):
                self.stats.bump("tls_errors")
                sock.close()
                return
            conn = Conn(sock, peer, HANDSHAKE, now + self.limits.handshake_timeout)
        else:
            conn = Conn(sock, peer, READ, now + self.limits.header_timeout)
        self._conns.add(conn)
        self._waiting[conn] = None
        self._watch(conn, _READ)
