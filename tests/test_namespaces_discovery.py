"""Namespace discovery (exporter/netns/discover.py): processes' namespaces and named ones, and
never a file in /run/netns that is not (yet, or any more) a namespace: ``ip netns add`` first creates
an empty file there and then mounts the namespace onto it, so a scrape can meet the empty file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from exporter.netns.discover import discover, own_inode
from tests._require import require_netns
from tests.every_netns import netns_inode
from tests.netns import Netns


def test_a_plain_file_in_run_netns_is_not_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "half-made").touch()  # what `ip netns add` leaves there before its mount
    found = discover("/proc", str(tmp_path)).namespaces
    assert not any(ns.path for ns in found.values())
    assert os.stat(tmp_path / "half-made").st_ino not in found
    assert os.getpid() in found[own_inode()].pids  # we are in our own namespace, by pid


@pytest.mark.root
def test_a_named_namespace_without_processes_is_found_by_name() -> None:
    require_netns()
    with Netns() as ns:
        found = discover("/proc").namespaces
        named = found[netns_inode(ns.name)]
        assert named.path == f"/run/netns/{ns.name}" and named.pids == []
        proc = ns.popen(["sleep", "30"])
        # `ip netns exec` enters the namespace, then execs: until then the pid is still in ours.
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != netns_inode(ns.name) and time.monotonic() < deadline:
            time.sleep(0.01)
        named = discover("/proc").namespaces[netns_inode(ns.name)]
        assert named.pids == [proc.pid]
