"""A Kubernetes node in miniature, for counting series: ``with fleet_host(tmp) as host: ...``.

Issue 13 sizes the series budget on "a node with 110 pods, 500 processes and 50 busy ports" (110 is
kubelet's default ``maxPods``). This builds one, real sockets in real states, a fork per process:

* **110 pods**: a named network namespace each (``sockexp-fl<tag>-p000`` ...), with two processes,
  ``app`` and ``envoy``, each in its own container cgroup under a kubelet-shaped pod cgroup
  (tests/kubelet_cgroups.py, v1 cgroupfs ``pids`` hierarchy, never ``memory``) and a
  ``/var/log/pods/fleet_<name>_<uid>`` directory, so the exporter names the pod. ``app`` listens on
  :8080 and holds the accepted ends of 2-4 connections from ``envoy``; every 3rd pod also listens
  on [::]:9090 with one IPv6 connection; every 4th has a connection ``app`` half-closed (``envoy``
  in CLOSE_WAIT, ``app`` in FIN_WAIT2); each has a connected UDP socket (DNS) and a UNIX socketpair
  between the two.
* **the node's own namespace** (``sockexp-fl<tag>-node``; run the exporter inside it, as a
  ``hostNetwork`` DaemonSet runs in the node's): 280 processes. 50 busy ports (10 well-known, 40 in
  the NodePort range; every 5th IPv6), each listened on by its own server process holding the accepted
  ends of 3-8 ESTABLISHED connections whose client ends are spread over 154 client processes, so each
  port is both inbound (the server's side) and outbound (the clients'); every 7th port has a client
  half-closed (server CLOSE_WAIT), every 9th a server half-closed (client CLOSE_WAIT). 76 daemons:
  a bus (UNIX stream listener, one connection per daemon), a journal (UNIX datagram, every other
  daemon and every 4th client sends to it), a resolver (UDP 127.0.0.53:53, every 3rd daemon and 5th
  client), and a SEQPACKET socketpair in every 10th daemon.

So 2 x 110 + 50 + 154 + 76 = 500 socket-owning processes. Every process is ``/usr/bin/sleep
infinity`` under another name (a symlink: the kernel takes ``comm`` from it), forked from a thread
that entered the namespace (tests/_nsthread.py) with ``pass_fds`` of its own sockets; this process then
closes its copies, so each socket has exactly one owner. Nothing moves afterwards: no timers, no
traffic, except :meth:`FleetHost.refresh_time_wait`, which adds server-side TIME_WAIT sockets (they
last 60 s) on each pod's :8080 and on every other busy port, as servers that close first leave.

Teardown (also on any failure midway): cgroups emptied and removed, every process killed and reaped,
every namespace deleted (tests/netns.Netns).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tests._http import raise_fd_limit
from tests._nsthread import in_netns
from tests.every_netns import netns_inode
from tests.fleet_build import POD_PORT, Holder, Spawner, build_node, build_pod, busy_port_numbers, time_wait
from tests.kubelet_cgroups import fake_cgroup, new_ids
from tests.netns import NAME_PREFIX, Netns

PODS, PROCESSES, BUSY_PORTS = 110, 500, 50


@dataclass
class Pod:
    ns: Netns
    inode: int
    uid: str
    name: str
    app: Holder
    envoy: Holder


@dataclass
class FleetHost:
    node: Netns
    node_inode: int
    pods: list[Pod]
    servers: dict[int, Holder]  # busy port -> the server listening on it
    holders: list[Holder]  # every socket-owning process, pods' included
    pod_logs: Path
    build_seconds: float

    def namespaces(self) -> dict[str, Netns]:
        """{netns inode as the exporter labels it: namespace}, the node's first."""
        return {str(self.node_inode): self.node, **{str(p.inode): p.ns for p in self.pods}}

    def refresh_time_wait(self) -> None:
        """Fresh server-side TIME_WAIT sockets (module docstring): call right before measuring."""
        for pod in self.pods:
            in_netns(pod.ns.name, partial(time_wait, pod.app, POD_PORT, 1))

        def node() -> None:
            for i, (port, server) in enumerate(sorted(self.servers.items())):
                if i % 2 == 0:
                    time_wait(server, port, 2)
        in_netns(self.node.name, node)


@contextmanager
def fleet_host(tmp: Path, pods: int = PODS, processes: int = PROCESSES,
               busy_ports: int = BUSY_PORTS) -> Iterator[FleetHost]:
    """Build the node of the module docstring under ``tmp`` (symlinks, pod log dirs); tear it all down."""
    node_processes = processes - 2 * pods
    if node_processes < busy_ports + 4:
        raise ValueError(f"{processes} processes leave too few for the node beside {pods} pods")
    start = time.monotonic()
    raise_fd_limit(8192)  # the node's sockets pass through here before their owners get them
    tag = NAME_PREFIX + "fl" + secrets.token_hex(2)
    bindir, pod_logs = tmp / "bin", tmp / "pods"
    bindir.mkdir(parents=True, exist_ok=True)
    pod_logs.mkdir(exist_ok=True)
    holders: list[Holder] = []
    spawner = Spawner(bindir, holders)
    with ExitStack() as stack:
        node = stack.enter_context(Netns(f"{tag}-node"))
        pod_ns = [stack.enter_context(Netns(f"{tag}-p{i:03d}")) for i in range(pods)]
        stack.callback(_stop, holders)  # registered before the first process exists
        servers = in_netns(node.name, lambda: build_node(node_processes, busy_port_numbers(busy_ports), spawner))
        built: list[Pod] = []
        for i, ns in enumerate(pod_ns):
            app, envoy = in_netns(ns.name, partial(build_pod, i, spawner))
            uid, name = new_ids()[0], f"web-{i % 20:02d}-{secrets.token_hex(5)}"
            for holder in (app, envoy):  # one container each, in one pod
                stack.enter_context(fake_cgroup("v1-cgroupfs", uid, new_ids()[1], [holder.pid]))
            (pod_logs / f"fleet_{name}_{uid}").mkdir()
            built.append(Pod(ns, netns_inode(ns.name), uid, name, app, envoy))
        if len(holders) != processes:
            raise AssertionError(f"built {len(holders)} processes, want {processes}")
        yield FleetHost(node, netns_inode(node.name), built, servers, holders, pod_logs, time.monotonic() - start)


def _stop(holders: list[Holder]) -> None:
    for h in holders:
        with suppress(ProcessLookupError):
            h.proc.kill()
    for h in holders:
        h.proc.wait(10)

