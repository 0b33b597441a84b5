"""Recipes that park TCP sockets in every state, over loopback, inside one process.

Each recipe returns the sockets to keep open (closing them would change the states) and a tally of
what it made, as ``{status: count}`` in psutil's names. The kernel behaviours relied on:

* A sender that fills the peer's receive buffer while the peer never reads sees a zero window; the
  data stays unsent (``SIOCOUTQNSD`` > 0) and zero-window probes keep the connection alive. A FIN
  queued by ``shutdown(SHUT_WR)`` after that data cannot be sent either, so the socket stays in the
  state it entered on shutdown (FIN_WAIT1 from ESTABLISHED, LAST_ACK from CLOSE_WAIT). Tiny
  ``SO_RCVBUF`` (the kernel clamps 1 to its minimum, ~2 KiB) closes the window after one segment.
* A FIN_WAIT1 socket that receives the peer's FIN before its own FIN is ACKed goes to CLOSING.
* A socket that only ``shutdown(SHUT_WR)``s (still has an fd) stays in FIN_WAIT2 forever: the
  ``tcp_fin_timeout`` applies to orphans only. Its peer, which never closes, stays in CLOSE_WAIT.
* The active closer of a fully closed connection lingers 60 s in TIME_WAIT (TCP_TIMEWAIT_LEN).
* ``listen(0)`` admits one connection to the accept queue; with it full, SYNs are dropped
  (``sk_acceptq_is_full``), so a further connect() stays in SYN_SENT, retrying per ``TCP_SYNCNT``.
* With ``TCP_DEFER_ACCEPT`` a listener drops the handshake's bare ACK and keeps the request socket
  in SYN_RECV (``inet_rsk(req)->acked``) until data arrives or the defer period ends.
* A bound, never-listening socket is in CLOSE and hashed only in the bind tables: sock_diag shows it
  when asked for TCP_BOUND_INACTIVE (kernel >= 6.10); /proc/net/tcp and ss 6.1 do not.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

LOOPBACK: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
#: Kernel state numbers (include/net/tcp_states.h) as TCP_INFO's first byte reports them.
ESTABLISHED, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING, FIN_WAIT1 = 1, 5, 8, 9, 11, 4
SIOCOUTQNSD = 0x894B  # bytes in the send queue not yet sent (linux/sockios.h)
MAX_TCP_SYNCNT = 127

Made = Counter[str]


def tcp_socket(family: int, small: bool = False) -> socket.socket:
    """A TCP socket; ``small`` = minimal receive buffer and 64 KiB send buffer (set before connect/listen,
    because the window scale is fixed at SYN time and accepted sockets inherit the listener's)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if small:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def listener(family: int, backlog: int, small: bool = False) -> socket.socket:
    sock = tcp_socket(family, small)
    sock.bind((LOOPBACK[family], 0))
    sock.listen(backlog)
    return sock


def tcp_state(sock: socket.socket) -> int:
    """The kernel's sk_state: first byte of struct tcp_info."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]


def accept_queue_len(lsock: socket.socket) -> int:
    """For a listener, tcp_info.tcpi_unacked (offset 24) is sk_ack_backlog: the accept queue length."""
    return int(struct.unpack_from("I", lsock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0])


def unsent(sock: socket.socket) -> int:
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0" * 4))[0])


def wait_for(what: str, cond: Callable[[], bool], deadline: float) -> None:
    """Poll ``cond()`` every 5 ms until true; raise naming ``what`` at ``deadline`` (monotonic)."""
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_state(sock: socket.socket, state: int, deadline: float) -> None:
    wait_for(f"TCP state {state} (now {tcp_state(sock)})", lambda: tcp_state(sock) == state, deadline)


def pair(lsock: socket.socket, small: bool = False) -> tuple[socket.socket, socket.socket]:
    """(client, accepted server) connected through ``lsock``; both ESTABLISHED."""
    client = tcp_socket(lsock.family, small)
    client.connect(lsock.getsockname()[:2])
    server, _ = lsock.accept()
    return client, server


def fill_peer_window(sock: socket.socket, deadline: float) -> None:
    """Send until the peer's window is zero: EAGAIN while data stays unsent 3 polls in a row."""
    sock.setblocking(False)
    chunk, quiet = b"x" * 65536, 0
    while quiet < 3:
        try:
            sock.send(chunk)
            quiet = 0
        except BlockingIOError:
            quiet = quiet + 1 if unsent(sock) > 0 else 0
            time.sleep(0.01)
        if time.monotonic() > deadline:
            raise TimeoutError("peer window never closed")


def drain_to_eof(sock: socket.socket, deadline: float) -> None:
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    while sock.recv(65536):
        pass


def build_tcp_states(family: int, timeout: float = 8.0) -> tuple[list[socket.socket], Made]:
    """Every psutil-visible TCP state once (plus a CLOSE one) for ``family``; see module docstring."""
    deadline = time.monotonic() + timeout
    keep: list[socket.socket] = []
    made: Made = Counter()

    # SYN_SENT: a listen(0) socket with one queued connection drops further SYNs.
    full = listener(family, 0)
    filler = tcp_socket(family)
    filler.connect(full.getsockname()[:2])
    wait_for("full accept queue", lambda: accept_queue_len(full) >= 1, deadline)
    syn_sent = tcp_socket(family)
    syn_sent.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, MAX_TCP_SYNCNT)  # retry for hours
    syn_sent.setblocking(False)
    syn_sent.connect_ex(full.getsockname()[:2])
    keep += [full, filler, syn_sent]
    # The queued child is ESTABLISHED too, with no fd (inode 0: psutil's pid is None).
    made.update({"LISTEN": 1, "ESTABLISHED": 2, "SYN_SENT": 1})

    # SYN_RECV: defer-accept listener, client completes the handshake but never sends data.
    defer = listener(family, 16)
    defer.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 3600)
    silent = tcp_socket(family)
    silent.connect(defer.getsockname()[:2])
    keep += [defer, silent]
    made.update({"LISTEN": 1, "ESTABLISHED": 1, "SYN_RECV": 1})

    lsock = listener(family, 16, small=True)
    keep.append(lsock)
    made["LISTEN"] += 1

    # FIN_WAIT2 / CLOSE_WAIT: half-close by the client, the server never closes.
    c, s = pair(lsock, small=True)
    c.shutdown(socket.SHUT_WR)
    wait_state(c, FIN_WAIT2, deadline)
    wait_state(s, CLOSE_WAIT, deadline)
    keep += [c, s]
    made.update({"FIN_WAIT2": 1, "CLOSE_WAIT": 1})

    # FIN_WAIT1: FIN queued behind data the never-reading peer has no window for.
    c, s = pair(lsock, small=True)
    fill_peer_window(c, deadline)
    c.shutdown(socket.SHUT_WR)
    keep += [c, s]
    made.update({"FIN_WAIT1": 1, "ESTABLISHED": 1})

    # LAST_ACK: the mirror on a CLOSE_WAIT socket; its peer waits in FIN_WAIT2.
    c, s = pair(lsock, small=True)
    c.shutdown(socket.SHUT_WR)
    wait_state(s, CLOSE_WAIT, deadline)
    fill_peer_window(s, deadline)
    s.shutdown(socket.SHUT_WR)
    keep += [c, s]
    made.update({"LAST_ACK": 1, "FIN_WAIT2": 1})

    # CLOSING: both fill each other's window and shut down (both FIN_WAIT1); ``a`` then drains and
    # gets b's FIN while its own is stuck -> CLOSING; b's FIN is ACKed -> FIN_WAIT2.
    a, b = pair(lsock, small=True)
    fill_peer_window(a, deadline)
    fill_peer_window(b, deadline)
    a.shutdown(socket.SHUT_WR)
    b.shutdown(socket.SHUT_WR)
    drain_to_eof(a, deadline)
    wait_state(a, CLOSING, deadline)
    wait_state(b, FIN_WAIT2, deadline)
    keep += [a, b]
    made.update({"CLOSING": 1, "FIN_WAIT2": 1})

    # TIME_WAIT: client closes first; once the server sees EOF and closes, the client's timewait
    # socket remains (no fd: psutil's pid is None).
    c, s = pair(lsock)
    c.close()
    drain_to_eof(s, deadline)
    s.close()
    made["TIME_WAIT"] += 1

    # CLOSE: bound, not listening.
    bound = tcp_socket(family)
    bound.bind((LOOPBACK[family], 0))
    keep.append(bound)
    made["CLOSE"] += 1
    return keep, made
