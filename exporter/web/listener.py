"""The listening socket and the descriptor limit it needs: the two things the server sets up before its loop."""

from __future__ import annotations

import contextlib
import resource
import socket

LISTEN_BACKLOG = 1024


def raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want`` (as Go does at start); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return want if soft == resource.RLIM_INFINITY else int(soft)


def listen(address: tuple[str, int]) -> socket.socket:
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
