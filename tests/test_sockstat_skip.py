"""Skipping tables that sockstat proves empty never loses a socket (exporter/netns/sockstat.py).

Two namespaces read by the real exporter in ``all`` mode: one holding only IPv4 TCP sockets (its
TCP6, UDP and UDP6 tables are skipped, and it still equals ``ss``), and one that also holds a single
bound-only IPv6 TCP socket, which no ``inuse`` counter shows: it must still be counted (CLOSE), as a
raw sock_diag dump inside the namespace (tests/reference.py) sees it.
"""

from __future__ import annotations

import doctest
import sys
from collections import Counter
from pathlib import Path

import pytest

from exporter.netns import sockstat
from tests import reference
from tests._require import require_netns
from tests.every_netns import exporter_all, gauge, netns_inode, per_namespace
from tests.netns import Netns
from tests.test_end_to_end import stable

HOLDER = """
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 7100)); l.listen()
held = [l, socket.create_connection(("127.0.0.1", 7100)), l.accept()[0]]
if sys.argv[1] == "bound6":
    b = socket.socket(socket.AF_INET6); b.bind(("::1", 7200)); held.append(b)
print("ready", flush=True); sys.stdin.read()
"""


def test_doctests() -> None:
    failed, tried = doctest.testmod(sockstat)
    assert tried >= 3 and failed == 0


def test_parse_real_lines() -> None:
    text = ("sockets: used 19\nTCP: inuse 1 orphan 0 tw 7 alloc 200326 mem 2068\nUDP: inuse 0 mem 0\n"
            "UDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\nTCP6: inuse 0\nUDP6: inuse 0\n")
    stat = sockstat.parse(text)
    assert stat["sockets.used"] == 19 and stat["TCP.tw"] == 7 and stat["TCP6.inuse"] == 0
    # TIME_WAIT sockets exist (of either family): no TCP table may be skipped
    assert {t.name for t in sockstat.empty_tables(stat, unix_sockets=18)} == {"UDP4", "UDP6"}


@pytest.mark.root
def test_skipping_loses_no_socket(tmp_path: Path) -> None:
    require_netns()
    with Netns() as plain, Netns() as bound:
        for ns, mode in ((plain, "plain"), (bound, "bound6")):
            proc = ns.popen([sys.executable, "-c", HOLDER, mode], stdin=-1, stdout=-1, text=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with exporter_all(tmp_path) as (client, _):
            ss, text = stable(lambda: reference.ss_counts(plain), lambda: client.get()[1])
            assert per_namespace(text)[str(netns_inode(plain.name))] == ss
            assert ss == Counter({("AF_INET", "SOCK_STREAM", "ESTABLISHED"): 2,
                                  ("AF_INET", "SOCK_STREAM", "LISTEN"): 1})
            assert gauge(text, "socket_namespace_tables_skipped") >= 3  # plain: TCP6, UDP4, UDP6

            tcp, text = stable(lambda: reference.netlink_tcp_counts(bound), lambda: client.get()[1])
            assert tcp[("AF_INET6", "SOCK_STREAM", "CLOSE")] == 1  # the bound-only socket, seen by a raw dump
            got = per_namespace(text)[str(netns_inode(bound.name))]
            assert Counter({k: n for k, n in got.items() if k[1] == "SOCK_STREAM" and k[0] != "AF_UNIX"}) == tcp
