"""A namespace's sockets as ``ss`` lists them, and their owners from /proc: the inputs of the series formulas.

Independent of the exporter's code: ``ss`` (sock_diag, iproute2) run inside the namespace gives every
TCP, UDP and UNIX socket with its state, queues, addresses and inode (``ss -e`` prints ``ino:N``; a
UNIX row's "port" is its inode; TIME_WAIT has none, as it has no file), and one walk of
``/proc/*/fd`` maps inodes to the lowest pid holding them, the owner rule README "Sources" states.
``ss`` runs from a thread inside the namespace (tests/_nsthread.py), one shell per namespace, no
``ip netns exec`` (mount namespace, remount) each, four namespaces at a time.

Rows, as ``ss -Htuane -4`` prints them (then ``-6``, then ``ss -Hxan``)::

    tcp LISTEN 0 128 0.0.0.0:8080 0.0.0.0:* ino:12040716 sk:1001 cgroup:/ <->
    tcp TIME-WAIT 0 0 127.0.0.1:8080 127.0.0.1:51042 timer:(timewait,59sec,0)
    udp ESTAB 0 0 127.0.0.1:47202 127.0.0.53:53 ino:12040712 sk:1004 cgroup:/ <->
    u_str ESTAB 0 0 * 12040714 * 12040715
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from tests._nsthread import in_netns
from tests.reference import SS_TCP_STATUS, SS_UNIX_TYPE, SsKey
from tests.ss_ports import SsTcp, split_endpoint

SCRIPT = ("ss -Htuane -4; echo @@; ss -Htuane -6; echo @@; ss -Hxan; echo @@; "
          "cat /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/ip_local_reserved_ports")
_INODE = re.compile(r"\bino:(\d+)")


@dataclass(frozen=True, order=True)
class Sock:
    family: str
    type: str
    status: str
    rq: int
    sq: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    inode: int  # 0: no file (TIME_WAIT, a request socket): never owned

    @property
    def key(self) -> SsKey:
        return (self.family, self.type, self.status)


@dataclass(frozen=True)
class Snapshot:
    """One namespace: its sockets and its ephemeral range (low, high, reserved ports)."""

    socks: tuple[Sock, ...]  # sorted: equal snapshots compare equal
    port_range: tuple[int, int, frozenset[int]]

    def tcp(self) -> SsTcp:
        """The TCP rows in tests/ss_ports.py's shape, for its listener, port and ephemeral rules."""
        return SsTcp(rows=[(s.family, s.status, s.rq, s.sq, s.laddr, s.lport, s.raddr, s.rport)
                           for s in self.socks if s.type == "SOCK_STREAM" and s.family != "AF_UNIX"])


def parse(text: str) -> Snapshot:
    """:data:`SCRIPT`'s output -> Snapshot (module docstring for the rows)."""
    v4, v6, unix, sysctl = text.split("@@\n")
    socks: list[Sock] = []
    for family, section in (("AF_INET", v4), ("AF_INET6", v6)):
        for line in section.splitlines():
            netid, state, rq, sq, local, peer = line.split()[:6]
            (laddr, lport), (raddr, rport) = split_endpoint(local), split_endpoint(peer)
            tcp = netid == "tcp"
            m = _INODE.search(line)
            socks.append(Sock(family, "SOCK_STREAM" if tcp else "SOCK_DGRAM", SS_TCP_STATUS[state] if tcp else "NONE",
                              int(rq), int(sq), laddr, lport, raddr, rport, int(m.group(1)) if m else 0))
    for line in unix.splitlines():
        netid, _state, rq, sq, laddr, inode = line.split()[:6]
        socks.append(Sock("AF_UNIX", SS_UNIX_TYPE[netid], "NONE", int(rq), int(sq), laddr, 0, "", 0, int(inode)))
    range_line, reserved_line = [*sysctl.splitlines(), ""][:2]
    low, high = map(int, range_line.split())
    ports: set[int] = set()
    for item in reserved_line.split(","):
        if item.strip():
            first, _, last = item.strip().partition("-")
            ports.update(range(int(first), int(last or first) + 1))
    return Snapshot(tuple(sorted(socks)), (low, high, frozenset(ports)))


def _run_inside(name: str) -> str:
    proc = in_netns(name, partial(subprocess.run, ["sh", "-c", SCRIPT], capture_output=True, text=True, timeout=60))
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: ss exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def snapshots(names: Iterable[str]) -> dict[str, Snapshot]:
    """{namespace name: Snapshot} for named namespaces (``/run/netns/NAME``), a few at a time."""
    names = list(names)
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(names, map(parse, pool.map(_run_inside, names)), strict=True))


def socket_owners() -> dict[int, int]:
    """{socket inode: lowest pid holding it} over every process's fds; processes that go are skipped."""
    owners: dict[int, int] = {}
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), pid)  # pids ascend: the first is the lowest
    return owners


def owned(snapshot: Snapshot, owners: dict[int, int]) -> list[tuple[SsKey, int | None]]:
    """(family, type, status) and owner pid (None: unowned) of each socket of ``snapshot``."""
    return [(s.key, owners.get(s.inode) if s.inode else None) for s in snapshot.socks]
