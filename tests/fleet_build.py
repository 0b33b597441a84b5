"""The sockets and processes of tests/fleet_host.py's node, built from a thread inside each namespace.

Each builder runs on a thread that entered the namespace (tests/_nsthread.py ``in_netns``), so every
socket it makes, and every process it forks, is the namespace's. A connection's two ends go to two
processes: the builder makes both, hands each to its owner as a ``pass_fds`` of ``sleep infinity``
(started under another name through a symlink: the kernel takes ``comm`` from it, so ``ss -p`` and the
exporter see ``app``, ``svc-443``, ``dbus-daemon``...), then closes its own copies: every socket ends
up with exactly one owner. What each namespace holds is listed in tests/fleet_host.py.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests._nsthread import take_fd

POD_PORT, POD_METRICS_PORT = 8080, 9090
WELL_KNOWN = (22, 80, 443, 2379, 2380, 6443, 9100, 10250, 10256, 10257)
SLEEP = "/usr/bin/sleep"
BUS, JOURNAL, RESOLVER = "\0sockexp-bus", "\0sockexp-journal", ("127.0.0.53", 53)


def busy_port_numbers(n: int) -> list[int]:
    """The node's listening ports: the well-known ones first, then NodePorts from 30000."""
    return [*WELL_KNOWN, *range(30000, 30000 + n)][:n]


@dataclass
class Holder:
    """One socket-owning process: ``listeners`` maps a port to the fd number it holds the listener as."""

    comm: str
    proc: subprocess.Popen[bytes]
    listeners: dict[int, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid


def time_wait(server: Holder, port: int, n: int) -> None:
    """``n`` connections to ``server``'s listener on ``port``, accepted here and closed server first."""
    listener = socket.socket(fileno=take_fd(server.pid, server.listeners[port]))
    try:
        for _ in range(n):
            client = socket.create_connection((_loopback(listener.family), port))
            accepted, _ = listener.accept()
            accepted.close()  # the server closes first: its end ends in TIME_WAIT
            client.close()
    finally:
        listener.close()  # our copy only: the server keeps listening


def _loopback(family: int) -> str:
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def _listen(port: int, v6: bool = False, backlog: int = 128) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if v6 else "0.0.0.0", port))
    s.listen(backlog)
    return s


def _connect(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(client end, accepted end) of a new connection to ``listener``."""
    client = socket.create_connection((_loopback(listener.family), listener.getsockname()[1]))
    accepted, _ = listener.accept()
    return client, accepted


def _unix(kind: int, address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.connect(address)
    return s


class Spawner:
    """Starts holders from the calling thread (so in its namespace) and closes this process's copies."""

    def __init__(self, bindir: Path, holders: list[Holder]) -> None:
        self.bindir, self.holders = bindir, holders
        self.made: list[socket.socket] = []

    def keep(self, *socks: socket.socket) -> tuple[socket.socket, ...]:
        self.made.extend(socks)
        return socks

    def spawn(self, comm: str, socks: list[socket.socket], listeners: dict[int, socket.socket] | None = None) -> Holder:
        if not socks:
            raise ValueError(f"{comm} would own no socket")
        exe = self.bindir / comm
        if not exe.exists():
            exe.symlink_to(SLEEP)
        proc = subprocess.Popen([str(exe), "infinity"], pass_fds=[s.fileno() for s in socks],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        holder = Holder(comm, proc, {port: s.fileno() for port, s in (listeners or {}).items()})
        self.holders.append(holder)
        return holder

    def close(self) -> None:
        for s in self.made:
            s.close()
        self.made.clear()


def build_pod(i: int, spawner: Spawner) -> tuple[Holder, Holder]:
    """Pod ``i``'s sockets (tests/fleet_host.py), run inside its namespace: (app, envoy), app started first."""
    app: list[socket.socket] = []
    envoy: list[socket.socket] = []
    try:
        web = _listen(POD_PORT)
        spawner.keep(web)
        app.append(web)
        listeners = {POD_PORT: web}
        for _ in range(2 + i % 3):
            client, accepted = spawner.keep(*_connect(web))
            envoy.append(client)
            app.append(accepted)
        if i % 4 == 0:  # app closed its side, envoy never did: CLOSE_WAIT / FIN_WAIT2
            client, accepted = spawner.keep(*_connect(web))
            accepted.shutdown(socket.SHUT_WR)
            envoy.append(client)
            app.append(accepted)
        if i % 3 == 0:
            metrics = spawner.keep(_listen(POD_METRICS_PORT, v6=True))[0]
            client, accepted = spawner.keep(*_connect(metrics))
            listeners[POD_METRICS_PORT] = metrics
            app += [metrics, accepted]
            envoy.append(client)
        dns = _udp_client(spawner)
        a, b = spawner.keep(*socket.socketpair())
        app += [dns, a]
        envoy.append(b)
        return spawner.spawn("app", app, listeners), spawner.spawn("envoy", envoy)
    finally:
        spawner.close()


def build_node(node_processes: int, ports: list[int], spawner: Spawner) -> dict[int, Holder]:
    """The node's servers, clients and daemons (tests/fleet_host.py), run inside its namespace: {port: server}."""
    daemons = max(3, (node_processes - len(ports)) // 3)
    clients = node_processes - len(ports) - daemons
    servers: dict[int, Holder] = {}
    client_socks: list[list[socket.socket]] = [[] for _ in range(clients)]
    try:
        ends: list[socket.socket] = []
        for j, port in enumerate(ports):
            lst = spawner.keep(_listen(port, v6=j % 5 == 4))[0]
            accepted: list[socket.socket] = [lst]
            for _ in range(3 + j % 6):
                client, server_end = spawner.keep(*_connect(lst))
                ends.append(client)
                accepted.append(server_end)
            for leak, closer in ((j % 7 == 0, 0), (j % 9 == 0, 1)):
                if leak:  # closer 0: the client half-closes (server CLOSE_WAIT); 1: the server does
                    pair = spawner.keep(*_connect(lst))
                    pair[closer].shutdown(socket.SHUT_WR)
                    ends.append(pair[0])
                    accepted.append(pair[1])
            servers[port] = spawner.spawn(f"svc-{port}", accepted, {port: lst})
        if len(ends) < clients:
            raise ValueError(f"{len(ends)} client connections cannot give each of {clients} clients one")
        for k, end in enumerate(ends):
            client_socks[k % clients].append(end)

        bus = spawner.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))[0]
        bus.bind(BUS)
        bus.listen(512)
        journal = spawner.keep(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))[0]
        journal.bind(JOURNAL)
        resolver = spawner.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))[0]
        resolver.bind(RESOLVER)
        bus_ends: list[socket.socket] = [bus]
        daemon_socks: list[list[socket.socket]] = [[], [journal], [resolver]] + [[] for _ in range(daemons - 3)]
        for d in range(1, daemons):
            end = spawner.keep(_unix(socket.SOCK_STREAM, BUS))[0]
            bus_ends.append(spawner.keep(bus.accept()[0])[0])
            daemon_socks[d].append(end)
            if d % 2 == 0:
                daemon_socks[d].append(spawner.keep(_unix(socket.SOCK_DGRAM, JOURNAL))[0])
            if d % 3 == 0:
                daemon_socks[d].append(_udp_client(spawner))
            if d % 10 == 0:
                daemon_socks[d] += spawner.keep(*socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET))
        daemon_socks[0] = bus_ends
        for c, socks in enumerate(client_socks):
            if c % 4 == 0:
                socks.append(spawner.keep(_unix(socket.SOCK_DGRAM, JOURNAL))[0])
            if c % 5 == 0:
                socks.append(_udp_client(spawner))
        names = ["dbus-daemon", "systemd-journal", "systemd-resolve", *(f"daemon-{d}" for d in range(3, daemons))]
        for name, socks in zip(names, daemon_socks, strict=True):
            spawner.spawn(name, socks)
        for c, socks in enumerate(client_socks):
            spawner.spawn(f"client-{c}", socks)
        return servers
    finally:
        spawner.close()


def _udp_client(spawner: Spawner) -> socket.socket:
    s = spawner.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))[0]
    s.connect(RESOLVER)
    return s

