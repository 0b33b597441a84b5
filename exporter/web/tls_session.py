"""Server-side TLS over memory BIOs, with no per-connection buffer until the client has sent a whole ClientHello.

Why not asyncio's ``ssl=``: its ``SSLProtocol`` reserves a 256 KiB read buffer for every connection the
moment it is accepted, before a byte arrives, so 2,000 clients that connect and say nothing cost half a
gigabyte; glibc keeps most of it after they leave. Here a connection costs what it sent:

* until the first TLS record is complete, its bytes are kept as they came (a silent client: none; a
  ClientHello stalled half-way: the half it sent; at most one record, 5 + 16,384 bytes);
* then the ``SSLObject`` is made and fed the record; OpenSSL's own buffers exist only while a record is
  half read or written (CPython sets ``SSL_MODE_RELEASE_BUFFERS``), so a handshake that stalls after the
  ServerHello holds the handshake state and no buffers;
* decrypted request bytes go to the connection's own buffer, bounded by the request limits.

The first record, worked: a ClientHello starts ``16 03 01 02 00 01 ...``: content type 0x16 (handshake),
legacy version 3.1, length 0x0200 (512 bytes of body follow, 517 in all), handshake type 1 (ClientHello).
A plain-HTTP request to the TLS port starts ``47 45 54 20`` ("GET "): not 0x16, refused at once.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable

RECORD_HEADER = 5
MAX_RECORD = 16384 + 2048  # TLSCiphertext may exceed 2^14 by up to 2048 bytes (RFC 8446 5.2)
HANDSHAKE_RECORD = 0x16
READ_PIECE = 64 * 1024


class NotTls(ssl.SSLError):
    """The client's first bytes are no TLS handshake record (plain HTTP to the TLS port, say)."""


class TlsSession:
    """One connection's TLS state: ``receive`` ciphertext, ``encrypt`` answers, ``outgoing`` to send."""

    def __init__(self, context: ssl.SSLContext, before_start: Callable[[], None]) -> None:
        self._context, self._before_start = context, before_start
        self._first = bytearray()
        self._obj: ssl.SSLObject | None = None
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()  # empty BIOs hold no buffer
        self.done = False  # handshake complete

    def receive(self, data: bytes | memoryview) -> tuple[bytes, bool]:
        """Feed ciphertext: (decrypted bytes, whether the client sent close_notify).

        Raises ssl.SSLError for a failed handshake or record, ConnectionResetError when ``before_start``
        refused to begin the handshake."""
        if self._obj is None:
            first = self._first
            first += data
            if first[0] != HANDSHAKE_RECORD:
                raise NotTls(f"first byte {first[0]:#04x} is no TLS handshake record")
            if len(first) < RECORD_HEADER:
                return b"", False
            need = RECORD_HEADER + int.from_bytes(first[3:5], "big")
            if need > RECORD_HEADER + MAX_RECORD:
                raise NotTls(f"first record of {need} bytes")
            if len(first) < need:
                return b"", False
            self._before_start()  # may refuse (ConnectionResetError): the client left, or make room
            self._obj = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
            data, self._first = bytes(first), bytearray()
        obj = self._obj
        self._incoming.write(data)
        if not self.done:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                return b"", False
            self.done = True
        plain = bytearray()
        while True:
            try:
                piece = obj.read(READ_PIECE)
            except ssl.SSLWantReadError:
                return bytes(plain), False
            except ssl.SSLZeroReturnError:
                return bytes(plain), True
            if not piece:
                return bytes(plain), True
            plain += piece

    def outgoing(self) -> bytes:
        """Ciphertext waiting to go to the client (handshake messages, alerts, records)."""
        return self._outgoing.read() if self._obj is not None else b""

    def encrypt(self, data: bytes | memoryview) -> bytes:
        assert self._obj is not None and self.done
        self._obj.write(data)
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        """The close_notify alert, once the handshake is done (nothing to say before)."""
        if self._obj is None or not self.done:
            return b""
        with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: the peer's close_notify is not awaited
            self._obj.unwrap()
        return self._outgoing.read()

    @property
    def started(self) -> bool:
        """The SSLObject exists: the handshake is under way or done."""
        return self._obj is not None
