"""Reference socket counts taken INSIDE a namespace, independently of the exporter's code.

Keys use psutil's labels: family ``AF_INET``/``AF_INET6``/``AF_UNIX``, type ``SOCK_STREAM``/
``SOCK_DGRAM``/``SOCK_SEQPACKET``, status ``ESTABLISHED`` ... ``CLOSE`` for TCP and ``NONE`` otherwise.

* :func:`ss_counts` parses ``ss`` (sock_diag netlink): one row per socket, owners not needed.
* :func:`psutil_counts` runs ``psutil.net_connections`` (``/proc/net/*`` + an inode->pid scan).
* :func:`netlink_tcp_counts` asks sock_diag for every state bit, so it also returns bound-only
  (CLOSE) sockets, which kernel >= 6.10 reports as TCP_BOUND_INACTIVE and neither ss 6.1 nor psutil shows.

Known differences between ss and psutil (see tests/test_population.py):
* psutil builds its result as a ``set`` of (fd, family, type, laddr, raddr, status, pid): rows that are
  identical collapse, e.g. fd-less UNIX sockets of one type and path (fd -1, pid None): sockets in
  flight in an SCM_RIGHTS message (ss lists each), or not yet accept()ed stream/seqpacket connections.
* Those unaccepted UNIX "embryos" have no inode: /proc/net/unix (psutil) lists them, unix_diag
  skips them (``sk_diag_dump`` returns early for inode 0), so ss never shows them.
* psutil's inode->pid map is ``dict.update``d process by process (ascending pid), so a socket shared by
  several processes is attributed to the HIGHEST pid only and listed once, UNIX included; a UNIX
  socket with several fds in that one process is listed once per fd (ss lists every socket once).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable

from tests.netns import Netns

SsKey = tuple[str, str, str]
PsKey = tuple[str, str, str, int | None]
PSUTIL_KINDS = ("inet", "inet4", "inet6", "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix", "all")

#: ss 6.1's TCP state names (sstate_name) -> psutil's. UNCONN is TCP_CLOSE; BOUND-INACTIVE is newer ss.
SS_TCP_STATUS = {
    "ESTAB": "ESTABLISHED",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "TIME-WAIT": "TIME_WAIT",
    "UNCONN": "CLOSE",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
    "BOUND-INACTIVE": "CLOSE",
}
SS_UNIX_TYPE = {"u_str": "SOCK_STREAM", "u_dgr": "SOCK_DGRAM", "u_seq": "SOCK_SEQPACKET"}
#: Kernel TCP state numbers (include/net/tcp_states.h) -> psutil's status.
KERNEL_TCP_STATUS = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN_RECV",
    13: "CLOSE",
}


def _ss_rows(ns: Netns, *args: str) -> list[list[str]]:
    """``ss -H`` (no header) rows split on whitespace; ``-n`` so nothing is resolved."""
    return [line.split() for line in ns.run(["ss", "-Hn", *args]).stdout.splitlines() if line.strip()]


def ss_counts(ns: Netns) -> Counter[SsKey]:
    """Counts from ``ss -ta``/``-ua`` per family (``-4``/``-6`` select the socket's family, so
    ``[::ffff:a.b.c.d]`` and ``*`` forms need no parsing) and ``ss -xa`` (type from the Netid column)."""
    counts: Counter[SsKey] = Counter()
    for opt, family in (("-4", "AF_INET"), ("-6", "AF_INET6")):
        for row in _ss_rows(ns, "-ta", opt):
            try:
                counts[family, "SOCK_STREAM", SS_TCP_STATUS[row[0]]] += 1
            except KeyError:
                raise ValueError(f"unknown ss TCP state in {row}") from None
        for _ in _ss_rows(ns, "-ua", opt):
            counts[family, "SOCK_DGRAM", "NONE"] += 1
    for row in _ss_rows(ns, "-xa"):
        counts["AF_UNIX", SS_UNIX_TYPE[row[0]], "NONE"] += 1
    return counts


_PSUTIL_SCRIPT = """
import collections, json, sys, psutil
out = {}
for kind in sys.argv[1:]:
    c = collections.Counter((x.family.name, x.type.name, x.status, x.pid)
                            for x in psutil.net_connections(kind))
    out[kind] = [[*k, n] for k, n in c.items()]
print(json.dumps(out))
"""


def psutil_kind_counts(ns: Netns, kinds: Iterable[str] = PSUTIL_KINDS) -> dict[str, Counter[PsKey]]:
    """``{kind: Counter[(family, type, status, pid)]}`` for each psutil kind, in ONE python run."""
    raw = json.loads(ns.run([sys.executable, "-c", _PSUTIL_SCRIPT, *kinds]).stdout)
    return {kind: Counter({(f, t, s, p): n for f, t, s, p, n in rows}) for kind, rows in raw.items()}


def psutil_counts(ns: Netns, kind: str = "all") -> Counter[PsKey]:
    """``Counter[(family, type, status, pid_or_None)]`` of ``psutil.net_connections(kind)`` in ``ns``."""
    return psutil_kind_counts(ns, [kind])[kind]


def without_pid(counts: Counter[PsKey]) -> Counter[SsKey]:
    """Sum psutil counts over pid, to compare with :func:`ss_counts`."""
    out: Counter[SsKey] = Counter()
    for (family, typ, status, _pid), n in counts.items():
        out[family, typ, status] += n
    return out


_NETLINK_SCRIPT = """
import json, socket, struct
out = []
for fam in (socket.AF_INET, socket.AF_INET6):
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
    # inet_diag_req_v2: family, protocol, ext, pad, states (all bits), zeroed inet_diag_sockid
    req = struct.pack("=BBBBI", fam, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + bytes(48)
    nl.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req)  # BY_FAMILY, REQUEST|DUMP
    done = False
    while not done:
        data, off = nl.recv(1 << 20), 0
        while off < len(data):
            length, typ = struct.unpack_from("=IH", data, off)
            if typ == 3:  # NLMSG_DONE
                done = True
                break
            if typ == 2:  # NLMSG_ERROR
                raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "sock_diag dump")
            out.append([fam, data[off + 17]])  # inet_diag_msg.idiag_state
            off += (length + 3) & ~3
print(json.dumps(out))
"""


def netlink_tcp_counts(ns: Netns) -> Counter[SsKey]:
    """TCP counts from a raw sock_diag dump with every state bit set (bound-only CLOSE included)."""
    counts: Counter[SsKey] = Counter()
    for fam, state in json.loads(ns.run([sys.executable, "-c", _NETLINK_SCRIPT]).stdout):
        counts["AF_INET" if fam == 2 else "AF_INET6", "SOCK_STREAM", KERNEL_TCP_STATUS[state]] += 1
    return counts
