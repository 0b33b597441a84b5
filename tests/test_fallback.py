"""``auto`` falls back to /proc when the kernel refuses netlink; ``netlink`` alone fails visibly.

The refusal is real: tests/no_netlink.py installs a seccomp filter that makes socket(AF_NETLINK)
fail with EAFNOSUPPORT, as a container or systemd sandbox without AF_NETLINK does.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from tests import reference
from tests._require import require
from tests.exposition import connection_counts, samples
from tests.population import Population
from tests.test_end_to_end import stable

NO_NETLINK = [sys.executable, str(Path(__file__).with_name("no_netlink.py")), sys.executable, "-m", "exporter"]


def require_seccomp_arch() -> None:
    require(platform.machine() in ("x86_64", "aarch64"), f"no seccomp filter for {platform.machine()}")


def test_auto_falls_back_to_proc_with_exact_counts(population: Population) -> None:
    require_seccomp_arch()
    ns = population.ns

    def run() -> str:
        proc = ns.run([*NO_NETLINK, "--once", "--source", "auto"], check=False)
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if "netlink unavailable" in line]
        assert len(warnings) == 1 and "tcp, tcp6, udp, udp6, unix" in warnings[0], proc.stderr
        return proc.stdout

    ss, text = stable(lambda: reference.ss_counts(ns), run)
    assert connection_counts(text) == ss  # the /proc source: no bound-only sockets
    got = samples(text)
    assert got["socket_netlink_fallback"] == [({}, 1.0)]
    assert {(labels["table"], labels["source"]) for labels, _ in got["socket_scrape_source"]} == {
        (table, "proc") for table in ("tcp", "tcp6", "udp", "udp6", "unix")}


def test_netlink_only_fails_visibly_instead_of_reporting_zero(population: Population) -> None:
    require_seccomp_arch()
    proc = population.ns.run([*NO_NETLINK, "--once", "--source", "netlink"], check=False)
    assert proc.returncode == 1
    assert "netlink source unavailable" in proc.stderr
    got = samples(proc.stdout)
    assert "socket_connections" not in got
    assert ({"collector": "netlink"}, 0.0) in got["socket_scrape_collector_success"]


def test_server_logs_the_fallback_once_across_scrapes(population: Population) -> None:
    require_seccomp_arch()
    ns, port = population.ns, 9732
    server = ns.popen([*NO_NETLINK, "--web.listen-address", f"127.0.0.1:{port}"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ns.wait_listening(port, server)
        for _ in range(3):
            body = ns.run(["curl", "-sf", f"http://127.0.0.1:{port}/metrics"]).stdout
            assert "socket_netlink_fallback 1.0" in body
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert stderr.count("netlink unavailable") == 1, stderr
