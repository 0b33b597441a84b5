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

No lock-out. A connection is in one stage: ``handshake``, ``read`` (a request is arriving), ``idle``
(keep-alive), ``busy`` (the server computes its answer), ``held`` (a 401 delayed by the tarpit) or
``write``. Connections are kept in order of their last progress (bytes in, bytes taken by the kernel,
a stage change). At ``max_connections``, or at ``max_connections_per_client`` for the new
connection's address, the connection that made no progress for longest is evicted, whatever its
stage but ``busy`` (bounded by the scrape and auth deadlines instead). A client that pipelines
requests and never reads gets one response at a time: the next request is not read until the
previous response is in the kernel, so it ends up in ``write`` making no progress, first in line for
eviction. Response bytes waiting in user space are bounded in total (``max_buffered_bytes``): a
response that would exceed it first evicts writers the kernel no longer takes bytes from.

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
import fcntl
import logging
import resource
import socket
import ssl
import struct
import termios
import threading
from dataclasses import dataclass

from .metrics import ServerMetrics
from .protocol import BadRequest, Request, head_end, parse_head, text_response

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
FD_HEADROOM = 128  # descriptors kept for the collection: netlink sockets, /proc walks, log files
CHUNK = 64 * 1024  # a response is handed to the transport in pieces: each one taken is progress
TICK = 0.5  # the loop wakes at least this often, so a signal handler (SIGTERM) runs on the main thread
HANDSHAKE, READ, IDLE, BUSY, HELD, WRITE = "handshake", "read", "idle", "busy", "held", "write"
_TIMEOUT_STAGE = {READ: "request", WRITE: "write"}  # idle closes are not timeouts


@dataclass(frozen=True)
class ServerLimits:
    # Concurrent scrapes share one collection, so each extra one costs only its exposition:
    # 16 lets several Prometheus servers and ad-hoc curls through. Beyond: 503 scrape_limit.
    max_scrapes_in_flight: int = 16
    max_connections: int = 2048
    max_connections_per_client: int = 1536  # per client IP address (3/4 of the slots); beyond: its own stalest goes
    max_buffered_bytes: int = 64 * 1024 * 1024  # responses waiting for slow readers, all connections together
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
    shutdown_grace: float = 10.0  # on shutdown, requests in flight get this long to finish


class Conn(asyncio.Protocol):
    """One client connection (loop thread only): the asyncio protocol plus its stage and buffers."""

    def __init__(self, owner: Transport, sock: socket.socket, host: str, peer: str) -> None:
        self.owner, self.sock, self.host, self.peer = owner, sock, host, peer
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.inbuf = bytearray()
        self.stage, self.pending, self.eof, self.paused, self.closed = HANDSHAKE, False, False, False, False
        self.counted = False  # its disconnect is counted
        self.tls = False
        self.started = False  # its task began: from then on asyncio owns the socket
        self.pipelined = False  # a request had more bytes queued behind it: this client does not wait for answers
        self.buffered = 0  # response bytes not yet taken by the kernel
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=CHUNK)  # pause_writing past one piece (TLS's default is 512 KiB)

    def data_received(self, data: bytes) -> None:
        self.inbuf += data
        if len(self.inbuf) > self.owner.read_limit and self.transport is not None:
            self.transport.pause_reading()  # resumed once a request is taken off the buffer
        self.progress()

    def eof_received(self) -> bool:
        self.eof = True
        self.gone("end of stream")
        self.wake()
        return not self.tls  # keep the write side open: a half-closed client still gets its answer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.gone(exc or "closed")
            self.close(abort=True)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.progress()

    # -- used by Transport ----------------------------------------------------------------------------
    def progress(self) -> None:
        """Bytes moved or the stage changed: move to the young end of the eviction order, wake the task."""
        conns = self.owner.conns
        if conns.pop(self, 0) is None:
            conns[self] = None
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until the next progress; ConnectionError once the connection is closed."""
        if self.closed:
            raise ConnectionResetError("closed")
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        if self.closed:
            raise ConnectionResetError("closed")

    def enter(self, stage: str, seconds: float | None = None) -> None:
        """Move to ``stage``; ``seconds`` is its deadline, past which the connection is closed."""
        self.stage = stage
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds is not None:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)
        self.progress()

    def _expired(self) -> None:
        if self.stage in _TIMEOUT_STAGE:
            self.owner.metrics.timeouts_total.labels(_TIMEOUT_STAGE[self.stage]).inc()
        log.debug("closing %s: timed out in stage %s", self.peer, self.stage)
        self.close(abort=True, reset=_unacked(self) > 0)

    def gone(self, why: object) -> None:
        """The peer closed or reset; counted once if it left a request unanswered."""
        if not self.counted and (self.pending or (self.stage == READ and self.inbuf)):
            self.counted = True
            self.owner.metrics.disconnects_total.inc()
            log.debug("client %s went away mid-request: %s", self.peer, why)

    def close(self, *, abort: bool, reset: bool = False) -> None:
        """Close; ``abort`` drops what is unsent, ``reset`` sends a RST rather than a FIN."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.owner.forget(self)
        if reset:  # not a FIN queued behind answers the client never reads: the kernel frees them now
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.transport is not None:
            self.transport.abort() if abort else self.transport.close()
        elif self.task is not None and not self.started:
            self.sock.close()  # a task cancelled before it ran never reaches its finally
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.wake()


class Transport:
    """Listener, accept loop and connection lifecycle; a subclass answers requests (``handle``)."""

    def __init__(self, address: tuple[str, int], limits: ServerLimits, metrics: ServerMetrics) -> None:
        self.limits, self.metrics = limits, metrics
        fds = _raise_fd_limit(limits.max_connections + FD_HEADROOM)
        self.max_connections = max(1, min(limits.max_connections, fds - FD_HEADROOM))
        if self.max_connections < limits.max_connections:
            log.warning("RLIMIT_NOFILE %d allows only %d client connections", fds, self.max_connections)
        self.read_limit = limits.max_header_bytes + limits.max_body_bytes
        self._listener = _listen(address)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self.conns: dict[Conn, None] = {}  # oldest progress first
        self._per_host: dict[str, int] = {}
        self._buffered = 0
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
        accepting = loop.create_task(self._accept())
        while not self._stop.is_set():  # a tick, so Python runs a pending signal handler soon
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK)
        accepting.cancel()
        await asyncio.sleep(0)
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
    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(self._listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and not self._evict():
                    log.warning("cannot accept connections: %s; pausing accept for a second", exc)
                    await asyncio.sleep(1.0)
                continue
            self._admit(sock, str(addr[0]), f"{addr[0]}:{addr[1]}")

    def _admit(self, sock: socket.socket, host: str, peer: str) -> None:
        full_host = self._per_host.get(host, 0) >= self.limits.max_connections_per_client
        if (full_host and not self._evict(host)) or (len(self.conns) >= self.max_connections and not self._evict()):
            sock.close()
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(self, sock, host, peer)
        self.conns[conn] = None
        self._per_host[host] = self._per_host.get(host, 0) + 1
        conn.task = asyncio.get_running_loop().create_task(self._serve(conn, sock))

    def _evict(self, host: str | None = None, writers_only: bool = False) -> bool:
        """Close the connection that made no progress for longest (of ``host``, or stalled writers)."""
        for conn in self.conns:
            if conn.stage == BUSY or (host is not None and conn.host != host):
                continue
            if writers_only and not (conn.stage == WRITE and conn.paused):
                continue
            self.metrics.evicted_total.inc()
            log.debug("evicting %s (stage %s)", conn.peer, conn.stage)
            conn.close(abort=True, reset=_unacked(conn) > 0)
            return True
        return False

    def forget(self, conn: Conn) -> None:
        if self.conns.pop(conn, 0) is None:
            left = self._per_host[conn.host] - 1
            if left:
                self._per_host[conn.host] = left
            else:
                del self._per_host[conn.host]
        self._buffered -= conn.buffered
        conn.buffered = 0

    # -- one connection ----------------------------------------------------------------------------------
    async def _serve(self, conn: Conn, sock: socket.socket) -> None:
        conn.started = True
        lim, loop = self.limits, asyncio.get_running_loop()
        ctx = self.tls_context()
        conn.tls = ctx is not None
        try:
            conn.enter(HANDSHAKE if ctx else READ, None if ctx else lim.header_timeout)
            try:
                await loop.connect_accepted_socket(lambda: conn, sock, ssl=ctx,
                                                   ssl_handshake_timeout=lim.handshake_timeout if ctx else None)
            except ConnectionAbortedError:  # asyncio's ssl_handshake_timeout
                self.metrics.timeouts_total.labels("tls_handshake").inc()
                return
            except (ssl.SSLError, OSError) as exc:
                self.metrics.tls_errors_total.inc()
                log.debug("TLS handshake with %s failed: %s", conn.peer, exc)
                return
            if ctx:
                conn.enter(READ, lim.header_timeout)
            served = 0
            while not conn.closed:
                request = await self._read_request(conn)
                if request is None:
                    return
                conn.pipelined = conn.pipelined or bool(conn.inbuf)
                if served:
                    await self._delivered(conn)
                served += 1
                conn.pending = True
                conn.enter(BUSY)
                payload, keep = await self.handle(conn, *request)
                await self._send(conn, payload)
                conn.pending = False
                if not keep or self._stopping:
                    return
                conn.enter(IDLE, lim.idle_timeout)
                if conn.transport is not None and len(conn.inbuf) <= self.read_limit:
                    conn.transport.resume_reading()
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await self._send(conn, text_response(exc.status, str(exc), keep_alive=False))
        except ConnectionError:
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("internal error serving %s", conn.peer)
        finally:
            if conn.transport is None:
                sock.close()
            conn.close(abort=False)

    async def _read_request(self, conn: Conn) -> tuple[Request, bytes] | None:
        """The next complete request on ``conn``; None when the client closed between requests."""
        buf, lim = conn.inbuf, self.limits
        while True:
            while buf[:2] == b"\r\n":  # RFC 9112 2.2: tolerate blank lines before a request
                del buf[:2]
            if buf:
                if conn.stage == IDLE:
                    conn.enter(READ, lim.header_timeout)
                end = head_end(buf, lim.max_header_bytes)
                if end >= 0:
                    req = parse_head(bytes(buf[:end]))
                    length = req.content_length
                    if length > lim.max_body_bytes:
                        raise BadRequest(413, f"request body over {lim.max_body_bytes} bytes")
                    if len(buf) >= end + 4 + length:
                        body = bytes(buf[end + 4:end + 4 + length])
                        del buf[:end + 4 + length]
                        return req, body
            if conn.eof:
                return None
            await conn.wait()

    async def _delivered(self, conn: Conn) -> None:
        """Until the client has received the previous answer (the kernel holds none of it unacknowledged).

        A client that reads sends its next request after the answer arrived, and that request carries the
        ACK: no wait. One that pipelines without reading waits here, in ``write`` and making no progress,
        so it costs one scrape per connection, not one per request it queued, and is the first evicted."""
        conn.enter(WRITE, self.limits.write_timeout)
        delay = 0.002
        while _unacked(conn) > 0:
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)

    async def _send(self, conn: Conn, payload: bytes) -> None:
        """Write ``payload``, a piece at a time, each once the kernel took the one before."""
        conn.enter(WRITE, self.limits.write_timeout)
        while self._buffered + len(payload) > self.limits.max_buffered_bytes and self._evict(writers_only=True):
            pass
        view = memoryview(payload)
        conn.buffered = len(view)
        self._buffered += len(view)
        for offset in range(0, len(view), CHUNK):
            if conn.transport is None or conn.closed:
                raise ConnectionResetError("closed")
            conn.transport.write(view[offset:offset + CHUNK])
            while conn.paused:
                await conn.wait()
            taken = min(CHUNK, len(view) - offset)
            conn.buffered -= taken
            self._buffered -= taken
            conn.progress()


def _unacked(conn: Conn) -> int:
    """Bytes of answers not yet acknowledged by the client: in asyncio's buffer or the kernel's (SIOCOUTQ)."""
    if conn.transport is None or conn.closed:
        return 0
    try:
        queued = struct.unpack("i", fcntl.ioctl(conn.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0
    return int(queued) + conn.transport.get_write_buffer_size()


def _raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want`` (as Go does at start); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return want if soft == resource.RLIM_INFINITY else int(soft)


def _listen(address: tuple[str, int]) -> socket.socket:
    """A non-blocking listener; ``""`` is every address, IPv4 and IPv6 where the host has both."""
    host = address[0] or ("::" if socket.has_dualstack_ipv6() else "0.0.0.0")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((host, address[1]))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
