"""HTTP parsing and what the server does with bytes that are not a sane request.

``parse_head`` may only ever raise ``BadRequest`` (hypothesis, over bytes and over HTTP-shaped
tokens); a malformed request gets its 4xx/5xx and a closed connection; random bytes on many
connections leave a server that still answers and logged no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.web.protocol import BadRequest, parse_head
from tests._http import Client, new_server, serving


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400),
    (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n", 413),
])
def test_malformed_requests_are_refused_and_closed(request_bytes: bytes, status: int) -> None:
    with serving(new_server()) as server:
        answer = raw(server.server_address[1], request_bytes)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"Connection: close" in answer


HEADISH = st.lists(st.sampled_from([b"GET", b"POST", b" ", b"/metrics", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b":",
                                    b"Content-Length", b"Transfer-Encoding", b"Connection", b"close", b"\t",
                                    b"-1", b"99999999999999", b"\x00", b"\xff", b"?a=b"]), max_size=30).map(b"".join)


@given(st.one_of(st.binary(max_size=300), HEADISH))
def test_parse_head_never_raises_anything_but_bad_request(head: bytes) -> None:
    try:
        req = parse_head(head)
        req.content_length  # noqa: B018 - validated lazily, may raise BadRequest too
    except BadRequest as exc:
        assert 400 <= exc.status < 600


def test_garbage_cannot_break_the_server(caplog: pytest.LogCaptureFixture) -> None:
    """Random bytes on many connections; afterwards the server still answers and logged no traceback."""
    caplog.set_level(logging.DEBUG)
    with serving(new_server()) as server:

        @settings(max_examples=60, deadline=None, database=None)
        @given(st.one_of(st.binary(max_size=2000), HEADISH.map(lambda h: h + b"\r\n\r\n")))
        def send(data: bytes) -> None:
            with socket.create_connection(server.server_address, timeout=5) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                with contextlib.suppress(ConnectionResetError):
                    while s.recv(65536):
                        pass

        send()
        assert Client(server.server_address[1]).get()[0] == 200
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_keep_alive_and_pipelining() -> None:
    with serving(new_server()) as server:
        answer = raw(server.server_address[1], b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" * 3
                     + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 4
