"""The exporter's own metrics, served: ``process_*`` about the exporter process, the netlink counters.

The real exporter runs in a namespace with ``--path.procfs`` at a fixture tree, so the ``process_*``
values can only be right if they come from the exporter's own /proc/self, as documented; each is
checked against psutil reading the same process from outside.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests._golden import PROCFS_FIXTURES
from tests._require import require_module
from tests._served import http, running_exporter
from tests.exposition import samples
from tests.netns import Netns

PORT = 9737


def test_process_metrics_describe_the_exporter_not_the_procfs_tree(netns: Netns, tmp_path: Path) -> None:
    require_module("psutil")
    import psutil

    flags = ("--source", "netlink", "--path.procfs", str(PROCFS_FIXTURES / "basic"))
    with running_exporter(netns, PORT, tmp_path / "log", *flags) as proc:
        (status, body), = http(netns, PORT)
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        me = psutil.Process(proc.pid)
        rss, started = me.memory_info().rss, me.create_time()
    assert status == 200
    got = {name: values[0][1] for name, values in samples(body).items() if name.startswith("process_")}
    assert abs(got["process_start_time_seconds"] - started) < 1.5
    assert abs(got["process_open_fds"] - fds) <= 3  # the scrape's own connection comes and goes
    assert 0.5 * rss < got["process_resident_memory_bytes"] < 2 * rss
    assert got["process_max_fds"] >= got["process_open_fds"] > 0 and got["process_cpu_seconds_total"] > 0


def test_netlink_counters_are_exported_from_zero_for_every_dumped_table(netns: Netns, tmp_path: Path) -> None:
    with running_exporter(netns, PORT, tmp_path / "log", "--source", "netlink"):
        (_, body), = http(netns, PORT)
    got = samples(body)
    for name in ("socket_netlink_dump_retries_total", "socket_netlink_dump_interrupted_total"):
        assert {labels["table"] for labels, _ in got[name]} == {"tcp", "tcp6", "udp", "udp6", "unix"}
        assert all(value >= 0 for _, value in got[name])
    assert [name for name in got if name.endswith("_created")] == []
