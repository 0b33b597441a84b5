"""The little HTTP/1.1 this exporter speaks: find and parse a request head, build a response.

Why not http.server: its handler reads from a blocking socket file, so a slow client holds the thread
that reads it. Here the transport (exporter/web/transport.py) collects bytes without blocking anyone,
:func:`head_end` says where a complete head ends, :func:`parse_head` parses it; responses are built as
one ``bytes``. Only what a scraper, a browser, curl and Prometheus send is accepted: no chunked request
bodies, no line folding; anything else is a 4xx/5xx that closes the connection. RFC 9112 strictness
that matters behind a proxy: lines end in CRLF only (a bare LF is a 400 at once, never read as a line
end, so ``X: a\\nGET /b`` can never become a second request), header values hold no CR, LF or NUL,
HTTP/1.1 needs ``Host``; absolute-form targets (``GET http://host:9731/metrics HTTP/1.1``) are served
by their path, as RFC 9112 3.2.2 requires of every server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus

from ..version import __version__

SERVER = f"socket_exporter/{__version__}"
MAX_HEADERS = 100
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_ABSOLUTE = re.compile(r"(?i:https?)://[\x21-\x2e\x30-\x3e\x40-\x7e]*(/[\x21-\x7e]*|\?[\x21-\x7e]*)?")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FORBIDDEN = re.compile(r"[\r\n\0]")
TEXT = "text/plain; charset=utf-8"


class BadRequest(Exception):
    """A request that cannot be served; the connection is answered with ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str  # origin-form: an absolute-form target is reduced to its path and query
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def content_length(self) -> int:
        if "transfer-encoding" in self.headers:
            raise BadRequest(501, "Transfer-Encoding is not supported; send Content-Length")
        value = self.headers.get("content-length", "0").strip()
        if not value.isdigit() or len(value) > 12:
            raise BadRequest(400, f"bad Content-Length {value[:20]!r}")
        return int(value)


def head_end(buf: bytes | bytearray, limit: int) -> int:
    """Index of the CRLFCRLF ending the head in ``buf``; -1 while incomplete. Raises BadRequest.

    Example: ``GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n`` -> 24; ``GET / HTTP/1.1\\nHost: x\\n\\n`` -> 400 at
    once (LF-only line ends), instead of waiting for a CRLFCRLF that will never come.
    """
    end = buf.find(b"\r\n\r\n", 0, limit)
    bare = _BARE_LF.search(buf, 0, end + 4 if end >= 0 else limit)
    if bare is not None:
        raise BadRequest(400, "bare LF in the request head; lines end in CRLF")
    if end < 0 and len(buf) >= limit:
        raise BadRequest(431, "request head too large")
    return end


def parse_head(head: bytes) -> Request:
    """Parse the request line and headers (without the final blank line). Raises BadRequest."""
    text = head.decode("latin-1")  # RFC 9110: header octets beyond ASCII are opaque
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, f"unsupported protocol {version[:16]!r}")
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is not None:
        rest = absolute.group(1) or "/"
        target = rest if rest.startswith("/") else "/" + rest
    elif not _TARGET.fullmatch(target):
        raise BadRequest(400, "request target must be an origin-form path or an absolute http URL")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses obs-fold continuation lines
            raise BadRequest(400, "malformed header field")
        if _FORBIDDEN.search(value):
            raise BadRequest(400, f"CR, LF or NUL in the value of {name[:40]!r}")
        name, value = name.lower(), value.strip(" \t")
        if name in headers:
            if name in ("authorization", "content-length", "host", "transfer-encoding"):
                raise BadRequest(400, f"duplicate {name} header")
            headers[name] += ", " + value
        else:
            headers[name] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise BadRequest(400, "HTTP/1.1 request without Host")
    return Request(method, target, version, headers)


def response(status: int, body: bytes = b"", content_type: str = TEXT, *, keep_alive: bool = True,
             head_only: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response as bytes (the body left out for HEAD, its length kept)."""
    reason = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}", f"Server: {SERVER}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "X-Content-Type-Options: nosniff"]
    lines += [f"{k}: {v}" for k, v in extra]
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def text_response(status: int, message: str, *, keep_alive: bool = True, head_only: bool = False,
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return response(status, (message.rstrip("\n") + "\n").encode(), keep_alive=keep_alive,
                    head_only=head_only, extra=extra)
