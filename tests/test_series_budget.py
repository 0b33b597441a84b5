"""The series budget on a real host: many owners in a namespace, the real exporter scraped over HTTP.

Each of ``OWNERS`` ``sleep`` processes holds its own sockets (a listener and 0-3 connected pairs),
so per-process series outgrow a small ``--limits.max-series``. The exposition must stay within it,
per (family, type, status) the per-process series must still sum to ``socket_connections``, the
owners kept must be the biggest ones (sizes known from how the population was built, not from the
exporter), and without a budget the same host shows every owner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests._require import require_netns
from tests._served import http, running_exporter
from tests.every_netns import exporter_all
from tests.exposition import connection_counts, owner_counts, run_once, samples
from tests.netns import Netns
from tests.series_count import count_samples

OWNERS = 300
LIMIT = 500
PORT = 9731

#: Runs in the namespace: owner i holds a listener and i % 4 connected pairs (both ends), then the
#: parent closes its copies, so owner i's sockets are exactly 1 + 2 * (i % 4). Prints {pid: sockets}.
_HOLDERS = r"""
import json, socket, subprocess, sys
sizes = {}
for i in range(int(sys.argv[1])):
    lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(8)
    socks = [lst]
    for _ in range(i % 4):
        c = socket.create_connection(lst.getsockname()); a, _ = lst.accept(); socks += [c, a]
    p = subprocess.Popen(["sleep", "infinity"], pass_fds=[s.fileno() for s in socks])
    for s in socks:
        s.close()
    sizes[p.pid] = len(socks)
print(json.dumps(sizes), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holders(netns: Netns) -> Iterator[dict[str, int]]:
    proc = netns.popen([sys.executable, "-c", _HOLDERS, str(OWNERS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       text=True)
    assert proc.stdout is not None
    sizes = {str(pid): n for pid, n in json.loads(proc.stdout.readline()).items()}
    assert len(sizes) == OWNERS
    yield sizes
    proc.kill()
    proc.wait()


def _count(text: str) -> int:
    return sum(count_samples(text).values())


def test_small_budget_holds_and_sums_stay_exact(netns: Netns, holders: dict[str, int], tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("per_process: {max_owners: 10000}\n")  # the budget, not the owner cap, must fold here

    unbudgeted = run_once(netns, "--config", str(config), "--limits.max-series", "0")
    assert {pid for *_, pid in owner_counts(unbudgeted)} >= set(holders)  # every owner, without a budget
    assert _count(unbudgeted) > LIMIT

    with running_exporter(netns, PORT, tmp_path / "exporter.log", "--config", str(config),
                          "--limits.max-series", str(LIMIT)):
        texts = [body for status, body in http(netns, PORT, count=2) if status == 200]
    assert len(texts) == 2
    for text in texts:
        got = samples(text)
        assert _count(text) <= LIMIT
        assert got["socket_exporter_series"][0][1] == _count(text)
        assert got["socket_exporter_series_limit"][0][1] == LIMIT
        sums: Counter[tuple[str, str, str]] = Counter()
        for (family, sock_type, status, _), n in owner_counts(text).items():
            sums[(family, sock_type, status)] += n
        assert sums == connection_counts(text)  # folded owners still add up

        pids = {pid for *_, pid in owner_counts(text)}
        assert "other" in pids
        kept = [holders[p] for p in pids if p in holders]
        folded = [n for p, n in holders.items() if p not in pids]
        assert kept and folded and min(kept) >= max(folded)  # the smallest owners went first
    folds = {labels["family"]: v for labels, v in samples(texts[-1])["socket_exporter_series_folds_total"]}
    assert folds["socket_process_connections"] >= 2 * len(folded)  # counted over both expositions


#: Runs in a namespace: a listener with ``n`` connected pairs, held until stdin closes.
_SMALL_POD = r"""
import socket, sys
lst = socket.socket(); lst.bind(("127.0.0.1", 8080)); lst.listen(16)
pairs = [(socket.create_connection(("127.0.0.1", 8080)), lst.accept()[0]) for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.read()
"""
PODS = 40


def test_all_namespaces_fold_and_still_sum(tmp_path: Path) -> None:
    """``network_namespaces: all`` with every view on: namespaces fold into netns="other" (after the
    ports, listeners and owners), and the namespaces still sum to the node's totals."""
    require_netns()
    config = tmp_path / "c.yml"
    config.write_text("listeners: {enabled: true}\nports: {enabled: true}\nephemeral: {enabled: true}\n")
    with ExitStack() as stack:
        for i in range(PODS):
            ns = stack.enter_context(Netns())
            proc = ns.popen([sys.executable, "-c", _SMALL_POD, str(1 + i % 3)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with exporter_all(tmp_path, "--config", str(config), "--limits.max-series", "0") as (client, _):
            natural = _count(client.get("/metrics")[1])
        assert natural > LIMIT + 200, natural  # the budget must bite, beyond the ports and owners
        with exporter_all(tmp_path, "--config", str(config), "--limits.max-series", str(LIMIT)) as (client, _):
            text = client.get("/metrics")[1]
    got = samples(text)
    assert _count(text) <= LIMIT == got["socket_exporter_series_limit"][0][1]
    per_ns: Counter[tuple[str, str, str]] = Counter()
    for labels, n in got["socket_namespace_connections"]:
        per_ns[(labels["family"], labels["type"], labels["status"])] += int(n)
    assert +per_ns == connection_counts(text)
    other = [labels for labels, _ in got["socket_namespace_connections"] if labels["netns"] == "other"]
    assert other and all(labels["pod_uid"] == labels["container_id"] == "" for labels in other)
    folds = {labels["family"]: v for labels, v in got["socket_exporter_series_folds_total"]}
    assert folds["socket_namespace_connections"] > 0
