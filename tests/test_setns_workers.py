"""The setns worker threads always end in their own namespace, whatever the job inside did.

In process, with one worker thread so that every job runs on the same thread: a job that enters a
namespace and fails midway (after making a socket there), a namespace deleted while a dump runs in
it, and a setns that the kernel refuses; after each, the same thread's next job is checked to be at
home, and a listening socket it makes is seen by ``ss`` in the root namespace, not in the other one.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from exporter.model.table import Table
from exporter.netns.setns import Job, NetnsWorkers, thread_netns_inode
from exporter.sources import netlink
from tests._require import require_netns
from tests.every_netns import listening_in_root
from tests.netns import Netns

pytestmark = pytest.mark.root


@pytest.fixture
def workers() -> Iterator[NetnsWorkers]:
    require_netns()
    w = NetnsWorkers(threads=1)
    yield w
    w.close()


def home_listener(sockets: list[socket.socket]) -> tuple[int, int]:
    """Runs on the worker: (its namespace inode, port of a listener it opened there)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    sockets.append(s)
    return thread_netns_inode(), s.getsockname()[1]


def assert_home(workers: NetnsWorkers, ns: Netns | None = None) -> None:
    held: list[socket.socket] = []
    [(inode, port)] = workers.run([Job(None, lambda: home_listener(held))])
    try:
        assert inode == os.stat("/proc/self/ns/net").st_ino == workers.home_inode
        assert listening_in_root(port)
        if ns is not None:
            assert f":{port}" not in ns.run(["ss", "-Hltn"]).stdout
    finally:
        held[0].close()


def test_a_job_failing_midway_inside_leaves_the_thread_at_home(workers: NetnsWorkers) -> None:
    held: list[socket.socket] = []

    def fail_midway() -> None:
        inode, port = home_listener(held)  # a socket made inside the other namespace ...
        raise RuntimeError(f"injected failure in {inode} after listening on {port}")

    with Netns() as ns:
        fd = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
        try:
            [result] = workers.run([Job(fd, fail_midway)])
        finally:
            os.close(fd)
        assert isinstance(result, RuntimeError)
        inside = os.stat(f"/run/netns/{ns.name}").st_ino
        assert f"in {inside} " in str(result)
        port = held[0].getsockname()[1]
        assert f"127.0.0.1:{port}" in ns.run(["ss", "-Hltn"]).stdout  # ... really was inside
        held[0].close()
        assert_home(workers, ns)


def test_a_namespace_deleted_during_the_dump(workers: NetnsWorkers) -> None:
    name = f"sockexp-del-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)  # only our fd holds it now

    def dump_in_deleted() -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        with s:
            return sum(len(t) for t in netlink.read_tables([Table.TCP4]))

    try:
        [result] = workers.run([Job(fd, dump_in_deleted)])
    finally:
        os.close(fd)
    assert result == 1  # the dump saw exactly the one socket of the orphaned namespace
    assert_home(workers)


def test_a_refused_setns_never_moves_the_thread(workers: NetnsWorkers) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)  # not a namespace: setns fails with EINVAL
    try:
        [result] = workers.run([Job(fd, thread_netns_inode)])
    finally:
        os.close(fd)
    assert isinstance(result, OSError)
    assert_home(workers)
