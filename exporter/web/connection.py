"""One client connection: the asyncio protocol, its stage, deadline, buffers and place in the eviction order.

Why a stage per connection: eviction and deadlines are about what the connection waits for. ``handshake``
(TLS), ``read`` (a request is arriving), ``idle`` (keep-alive), ``busy`` (the server computes the answer),
``held`` (a 401 waiting out its delay) and ``write`` (the answer is going out). Only ``busy`` is the
server's own doing; every other stage waits for the client, so a connection in it that made no progress
for longest is the one to evict (exporter/web/transport.py). Progress is bytes in, bytes taken by the
kernel, or a stage change; each moves the connection to the young end of ``Transport.conns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import ssl
import struct
import termios
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .protocol import BadRequest, Request, head_end, parse_head
from .tls_session import TlsSession

if TYPE_CHECKING:
    from .transport import Transport

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # an answer is handed to the transport in pieces: each one taken is progress
HANDSHAKE, READ, IDLE, BUSY, HELD, WRITE = "handshake", "read", "idle", "busy", "held", "write"
_TIMEOUT_STAGE = {HANDSHAKE: "tls_handshake", READ: "request", WRITE: "write"}  # idle closes are not timeouts


@dataclass(frozen=True)
class ServerLimits:
    # Concurrent scrapes share one collection, so each extra one costs only its exposition:
    # 16 lets several Prometheus servers and ad-hoc curls through. Beyond: 503 scrape_limit.
    max_scrapes_in_flight: int = 16
    max_scrapes_in_flight_per_client: int = 12  # of those, for one address (3/4): a flood from one leaves room
    max_connections: int = 2048
    max_connections_per_client: int = 1536  # per client IP address (3/4 of the slots); beyond: its own stalest goes
    max_buffered_bytes: int = 64 * 1024 * 1024  # responses waiting for slow readers, all connections together
    handshake_timeout: float = 10.0
    max_handshakes: int = 256  # TLS handshakes in progress (past the ClientHello); beyond: the stalest goes
    max_handshakes_per_client: int = 64  # of those, from one address
    header_timeout: float = 10.0  # request head and body, from the first byte (from accept on a new connection)
    idle_timeout: float = 300.0  # keep-alive between requests: longer than any sane scrape interval
    write_timeout: float = 60.0
    default_scrape_timeout: float = 60.0  # when the scraper sends no X-Prometheus-Scrape-Timeout-Seconds
    max_scrape_timeout: float = 600.0
    scrape_timeout_offset: float = 0.5  # answer this much before the scraper gives up (blackbox_exporter's default)
    auth_workers: int = 1  # bcrypt threads: a password flood burns at most this many cores
    max_auth_pending: int = 32  # bcrypt checks queued or running; beyond: 503 auth_busy
    max_auth_pending_per_client: int = 4  # of those, from one address; checks are taken one address at a time
    auth_timeout: float = 10.0
    auth_failure_delay: float = 0.5  # 401s and auth_busy 503s wait this long: a guessing client gets 2 tries/s
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    shutdown_grace: float = 10.0  # on shutdown, requests in flight get this long to finish


class Conn(asyncio.BufferedProtocol):
    """One client connection (loop thread only): the asyncio protocol plus its stage and buffers.

    A ``BufferedProtocol`` because the kernel's bytes are read into one buffer the whole server shares
    (``Transport.recv_view``) and copied from there only as far as this connection keeps them: no read
    buffer per connection, whatever the client sends (asyncio's plain ``Protocol`` allocates 256 KiB per
    read). With TLS the ciphertext goes through :class:`TlsSession`, which holds nothing for a silent client.
    """

    def __init__(self, owner: Transport, sock: socket.socket, host: str, peer: str) -> None:
        self.owner, self.sock, self.host, self.peer = owner, sock, host, peer
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.inbuf = bytearray()
        self.stage, self.pending, self.eof, self.paused, self.closed = HANDSHAKE, False, False, False, False
        self.counted = False  # its disconnect is counted
        self.tls: TlsSession | None = None
        self.handshaking = False  # holds one of the server's handshake places (an SSLObject mid-handshake)
        self.started = False  # its task began: from then on asyncio owns the socket
        self.pipelined = False  # a request had more bytes queued behind it: this client does not wait for answers
        self.buffered = 0  # response bytes not yet taken by the kernel
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=CHUNK)  # pause_writing past one piece

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.owner.recv_view

    def buffer_updated(self, nbytes: int) -> None:
        data = self.owner.recv_view[:nbytes]
        if self.tls is None:
            self.inbuf += data
        elif not self._decrypt(data):
            return
        if len(self.inbuf) > self.owner.read_limit and self.transport is not None:
            self.transport.pause_reading()  # resumed once a request is taken off the buffer
        self.progress()

    def _decrypt(self, data: memoryview) -> bool:
        """Ciphertext in, plaintext to ``inbuf``; False when the connection failed its TLS."""
        assert self.tls is not None and self.transport is not None
        try:
            plain, notify = self.tls.receive(data)
        except ConnectionResetError:  # it left after its ClientHello: no handshake for it
            self.close(abort=True)
            return False
        except ssl.SSLError as exc:
            self.owner.metrics.tls_errors_total.inc()
            log.debug("TLS with %s failed: %s", self.peer, exc)
            self.transport.write(self.tls.outgoing())  # the alert saying why, if OpenSSL wrote one
            self.close(abort=False)
            return False
        if out := self.tls.outgoing():
            self.transport.write(out)
        if self.handshaking and self.tls.done:
            self.owner.handshake_over(self)
        self.inbuf += plain
        if notify:
            self.eof_received()
            self.close(abort=False)
        return not notify

    def before_handshake(self) -> None:
        """Called with a whole ClientHello in hand, before OpenSSL gets it: refuse a client that already
        closed (a flood of hellos and closes must cost no handshakes), and take a handshake place."""
        try:
            left = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            left = False
        except OSError:
            left = True
        if left:
            raise ConnectionResetError("client left before its handshake")
        self.owner.handshake_begins(self)
        self.handshaking = True

    def eof_received(self) -> bool:
        self.eof = True
        self.gone("end of stream")
        self.wake()
        return self.tls is None  # keep the write side open: a half-closed client still gets its answer

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
        self.close(abort=True, reset=unacked(self) > 0)

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
        if self.handshaking:
            self.owner.handshake_over(self)
        self.owner.forget(self)
        if reset:  # not a FIN queued behind answers the client never reads: the kernel frees them now
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.transport is not None:
            if not abort and self.tls is not None:
                with contextlib.suppress(ssl.SSLError):
                    self.transport.write(self.tls.close_notify())
            self.transport.abort() if abort else self.transport.close()
        elif self.task is not None and not self.started:
            self.sock.close()  # a task cancelled before it ran never reaches its finally
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.wake()

    async def read_request(self) -> tuple[Request, bytes] | None:
        """The next complete request; None when the client closed between requests."""
        buf, lim = self.inbuf, self.owner.limits
        while True:
            while buf[:2] == b"\r\n":  # RFC 9112 2.2: tolerate blank lines before a request
                del buf[:2]
            if buf:
                if self.stage == IDLE:
                    self.enter(READ, lim.header_timeout)
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
            if self.eof:
                return None
            await self.wait()

    async def delivered(self) -> None:
        """Until the client has received the previous answer (the kernel holds none of it unacknowledged).

        A client that reads sends its next request after the answer arrived, and that request carries the
        ACK: no wait. One that pipelines without reading waits here, in ``write`` and making no progress,
        so it costs one scrape per connection, not one per request it queued, and is the first evicted."""
        self.enter(WRITE, self.owner.limits.write_timeout)
        delay = 0.002
        while unacked(self) > 0:
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)

    async def send(self, payload: bytes) -> None:
        """Write ``payload``, a piece at a time, each once the kernel took the one before."""
        owner = self.owner
        self.enter(WRITE, owner.limits.write_timeout)
        while owner.buffered_total + len(payload) > owner.limits.max_buffered_bytes and owner.evict(writers_only=True):
            pass
        view = memoryview(payload)
        self.buffered = len(view)
        owner.buffered_total += len(view)
        for offset in range(0, len(view), CHUNK):
            if self.transport is None or self.closed:
                raise ConnectionResetError("closed")
            piece = view[offset:offset + CHUNK]
            try:
                self.transport.write(piece if self.tls is None else self.tls.encrypt(piece))
            except ssl.SSLError as exc:
                raise ConnectionResetError(f"TLS: {exc}") from exc
            while self.paused:
                await self.wait()
            taken = min(CHUNK, len(view) - offset)
            self.buffered -= taken
            owner.buffered_total -= taken
            self.progress()


def unacked(conn: Conn) -> int:
    """Bytes of answers not yet acknowledged by the client: in asyncio's buffer or the kernel's (SIOCOUTQ)."""
    if conn.transport is None or conn.closed:
        return 0
    try:
        queued = struct.unpack("i", fcntl.ioctl(conn.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0
    return int(queued) + conn.transport.get_write_buffer_size()
