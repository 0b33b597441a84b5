"""The listeners/ports/ephemeral figures computed from ``ss`` in a namespace, independently of the exporter.

Keys use the exporter's label values (family ``AF_INET``/``AF_INET6``, psutil's status names) so a
test compares dictionaries. The rules are restated here from the issue, not imported from exporter/:
inbound = the local port has a LISTEN socket in the namespace (any family), else outbound by the
remote port; queues sum Recv-Q/Send-Q of non-LISTEN sockets; ephemeral use counts non-LISTEN sockets
whose local port is in ``ip_local_port_range``, not in ``ip_local_reserved_ports`` and not a listening port.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tests.netns import Netns
from tests.reference import SS_TCP_STATUS

FAMILIES = (("-4", "AF_INET"), ("-6", "AF_INET6"))
_DROPS = re.compile(r"skmem:\(.*\bd(\d+)\)")


def split_endpoint(text: str) -> tuple[str, int]:
    """``127.0.0.1:80`` / ``[::1]:80`` / ``0.0.0.0:*`` -> (address, port; 0 for ``*``)."""
    addr, _, port = text.rpartition(":")
    return addr.strip("[]").split("%")[0], 0 if port == "*" else int(port)


@dataclass
class SsTcp:
    """One ``ss`` snapshot of a namespace's TCP sockets; equal snapshots mean nothing moved."""

    rows: list[tuple[str, str, int, int, str, int, str, int]] = field(default_factory=list)
    drops: dict[tuple[str, int], int] = field(default_factory=dict)  # (family, port) -> sum of dN

    @classmethod
    def take(cls, ns: Netns) -> SsTcp:
        snap = cls()
        for opt, family in FAMILIES:
            for line in ns.run(["ss", "-Htan", opt]).stdout.splitlines():
                state, rq, sq, local, peer = line.split()[:5]
                (laddr, lport), (raddr, rport) = split_endpoint(local), split_endpoint(peer)
                snap.rows.append((family, SS_TCP_STATUS[state], int(rq), int(sq), laddr, lport, raddr, rport))
            port = 0
            for line in ns.run(["ss", "-Htmln", opt]).stdout.splitlines():
                if "skmem:" in line:
                    m = _DROPS.search(line)
                    assert m, line
                    snap.drops[(family, port)] = snap.drops.get((family, port), 0) + int(m.group(1))
                elif line.strip():
                    port = split_endpoint(line.split()[3])[1]
        return snap

    def listeners(self) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """(accept queue length, limit) per (family, port): Recv-Q and Send-Q of LISTEN rows, summed."""
        length: Counter[tuple[str, int]] = Counter()
        limit: Counter[tuple[str, int]] = Counter()
        for family, status, rq, sq, _la, lport, _ra, _rp in self.rows:
            if status == "LISTEN":
                length[(family, lport)] += rq
                limit[(family, lport)] += sq
        return dict(length), dict(limit)

    def _key(self, lport: int, rport: int, listened: set[int]) -> tuple[str, str]:
        return ("inbound", str(lport)) if lport in listened else ("outbound", str(rport))

    def ports(self) -> tuple[Counter[tuple[str, str, str, str]], Counter[tuple[str, str, str]],
                             Counter[tuple[str, str, str]]]:
        """(connections by (direction, port, status, family), receive and send bytes by (direction, port, family))."""
        listened = {lport for _f, status, _q, _s, _a, lport, _r, _p in self.rows if status == "LISTEN"}
        conns: Counter[tuple[str, str, str, str]] = Counter()
        rx: Counter[tuple[str, str, str]] = Counter()
        tx: Counter[tuple[str, str, str]] = Counter()
        for family, status, rq, sq, _la, lport, _ra, rport in self.rows:
            direction, port = self._key(lport, rport, listened)
            conns[(direction, port, status, family)] += 1
            if status != "LISTEN":
                rx[(direction, port, family)] += rq
                tx[(direction, port, family)] += sq
        return conns, rx, tx

    def ephemeral(self, low: int, high: int, reserved: set[int]) -> Counter[tuple[str, str, str, str]]:
        """Local ports in use per (family, local address, remote address, remote port)."""
        use: Counter[tuple[str, str, str, str]] = Counter()
        listened = {lport for _f, status, _q, _s, _a, lport, _r, _p in self.rows if status == "LISTEN"}
        for family, status, _q, _s, laddr, lport, raddr, rport in self.rows:
            if status != "LISTEN" and low <= lport <= high and lport not in reserved | listened and rport:
                use[(family, laddr, raddr, str(rport))] += 1
        return use


def port_range(ns: Netns) -> tuple[int, int, set[int]]:
    """The namespace's ephemeral range and reserved ports, read with ``sysctl`` inside it."""
    low, high = map(int, ns.run(["sysctl", "-n", "net.ipv4.ip_local_port_range"]).stdout.split())
    reserved: set[int] = set()
    for item in ns.run(["sysctl", "-n", "net.ipv4.ip_local_reserved_ports"]).stdout.strip().split(","):
        if item:
            first, _, last = item.partition("-")
            reserved.update(range(int(first), int(last or first) + 1))
    return low, high, reserved
