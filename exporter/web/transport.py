"""Client connections on asyncio: TLS, per-phase deadlines, flow control, and nobody can lock the server out.

Why asyncio and not a thread per connection: an idle keep-alive, a client that connects and says
nothing, a TLS handshake stalled after the ClientHello each hold a thread until they time out, so a few
dozen of them stall Prometheus (client_python's stock server: a thread per request, backlog 5, the TLS
handshake on the thread that reads). Here one event loop owns every socket; threads only compute
(exporter/web/server.py). Why ``connect_accepted_socket`` after our own ``sock_accept`` rather than
``asyncio.start_server(ssl=...)``: the latter fixes the TLS context when it starts (a reloaded
certificate would need a restart) and hides a connection until its handshake is done, so a stalled
handshake could be neither counted, nor evicted, nor its failure seen. Accepting ourselves, each
connection gets the current context, ``ssl_handshake_timeout``, and a place in the eviction order
from its first moment.

No lock-out. At ``max_connections``, or at ``max_connections_per_client`` for the new connection's
address, the connection that made no progress for longest is evicted, whatever its stage but ``busy``
(exporter/web/connection.py). A client that pipelines and never reads gets one answer at a time (the
next request is read once the previous answer is in the kernel, and answered once the client received
it), so it ends up in ``write`` making no progress, first in line. Answer bytes waiting in user space
are bounded in total (``max_buffered_bytes``) by evicting writers the kernel no longer takes bytes from.

Deadlines per stage: the handshake (``handshake_timeout``), the request head and body
(``header_timeout``, counted from accept on a new connection and from the first byte on a keep-alive
one: a slowloris gets that much in total), ``idle_timeout`` between requests, ``write_timeout`` for a
response. A client that half-closes after its request (``nc -N``) still gets its answer; TCP cannot
tell that from a client that left, so the early FIN is also counted as a disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import threading

from .connection import BUSY, HANDSHAKE, IDLE, READ, WRITE, Conn, ServerLimits, unacked
from .heap import Trimmer
from .listener import listen, raise_fd_limit
from .metrics import ServerMetrics
from .protocol import BadRequest, Request, text_response
from .tls_session import TlsSession

log = logging.getLogger(__name__)

FD_HEADROOM = 128  # descriptors kept for the collection: netlink sockets, /proc walks, log files
RECV_BUFFER = 64 * 1024
ACCEPT_BATCH = 256  # connections accepted per wake-up of the listener
TICK = 0.5  # the loop wakes at least this often, so a signal handler (SIGTERM) runs on the main thread


class Transport:
    """Listener, accept loop and connection lifecycle; a subclass answers requests (``handle``)."""

    def __init__(self, address: tuple[str, int], limits: ServerLimits, metrics: ServerMetrics) -> None:
        self.limits, self.metrics = limits, metrics
        fds = raise_fd_limit(limits.max_connections + FD_HEADROOM)
        self.max_connections = max(1, min(limits.max_connections, fds - FD_HEADROOM))
        if self.max_connections < limits.max_connections:
            log.warning("RLIMIT_NOFILE %d allows only %d client connections", fds, self.max_connections)
        self.read_limit = limits.max_header_bytes + limits.max_body_bytes
        self._listener = listen(address)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self.conns: dict[Conn, None] = {}  # oldest progress first
        self._per_host: dict[str, int] = {}
        self.handshakes = 0  # TLS handshakes in progress (an SSLObject made, not yet done)
        self._handshakes_of: dict[str, int] = {}
        self.recv_view = memoryview(bytearray(RECV_BUFFER))  # every connection reads into it (loop thread)
        self.buffered_total = 0
        self._stopping = False
        self.abandoned = 0  # requests still in flight when the shutdown grace ran out
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._loop_thread: int | None = None
        self._stopped = threading.Event()
        self._stopped.set()

    def tls_context(self) -> ssl.SSLContext | None:
        """Context for the next accepted connection; None serves plain HTTP."""
        return None

    async def handle(self, conn: Conn, req: Request, body: bytes) -> tuple[bytes, bool]:
        """The response to a complete request and whether to keep the connection open."""
        raise NotImplementedError

    @property
    def open_connections(self) -> int:
        return len(self.conns)

    # -- lifecycle (socketserver-like) -----------------------------------------------------------------
    def serve_forever(self, poll_interval: float = TICK) -> None:
        """Serve until :meth:`shutdown`, running the event loop on the calling thread."""
        self._stopped.clear()
        self._loop_thread = threading.get_ident()
        try:
            asyncio.run(self._run())
        finally:
            self._loop_thread, self._loop = None, None
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving; waits for it unless called from the loop thread itself (a signal handler)."""
        self._stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        if self._loop_thread not in (None, threading.get_ident()):
            self._stopped.wait()

    def server_close(self) -> None:
        for conn in list(self.conns):
            conn.close(abort=True)
        self._listener.close()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        if self._stopping:
            return
        loop.add_reader(self._listener.fileno(), self._accept)
        trimmer = Trimmer()
        while not self._stop.is_set():  # a tick, so Python runs a pending signal handler soon
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK)
            trimmer.tick(len(self.conns))
        loop.remove_reader(self._listener.fileno())
        self._listener.close()  # refuse new connections at once rather than leave them in the backlog
        for conn in [c for c in self.conns if c.stage not in (BUSY, WRITE)]:
            conn.close(abort=True)
        in_flight, deadline = len(self.conns), loop.time() + self.limits.shutdown_grace
        while self.conns and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.abandoned = len(self.conns)
        for conn in list(self.conns):
            conn.close(abort=True)
        log.info("stopped serving: %d requests in flight finished, %d abandoned after %.0f s",
                 in_flight - self.abandoned, self.abandoned, self.limits.shutdown_grace)

    # -- admission and eviction ------------------------------------------------------------------------
    def _accept(self) -> None:
        """Accept every connection waiting, up to ACCEPT_BATCH, in one wake-up.

        Why a batch: a client opening and closing connections as fast as it can fills the kernel's
        accept queue if we take one per loop iteration, and a full queue drops the SYN of everyone
        else, Prometheus included, who then waits out TCP's 1 s, 3 s, 7 s retransmits."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and not self.evict():
                    log.warning("cannot accept connections: %s; pausing accept for a second", exc)
                    loop = asyncio.get_running_loop()
                    loop.remove_reader(self._listener.fileno())
                    loop.call_later(1.0, self._resume_accept)
                    return
                continue
            sock.setblocking(False)
            self._admit(sock, str(addr[0]), f"{addr[0]}:{addr[1]}")

    def _resume_accept(self) -> None:
        if not self._stopping and self._listener.fileno() >= 0:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def _admit(self, sock: socket.socket, host: str, peer: str) -> None:
        full_host = self._per_host.get(host, 0) >= self.limits.max_connections_per_client
        if (full_host and not self.evict(host)) or (len(self.conns) >= self.max_connections and not self.evict()):
            sock.close()
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(self, sock, host, peer)
        self.conns[conn] = None
        self._per_host[host] = self._per_host.get(host, 0) + 1
        conn.task = asyncio.get_running_loop().create_task(self._serve(conn, sock))

    def evict(self, host: str | None = None, writers_only: bool = False) -> bool:
        """Close the connection that made no progress for longest (of ``host``, or stalled writers)."""
        for conn in self.conns:
            if conn.stage == BUSY or (host is not None and conn.host != host):
                continue
            if writers_only and not (conn.stage == WRITE and conn.paused):
                continue
            self.metrics.evicted_total.inc()
            log.debug("evicting %s (stage %s)", conn.peer, conn.stage)
            conn.close(abort=True, reset=unacked(conn) > 0)
            return True
        return False

    def handshake_begins(self, conn: Conn) -> None:
        """Make room for one more handshake in progress: at ``max_handshakes`` in all, or at
        ``max_handshakes_per_client`` for the connection's address, the stalest such handshake goes.

        Why a bound of its own: a connection mid-handshake holds OpenSSL's handshake state, tens of KiB,
        where a connection that has sent nothing holds a few hundred bytes, so ``max_connections`` alone
        would let 2,000 stalled handshakes take 100 MB and more."""
        mine = self._handshakes_of.get(conn.host, 0)
        if mine >= self.limits.max_handshakes_per_client or self.handshakes >= self.limits.max_handshakes:
            # its own stalest at its own cap, else the stalest of the address with the most in progress
            host = conn.host if mine >= self.limits.max_handshakes_per_client else \
                max(self._handshakes_of, key=self._handshakes_of.__getitem__)
            for other in self.conns:
                if other.handshaking and other.host == host:
                    self.metrics.evicted_total.inc()
                    other.close(abort=True)
                    break
        self.handshakes += 1
        self._handshakes_of[conn.host] = self._handshakes_of.get(conn.host, 0) + 1

    def handshake_over(self, conn: Conn) -> None:
        conn.handshaking = False
        self.handshakes -= 1
        left = self._handshakes_of[conn.host] - 1
        if left:
            self._handshakes_of[conn.host] = left
        else:
            del self._handshakes_of[conn.host]

    def forget(self, conn: Conn) -> None:
        if self.conns.pop(conn, 0) is None:
            left = self._per_host[conn.host] - 1
            if left:
                self._per_host[conn.host] = left
            else:
                del self._per_host[conn.host]
        self.buffered_total -= conn.buffered
        conn.buffered = 0

    # -- one connection ----------------------------------------------------------------------------------
    async def _serve(self, conn: Conn, sock: socket.socket) -> None:
        conn.started = True
        lim, loop = self.limits, asyncio.get_running_loop()
        ctx = self.tls_context()
        if ctx is not None:
            conn.tls = TlsSession(ctx, conn.before_handshake)
        try:
            conn.enter(HANDSHAKE if ctx else READ, lim.handshake_timeout if ctx else lim.header_timeout)
            await loop.connect_accepted_socket(lambda: conn, sock)
            if conn.tls is not None:
                while not conn.tls.done:
                    await conn.wait()
                conn.enter(READ, lim.header_timeout)
            served = 0
            while not conn.closed:
                request = await conn.read_request()
                if request is None:
                    return
                conn.pipelined = conn.pipelined or bool(conn.inbuf)
                if served:
                    await conn.delivered()
                served += 1
                conn.pending = True
                conn.enter(BUSY)
                payload, keep = await self.handle(conn, *request)
                await conn.send(payload)
                conn.pending = False
                if not keep or self._stopping:
                    return
                conn.enter(IDLE, lim.idle_timeout)
                if conn.transport is not None and len(conn.inbuf) <= self.read_limit:
                    conn.transport.resume_reading()
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await conn.send(text_response(exc.status, str(exc), keep_alive=False))
        except OSError:  # ConnectionError from a closed connection, or the socket failing under us
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("internal error serving %s", conn.peer)
        finally:
            if conn.transport is None:
                sock.close()
            conn.close(abort=False)
