"""RFC 9112/9110 odd input and half-closing clients, against the real server in an MTU-1500 namespace.

Each case failed before the asyncio transport: a request without Host was served; a bare CR or NUL in a
header value was kept, and a bare LF split one request into two (a desync behind a proxy that reads it
as one); an absolute-form target was refused; LF-only line endings hung until the 10 s request timeout;
a client that half-closed after its request (``nc -N``, socat) got nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._hostile import PORT, mtu_1500, raw, server
from tests._require import require_netns
from tests.netns import Netns

GET = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"


@pytest.fixture(scope="module")
def ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netns]:
    require_netns()
    log = Path(tmp_path_factory.mktemp("rfc")) / "server.log"
    with Netns() as ns:
        mtu_1500(ns)
        with server(ns, log, {}):
            yield ns
    assert "Traceback" not in log.read_text()


def responses(answer: bytes) -> list[bytes]:
    """The status lines in ``answer``."""
    return re.findall(rb"HTTP/1\.1 [1-5][0-9][0-9] [A-Za-z ]+(?=\r\n)", answer)


@pytest.mark.parametrize(("request_bytes", "why"), [
    (b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 without Host"),
    (GET + b"X-A: a\rb\r\n\r\n", "bare CR in a header value"),
    (GET + b"X-A: a\0b\r\n\r\n", "NUL in a header value"),
    # A proxy that takes a bare LF as a line end (RFC 9112 2.2 allows it) sees two requests here, and the old
    # server one: their answers then go to the wrong requests. Refused, the connection closed.
    (GET + b"X-A: a\n\nGET /-/healthy HTTP/1.0\r\nX-B: b\r\n\r\n", "bare LF: a desync"),
    (GET + b"X-A: a\nb\r\n\r\n" + GET + b"\r\n", "bare LF in a header value"),
    (b"GET /metrics HTTP/1.1\r\nHost: exporter\nX-A: b\r\n\r\n", "bare LF after Host"),
])
def test_malformed_heads_get_one_400_and_a_close(ns: Netns, request_bytes: bytes, why: str) -> None:
    answer, seconds = raw(ns, request_bytes)
    assert responses(answer) == [b"HTTP/1.1 400 Bad Request"], (why, answer[:300])
    assert b"Connection: close" in answer and seconds < 2, why


def test_lf_only_line_endings_get_400_at_once(ns: Netns) -> None:
    answer, seconds = raw(ns, b"GET /metrics HTTP/1.1\nHost: exporter\n\n")
    assert responses(answer) == [b"HTTP/1.1 400 Bad Request"] and seconds < 1, (answer[:200], seconds)


def test_http_1_0_needs_no_host_and_absolute_form_is_served(ns: Netns) -> None:
    answer, _ = raw(ns, b"GET /-/healthy HTTP/1.0\r\n\r\n")
    assert responses(answer) == [b"HTTP/1.1 200 OK"] and answer.endswith(b"\r\n\r\nOK\n")
    absolute = f"GET http://127.0.0.1:{PORT}/metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nConnection: close\r\n"
    answer, _ = raw(ns, absolute.encode() + b"\r\n")
    assert responses(answer) == [b"HTTP/1.1 200 OK"] and b"\nsocket_connections{" in answer


def test_a_half_closed_client_still_gets_its_answer(ns: Netns) -> None:
    """What ``nc -N`` and ``socat`` do: send the request, shut down the write side, read the answer."""
    answer, _ = raw(ns, GET + b"\r\n", half_close=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"Content-Length")))
    assert head.startswith(b"HTTP/1.1 200 OK") and len(body) == length > 1000 and b"socket_connections{" in body
    # Pipelined requests before the half-close are all answered, then the connection closes.
    answer, _ = raw(ns, GET + b"\r\n" + b"GET /-/healthy HTTP/1.1\r\nHost: exporter\r\n\r\n", half_close=True)
    assert responses(answer) == [b"HTTP/1.1 200 OK"] * 2 and answer.endswith(b"\r\n\r\nOK\n")
