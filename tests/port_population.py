"""Sockets for the listeners/ports tests, made inside a test namespace: ``python -m tests.port_population``.

What it holds (ports fixed: the namespace is fresh), printed as one JSON line once everything is in
place, then it waits for commands on stdin (``reopen``; EOF ends it):

* BACKLOG (127.0.0.1, backlog 3, never accept()ed) with 10 connecting clients: queue 4 of 3, the
  other SYNs dropped and retransmitted, so the listener's drop counter grows;
* V4_SERVICE (127.0.0.1): 6 clients, 2 of which sent 1000 bytes the server never reads (Recv-Q);
* V6_SERVICE ([::1]): 3 clients; the server sends 4 MiB to one that never reads (Send-Q and Recv-Q);
* LEAKY (127.0.0.1): 4 clients, the server closed 2 of its ends: 2 clients in CLOSE_WAIT;
* DEST (127.0.0.1): 40 clients from 127.0.0.1, 15 closed first (TIME_WAIT), and 5 from 127.0.0.2:
  many ephemeral ports towards one destination.

``reopen`` closes BACKLOG and its clients, listens again on the same port with backlog 3 and 10 new
clients (the kernel's drop counter starts again at 0), and prints ``reopened``.
"""

from __future__ import annotations

import json
import socket
import sys
import time

BACKLOG, V4_SERVICE, V6_SERVICE, LEAKY, DEST = 5000, 5001, 5002, 5003, 5004
keep: list[socket.socket] = []


def listener(port: int, backlog: int = 64, family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    s.listen(backlog)
    return s


def connect(port: int, family: int = socket.AF_INET, source: str | None = None) -> socket.socket:
    c = socket.socket(family, socket.SOCK_STREAM)
    if source:
        c.bind((source, 0))
    c.connect(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    return c


def pairs(lst: socket.socket, n: int, family: int = socket.AF_INET,
          source: str | None = None) -> list[tuple[socket.socket, socket.socket]]:
    out = []
    for _ in range(n):
        c = connect(lst.getsockname()[1], family, source)
        s, _ = lst.accept()
        out.append((c, s))
    return out


def flood(port: int) -> list[socket.socket]:
    """10 non-blocking connects to a listener with backlog 3 that never accepts."""
    out = []
    for _ in range(10):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        out.append(c)
    return out


def main() -> None:
    backlog = listener(BACKLOG, 3)
    flooding = flood(BACKLOG)

    v4 = listener(V4_SERVICE)
    v4_pairs = pairs(v4, 6)
    for c, _ in v4_pairs[:2]:
        c.sendall(b"x" * 1000)

    v6 = listener(V6_SERVICE, family=socket.AF_INET6)
    v6_pairs = pairs(v6, 3, socket.AF_INET6)
    srv = v6_pairs[0][1]
    srv.setblocking(False)
    try:
        for _ in range(4096):
            srv.send(b"y" * 1024)
    except BlockingIOError:
        pass  # the peer's receive buffer and our send buffer are full: both queues hold bytes

    leaky = listener(LEAKY)
    leaky_pairs = pairs(leaky, 4)
    for _, s in leaky_pairs[:2]:
        s.close()  # the client end gets FIN: CLOSE_WAIT until the client closes, which it never does

    dest = listener(DEST, 128)
    dest_pairs = pairs(dest, 40) + pairs(dest, 5, source="127.0.0.2")
    for c, s in dest_pairs[:15]:
        c.close()  # active close: the client end goes to TIME_WAIT once the server closes too
        s.close()
    keep.extend([v4, v6, leaky, dest, *(x for p in v4_pairs + v6_pairs + leaky_pairs[2:] for x in p)])
    keep.extend(c for c, _ in leaky_pairs[:2])
    keep.extend(x for p in dest_pairs[15:] for x in p)
    time.sleep(0.2)
    print(json.dumps({"backlog": BACKLOG, "v4": V4_SERVICE, "v6": V6_SERVICE, "leaky": LEAKY, "dest": DEST}),
          flush=True)
    for line in sys.stdin:
        if line.strip() == "reopen":
            for c in flooding:
                c.close()
            backlog.close()
            backlog = listener(BACKLOG, 3)
            flooding = flood(BACKLOG)
            print("reopened", flush=True)


if __name__ == "__main__":
    main()
