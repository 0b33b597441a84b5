"""Will the local OpenSSL negotiate this TLS version with this certificate? Asked by doing it.

Why a handshake and not ``ssl.HAS_TLSv1``: whether TLS 1.0 or 1.1 can be negotiated is decided at
run time, by OpenSSL's security level and the cipher list as much as by how it was built. On
OpenSSL 3 with Python's default ciphers (no SHA-1 MACs, security level 2), a server context with
``minimum_version = TLSv1`` is accepted without complaint and then never completes a TLS 1.0
handshake: a web config saying ``min_version: TLS10`` would promise old clients something the
exporter cannot do. So the version is tried for real: a server context built exactly like the
exporter's (same certificate and key, same builder) pinned to that one version, against a client
pinned to it too, with every cipher allowed on the client side (``@SECLEVEL=0``) so that only the
server's side decides, over memory buffers: no socket, no thread, a few milliseconds.

Example: ``negotiates(lambda v: build(cert, key, v, v), ssl.TLSVersion.TLSv1)`` is False on
Debian 12's OpenSSL 3.0 and True for ``TLSv1_2``.
"""

from __future__ import annotations

import contextlib
import ssl
import warnings
from collections.abc import Callable

ROUNDS = 8  # a TLS 1.2 handshake needs 2 round trips, 1.3 needs 1; more means it is stuck


def _client(version: ssl.TLSVersion) -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # the probe asks about versions, not about trust
    with warnings.catch_warnings():  # TLSv1 and TLSv1_1 are deprecated: that is what we ask about
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = client.maximum_version = version
    with contextlib.suppress(ssl.SSLError):  # a build without that syntax keeps its defaults
        client.set_ciphers("ALL:@SECLEVEL=0")
    return client


def negotiates(server_context: Callable[[ssl.TLSVersion], ssl.SSLContext], version: ssl.TLSVersion) -> bool:
    """True if a server context ``server_context(version)`` (pinned to ``version``) completes a handshake."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server_ctx = server_context(version)
        client_ctx = _client(version)
    except (ssl.SSLError, ValueError):
        return False
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(ROUNDS):
        for name, side, out, peer in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLError, OSError):
                    return False
            if data := out.read():
                peer.write(data)
        if all(done.values()):
            return server.version() == client.version() and server.version() is not None
    return False
